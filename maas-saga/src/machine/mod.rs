//! The pure core: what to do next, given what has happened.
//!
//! A machine holds the status of every step or branch and the transaction's phase. It never
//! calls anyone: the executor asks it for [`Command`]s, runs them against participants, and
//! feeds back [`Event`]s. This keeps every decision deterministic and testable — the
//! transition tables are tested exhaustively, and a property test drives machines with
//! random outcomes and crashes against a model.

//!
//! | file | holds |
//! |---|---|
//! | `command.rs` | [`Command`], [`Event`], [`InvalidTransition`] |
//! | `status.rs` | [`Status`] |
//! | `saga.rs` | [`SagaMachine`] and its transition table |
//! | `tcc.rs` | [`TccMachine`] and its transition table |
//!
//! Dependencies point one way: both machines use `command.rs` and `status.rs`; this file
//! only names the machines.

mod command;
mod saga;
mod status;
mod tcc;

pub use command::{Command, Event, InvalidTransition};
pub use saga::{SagaMachine, StepState};
pub use status::Status;
pub use tcc::{BranchState, TccMachine, TccPhase};

/// A saga machine or a TCC machine.
#[derive(Debug, Clone)]
pub(crate) enum Machine {
    Saga(SagaMachine),
    Tcc(TccMachine),
}

impl Machine {
    pub(crate) fn start(&mut self) -> Vec<Command> {
        match self {
            Machine::Saga(m) => m.start(),
            Machine::Tcc(m) => m.start(),
        }
    }

    pub(crate) fn apply(&mut self, event: Event) -> Result<Vec<Command>, InvalidTransition> {
        match self {
            Machine::Saga(m) => m.apply(event),
            Machine::Tcc(m) => m.apply(event),
        }
    }

    pub(crate) fn status(&self) -> Status {
        match self {
            Machine::Saga(m) => m.status(),
            Machine::Tcc(m) => m.status(),
        }
    }
}
