//! [`Cluster`]: the one value that says where records go and come from.

use crate::memory::MemoryBroker;

/// Where producers, consumers and [`Redrive`](crate::Redrive) talk to: Kafka brokers, or an
/// in-memory broker (unit tests, demos). Every builder takes one.
///
/// A list of `host:port` addresses converts into a Kafka cluster, a [`MemoryBroker`] (or a
/// reference to one) into the in-memory cluster:
///
/// ```
/// use maas_queue::{Cluster, MemoryBroker, Producer};
///
/// let kafka = Producer::builder(["kafka-0:9092", "kafka-1:9092"]).build()?;
/// let broker = MemoryBroker::new();
/// let in_memory = Producer::builder(&broker).build()?;
/// assert!(Cluster::from(&broker).memory().is_some());
/// # Ok::<(), maas_queue::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Cluster(Backend);

#[derive(Debug, Clone)]
enum Backend {
    Kafka(Vec<String>),
    Memory(MemoryBroker),
}

impl Cluster {
    /// A Kafka cluster reached through `bootstrap` (`host:port`; more are discovered).
    pub fn kafka<I, S>(bootstrap: I) -> Cluster
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cluster(Backend::Kafka(
            bootstrap.into_iter().map(Into::into).collect(),
        ))
    }

    /// The in-memory broker `broker` (clones share one broker).
    pub fn in_memory(broker: &MemoryBroker) -> Cluster {
        Cluster(Backend::Memory(broker.clone()))
    }

    /// The bootstrap addresses of a Kafka cluster; `None` for the in-memory broker.
    pub fn bootstrap(&self) -> Option<&[String]> {
        match &self.0 {
            Backend::Kafka(b) => Some(b),
            Backend::Memory(_) => None,
        }
    }

    /// The in-memory broker; `None` for Kafka.
    pub fn memory(&self) -> Option<&MemoryBroker> {
        match &self.0 {
            Backend::Kafka(_) => None,
            Backend::Memory(m) => Some(m),
        }
    }

    /// Checks what can be checked without I/O: a Kafka cluster needs valid addresses.
    pub(crate) fn check(&self) -> Result<(), crate::ConfigError> {
        match &self.0 {
            Backend::Kafka(b) => crate::error::check_brokers(b),
            Backend::Memory(_) => Ok(()),
        }
    }
}

impl<S: Into<String>, const N: usize> From<[S; N]> for Cluster {
    fn from(bootstrap: [S; N]) -> Self {
        Cluster::kafka(bootstrap)
    }
}

impl<S: Into<String>> From<Vec<S>> for Cluster {
    fn from(bootstrap: Vec<S>) -> Self {
        Cluster::kafka(bootstrap)
    }
}

impl From<&MemoryBroker> for Cluster {
    fn from(broker: &MemoryBroker) -> Self {
        Cluster::in_memory(broker)
    }
}

impl From<MemoryBroker> for Cluster {
    fn from(broker: MemoryBroker) -> Self {
        Cluster(Backend::Memory(broker))
    }
}
