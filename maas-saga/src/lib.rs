//! Distributed transactions for services that span several databases: Saga and TCC.
//!
//! `maas-saga` runs a business operation made of steps owned by different services so that
//! it ends either fully applied or fully compensated, whatever crashes in between:
//!
//! * a [`Saga`] runs local transactions T1 → T2 → T3 (or a DAG of them) and, when one
//!   fails, the compensations of those that may have applied, in reverse order (C2 → C1);
//! * a [`Tcc`] transaction reserves resources in every branch (*try*), then applies them
//!   all (*confirm*) or releases them all (*cancel*); an unconfirmed reservation is
//!   cancelled when its TTL passes.
//!
//! Participants are `tower::Service`s ([`participant`]) — so steps can be wrapped with rate
//! limiters, breakers and timeouts — or HTTP endpoints (`HttpParticipant`, feature `http`).
//! The [`Engine`] writes the transaction's intent durably before the first side effect,
//! drives it, records the decision to roll back before the first compensation, and recovers
//! unfinished transactions after a crash, from any engine sharing the store.
//!
//! # Example: create a model and deduct billing quota
//!
//! ```
//! use maas_saga::{Engine, MemoryStore, Reply, Saga, Status, Step, participant};
//! use maas_saga::store::BranchStatus;
//! use tower::service_fn;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let models = participant(service_fn(|_call| async { Ok::<_, std::io::Error>(Reply::Done) }));
//! // Billing refuses: not enough quota. The saga compensates the model it created.
//! let billing = participant(service_fn(|call: maas_saga::BranchCall| async move {
//!     Ok::<_, std::io::Error>(match call.op {
//!         maas_saga::Operation::Action => Reply::Rejected("quota exhausted".into()),
//!         _ => Reply::Done,
//!     })
//! }));
//! let engine = Engine::builder(MemoryStore::new())
//!     .participant("models", models)
//!     .participant("billing", billing)
//!     .start()
//!     .await?;
//! let saga = Saga::builder("create-model")
//!     .step(Step::new("create-model", "models").payload(serde_json::json!({ "model": "m-1" })))
//!     .step(Step::new("deduct-quota", "billing").payload(serde_json::json!({ "tenant": "acme" })))
//!     .build()?;
//! let outcome = engine.run(saga).await?;
//! assert_eq!(outcome.status, Status::Compensated);
//! assert_eq!(outcome.branches[0].state, BranchStatus::Compensated);
//! // Billing's step is compensated too (a no-op for a rejected action behind a barrier).
//! assert_eq!(outcome.branches[1].state, BranchStatus::Compensated);
//! # Ok(()) }
//! ```
//!
//! # What participants must do
//!
//! The engine retries, re-drives after crashes and may race a late action with its
//! compensation, so a participant must be idempotent, accept a compensation for an action
//! it never saw (and then refuse that action), and answer a business failure with a
//! rejection (HTTP 409). The [`barrier`] module does all of this inside the participant's
//! own database transaction. `docs/saga.md` covers outcomes, recovery and guarantees.
//!
//! # Feature flags
//!
//! * `sqlite` — `SqliteStore` and the SQLite barrier (bundled SQLite).
//! * `postgres` — `PgStore` and the PostgreSQL barrier, on a [`deadpool_postgres`] pool
//!   (re-exported, so a pool you build matches the version these take).
//! * `http` — `HttpParticipant`: steps as JSON `POST`s.
//! * `prometheus` — [`metrics::SagaMetrics`].

pub mod barrier;
mod definition;
mod duration;
mod engine;
#[cfg(feature = "http")]
mod http_participant;
mod id;
pub mod machine;
#[cfg(feature = "prometheus")]
pub mod metrics;
mod observer;
mod operation;
mod participant;
mod retry;
pub mod store;
pub mod xa;

pub use definition::{
    DefinitionError, Saga, SagaBuilder, Step, Tcc, TccBuilder, Transaction, TransactionKind, Xa,
    XaBuilder,
};
pub use duration::MAX_DURATION;
pub use engine::{ConfigError, Engine, EngineBuilder, EngineError, Outcome, SagaView};
#[cfg(feature = "http")]
pub use http_participant::HttpParticipant;
pub use id::SagaId;
pub use machine::Status;
pub use operation::{Operation, UnknownOperation};
pub use participant::{BoxError, BranchCall, Participant, Reply, participant};
pub use retry::RetryPolicy;
pub use store::{MemoryStore, SagaStore};

#[cfg(feature = "postgres")]
pub use deadpool_postgres;

/// The README's example, compiled as a doctest.
#[cfg(all(doctest, feature = "postgres", feature = "http"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
