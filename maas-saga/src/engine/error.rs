//! What can go wrong: [`EngineError`] at run time, [`ConfigError`] at start.

use crate::SagaId;
use crate::store::StoreError;

/// Why the engine could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A step names a participant that is not registered.
    #[error("step `{step}` names participant `{participant}`, which is not registered")]
    UnknownParticipant {
        /// The step.
        step: String,
        /// The participant name.
        participant: String,
    },
    /// A branch of an XA transaction names a participant that is not an XA branch
    /// (registered with `EngineBuilder::xa_branch`).
    #[error(
        "XA branch `{step}` names participant `{participant}`, which is not an XA branch database"
    )]
    NotXaBranch {
        /// The branch.
        step: String,
        /// The participant name.
        participant: String,
    },
    /// The global transaction id of an XA branch would be longer than PostgreSQL's 199
    /// bytes (engine name, transaction id and branch name together).
    #[error(
        "the global transaction id of XA branch `{step}` would be longer than 199 bytes; use a shorter engine name, transaction id or branch name"
    )]
    XaGidTooLong {
        /// The branch.
        step: String,
    },
    /// An XA branch database cannot take part (prepared transactions disabled, the
    /// database unreachable at start); nothing was started.
    #[cfg(feature = "postgres")]
    #[error("XA branch `{branch}`: {error}")]
    Xa {
        /// The branch.
        branch: String,
        /// What is wrong.
        #[source]
        error: std::sync::Arc<crate::xa::XaError>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transaction could not be finished by this engine (it lost its lease, or was
    /// left for recovery after an internal error); it will be recovered.
    #[error("transaction {0} was handed over to recovery before it finished")]
    HandedOver(SagaId),
    /// The engine is shutting down.
    #[error("the saga engine is shut down")]
    ShutDown,
    /// A setting of the [`EngineBuilder`](crate::EngineBuilder) cannot work; nothing was
    /// started and the store was not touched.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// An [`EngineBuilder`](crate::EngineBuilder) setting that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration that paces a loop is zero: the loop would spin on the store.
    #[error("the engine's {setting} must be longer than zero")]
    Zero {
        /// `lease`, `recovery_interval` or `gc_interval`.
        setting: &'static str,
    },
    /// `recovery_batch(0)`: recovery could never claim anything.
    #[error("the engine's recovery batch must hold at least one transaction")]
    EmptyRecoveryBatch,
}
