//! The saga's transition table.
//!
//! | step state | event | next state | notes |
//! |---|---|---|---|
//! | `Pending` | its dependencies are `Done` (forward) | `Running` | command: action |
//! | `Pending` | the saga goes backward | `Skipped` | never started (`Uncertain` when re-driven after a crash: an earlier run may have started it) |
//! | `Running` | `Succeeded` | `Done` | |
//! | `Running` | `Failed` | `Failed` | rejected (business failure); saga goes backward |
//! | `Running` | `Exhausted` | `Uncertain` | the action may have applied; saga goes backward |
//! | `Done`, `Uncertain`, `Failed` | backward, and every step depending on it is settled | `Compensating` | command: compensate |
//! | `Compensating` | `Succeeded` | `Compensated` | |
//! | `Skipped`, `Compensated` | — | — | final for the step |
//!
//! The saga is `Committed` when every step is `Done`, and `Compensated` when, going
//! backward, every step is `Compensated` or `Skipped`. A compensation never starts while its
//! own action is running, nor before the steps that depend on it are undone.
//!
//! A *rejected* step is compensated too: the rejection proves that one attempt did not apply,
//! not that no other attempt did (a retry, or an earlier run's attempt still on its way).
//! Behind a barrier the compensation is a no-op when nothing applied — and it blocks any
//! such attempt that arrives later.

use serde::{Deserialize, Serialize};

use super::command::{Command, Event, InvalidTransition};
use super::status::Status;
use crate::Operation;

/// The state of one saga step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Waiting for its dependencies.
    Pending,
    /// Its action is running.
    Running,
    /// Its action applied.
    Done,
    /// Its action failed and did not apply.
    Failed,
    /// Its action's outcome stayed unknown: it may have applied.
    Uncertain,
    /// Its compensation is running.
    Compensating,
    /// Its compensation applied.
    Compensated,
    /// Never started: the saga went backward first.
    Skipped,
}

impl StepState {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Uncertain => "uncertain",
            StepState::Compensating => "compensating",
            StepState::Compensated => "compensated",
            StepState::Skipped => "skipped",
        }
    }

    /// Settled for going backward: nothing of it remains to undo.
    fn is_undone(self) -> bool {
        matches!(self, StepState::Compensated | StepState::Skipped)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Forward,
    Backward,
}

/// A saga's steps and direction.
#[derive(Debug, Clone)]
pub struct SagaMachine {
    steps: Vec<StepState>,
    deps: Vec<Vec<usize>>,
    phase: Phase,
    /// Re-driven after a crash: a step not started in this run may have applied in an
    /// earlier one, so going backward compensates it instead of skipping it.
    recovered: bool,
}

impl SagaMachine {
    /// A saga about to start, with each step's dependencies.
    pub fn new(deps: Vec<Vec<usize>>) -> Self {
        SagaMachine {
            steps: vec![StepState::Pending; deps.len()],
            deps,
            phase: Phase::Forward,
            recovered: false,
        }
    }

    /// A saga re-driven from its intent after a crash, before any decision was recorded.
    /// It runs forward like a new one (repeated actions are no-ops for participants behind a
    /// barrier), but if it goes backward, steps it did not start are compensated too: an
    /// earlier run may have applied them.
    pub fn recovered(deps: Vec<Vec<usize>>) -> Self {
        SagaMachine {
            recovered: true,
            ..Self::new(deps)
        }
    }

    /// A saga recovered after the decision to compensate was recorded: every step may have
    /// applied, so every step is compensated (a barrier turns the ones that never ran into
    /// null compensations).
    pub fn compensating(deps: Vec<Vec<usize>>) -> Self {
        SagaMachine {
            steps: vec![StepState::Uncertain; deps.len()],
            deps,
            phase: Phase::Backward,
            recovered: true,
        }
    }

    /// A machine in an arbitrary configuration, for exhaustive tests of the table.
    #[doc(hidden)]
    pub fn from_states(steps: Vec<StepState>, deps: Vec<Vec<usize>>, backward: bool) -> Self {
        SagaMachine {
            steps,
            deps,
            phase: if backward {
                Phase::Backward
            } else {
                Phase::Forward
            },
            recovered: false,
        }
    }

    /// Whether the saga is going backward (compensating).
    pub fn is_backward(&self) -> bool {
        self.phase == Phase::Backward
    }

    /// The steps' states.
    pub fn steps(&self) -> &[StepState] {
        &self.steps
    }

    /// The saga's status.
    pub fn status(&self) -> Status {
        match self.phase {
            Phase::Forward if self.steps.iter().all(|s| *s == StepState::Done) => Status::Committed,
            Phase::Forward => Status::Running,
            Phase::Backward if self.steps.iter().all(|s| s.is_undone()) => Status::Compensated,
            Phase::Backward => Status::Compensating,
        }
    }

    /// The first commands.
    pub fn start(&mut self) -> Vec<Command> {
        self.next()
    }

    /// Applies `event` and returns the commands it unlocks.
    pub fn apply(&mut self, event: Event) -> Result<Vec<Command>, InvalidTransition> {
        let invalid = |state: StepState| InvalidTransition {
            event,
            state: state.as_str().to_owned(),
        };
        match event {
            Event::Abort => {
                // Only a saga still going forward can be turned around.
                if self.status() == Status::Running {
                    self.phase = Phase::Backward;
                }
            }
            Event::Succeeded(i) | Event::Failed(i) | Event::Exhausted(i) => {
                let state = *self
                    .steps
                    .get(i)
                    .ok_or_else(|| invalid(StepState::Pending))?;
                self.steps[i] = match (state, event) {
                    (StepState::Running, Event::Succeeded(_)) => StepState::Done,
                    (StepState::Running, Event::Failed(_)) => StepState::Failed,
                    (StepState::Running, Event::Exhausted(_)) => StepState::Uncertain,
                    (StepState::Compensating, Event::Succeeded(_)) => StepState::Compensated,
                    _ => return Err(invalid(state)),
                };
                if matches!(self.steps[i], StepState::Failed | StepState::Uncertain) {
                    self.phase = Phase::Backward;
                }
            }
        }
        Ok(self.next())
    }

    fn next(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        match self.phase {
            Phase::Forward => {
                for i in 0..self.steps.len() {
                    let ready = self.steps[i] == StepState::Pending
                        && self.deps[i]
                            .iter()
                            .all(|&d| self.steps[d] == StepState::Done);
                    if ready {
                        self.steps[i] = StepState::Running;
                        commands.push(Command {
                            op: Operation::Action,
                            branch: i,
                        });
                    }
                }
            }
            Phase::Backward => {
                let not_started = if self.recovered {
                    StepState::Uncertain
                } else {
                    StepState::Skipped
                };
                for s in self.steps.iter_mut().filter(|s| **s == StepState::Pending) {
                    *s = not_started;
                }
                for i in (0..self.steps.len()).rev() {
                    let needs_undo = matches!(
                        self.steps[i],
                        StepState::Done | StepState::Uncertain | StepState::Failed
                    );
                    let dependents_undone = (0..self.steps.len())
                        .filter(|&j| self.deps[j].contains(&i))
                        .all(|j| self.steps[j].is_undone());
                    if needs_undo && dependents_undone {
                        self.steps[i] = StepState::Compensating;
                        commands.push(Command {
                            op: Operation::Compensate,
                            branch: i,
                        });
                    }
                }
            }
        }
        commands
    }
}
