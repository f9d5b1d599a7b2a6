//! The engine: submits transactions, drives them, recovers the ones a crash left behind.
//!
//! | file | holds | uses |
//! |---|---|---|
//! | `handle.rs` | [`Engine`], the public handle | supervisor |
//! | `builder.rs` | [`EngineBuilder`]: participants, settings, `start` | settings, runtime, supervisor |
//! | `settings.rs` | the validated settings | |
//! | `supervisor.rs` | the live table; recovery, renewal and GC loops | driver, runtime |
//! | `driver.rs` | one transaction: machine commands → participant calls | runtime |
//! | `runtime.rs` | what a driver may use: store writes, participants, lease, observer | |
//! | `xa_scan.rs` | the XA part of a recovery pass: prepared transactions left behind | runtime |
//! | `view.rs`, `error.rs`, `trace.rs` | what callers see, errors, trace context | |
//!
//! Dependencies point down the table: a driver never reaches into the supervisor.

mod builder;
mod driver;
mod error;
mod handle;
mod runtime;
mod settings;
mod supervisor;
mod trace;
mod view;
#[cfg(feature = "postgres")]
mod xa_scan;

pub use builder::EngineBuilder;
pub use error::{ConfigError, EngineError};
pub use handle::Engine;
pub use view::{Outcome, SagaView};
