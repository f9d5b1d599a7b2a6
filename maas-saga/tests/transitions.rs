//! Exhaustive transition tables of the saga and TCC machines: every state × phase × event
//! of one branch, against the tables written out here, plus the ordering rules of several
//! branches.

use maas_saga::machine::{
    BranchState, Command, Event, SagaMachine, StepState, TccMachine, TccPhase,
};
use maas_saga::{Operation, Status};

const STEP_STATES: [StepState; 8] = [
    StepState::Pending,
    StepState::Running,
    StepState::Done,
    StepState::Failed,
    StepState::Uncertain,
    StepState::Compensating,
    StepState::Compensated,
    StepState::Skipped,
];

const EVENTS: [Event; 4] = [
    Event::Succeeded(0),
    Event::Failed(0),
    Event::Exhausted(0),
    Event::Abort,
];

/// The saga table for one step: (state, backward, event) → (state, backward, command) or
/// invalid. Written out by hand from the documented table.
fn saga_expected(
    state: StepState,
    backward: bool,
    event: Event,
) -> Option<(StepState, bool, Option<Operation>)> {
    use StepState::*;
    let undo = |s: StepState| match s {
        Done | Uncertain | Failed => (Compensating, true, Some(Operation::Compensate)),
        Pending => (Skipped, true, None),
        other => (other, true, None),
    };
    match (state, event) {
        (Running, Event::Succeeded(_)) if !backward => Some((Done, false, None)),
        (Running, Event::Succeeded(_)) => Some(undo(Done)),
        (Running, Event::Failed(_)) => Some(undo(Failed)),
        (Running, Event::Exhausted(_)) => Some(undo(Uncertain)),
        (Compensating, Event::Succeeded(_)) => Some((Compensated, backward, None)),
        (_, Event::Abort) => {
            // Abort turns around a saga still running forward; anything else is unchanged.
            let running_forward = !backward && state != Done;
            if running_forward || backward {
                Some(match state {
                    Pending | Done | Uncertain | Failed => undo(state),
                    other => (other, true, None),
                })
            } else {
                Some((state, false, None))
            }
        }
        _ => None,
    }
}

#[test]
fn saga_table_is_exhaustively_as_documented() {
    let mut checked = 0;
    for state in STEP_STATES {
        for backward in [false, true] {
            for event in EVENTS {
                // A forward saga with its only step Pending would have started it: skip the
                // unreachable Pending-forward cases except for Abort, which is meaningful.
                let mut m = SagaMachine::from_states(vec![state], vec![vec![]], backward);
                let got = m.apply(event).ok().map(|commands| {
                    assert!(commands.len() <= 1);
                    (
                        m.steps()[0],
                        m.is_backward(),
                        commands.first().map(|c: &Command| c.op),
                    )
                });
                let want = match (state, backward, event) {
                    // Forward with a Pending step: `next` starts it.
                    (StepState::Pending, false, Event::Abort) => {
                        Some((StepState::Skipped, true, None))
                    }
                    _ => saga_expected(state, backward, event),
                };
                assert_eq!(
                    got, want,
                    "state {state:?}, backward {backward}, event {event:?}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 8 * 2 * 4);
}

#[test]
fn saga_status_follows_the_steps() {
    let m = |s: Vec<StepState>, back| {
        SagaMachine::from_states(s.clone(), vec![vec![]; s.len()], back).status()
    };
    assert_eq!(
        m(vec![StepState::Done, StepState::Done], false),
        Status::Committed
    );
    assert_eq!(
        m(vec![StepState::Done, StepState::Running], false),
        Status::Running
    );
    assert_eq!(
        m(vec![StepState::Compensated, StepState::Failed], true),
        Status::Compensating,
        "a rejected step is compensated too"
    );
    assert_eq!(
        m(vec![StepState::Compensated, StepState::Skipped], true),
        Status::Compensated
    );
    assert_eq!(
        m(vec![StepState::Compensating, StepState::Failed], true),
        Status::Compensating
    );
}

#[test]
fn saga_runs_in_order_and_compensates_in_reverse() {
    // a → b → c, c is rejected.
    let mut m = SagaMachine::new(vec![vec![], vec![0], vec![1]]);
    assert_eq!(
        m.start(),
        vec![Command {
            op: Operation::Action,
            branch: 0
        }]
    );
    assert_eq!(
        m.apply(Event::Succeeded(0)).unwrap(),
        vec![Command {
            op: Operation::Action,
            branch: 1
        }]
    );
    assert_eq!(
        m.apply(Event::Succeeded(1)).unwrap(),
        vec![Command {
            op: Operation::Action,
            branch: 2
        }]
    );
    // c first (a no-op behind a barrier, which also blocks any late attempt of c), then b, a.
    assert_eq!(
        m.apply(Event::Failed(2)).unwrap(),
        vec![Command {
            op: Operation::Compensate,
            branch: 2
        }]
    );
    assert_eq!(
        m.apply(Event::Succeeded(2)).unwrap(),
        vec![Command {
            op: Operation::Compensate,
            branch: 1
        }]
    );
    assert_eq!(
        m.apply(Event::Succeeded(1)).unwrap(),
        vec![Command {
            op: Operation::Compensate,
            branch: 0
        }]
    );
    assert_eq!(m.apply(Event::Succeeded(0)).unwrap(), vec![]);
    assert_eq!(m.status(), Status::Compensated);
}

#[test]
fn saga_dag_waits_for_dependents_and_running_steps() {
    // a and b in parallel, c after both. b is rejected while a is still running.
    let mut m = SagaMachine::new(vec![vec![], vec![], vec![0, 1]]);
    assert_eq!(m.start().len(), 2);
    // b is undone at once (its dependent c never started); a is left alone while it runs.
    assert_eq!(
        m.apply(Event::Failed(1)).unwrap(),
        vec![Command {
            op: Operation::Compensate,
            branch: 1
        }]
    );
    assert_eq!(m.steps()[2], StepState::Skipped);
    // a finishes (it applied): now it is compensated.
    assert_eq!(
        m.apply(Event::Succeeded(0)).unwrap(),
        vec![Command {
            op: Operation::Compensate,
            branch: 0
        }]
    );
    m.apply(Event::Succeeded(0)).unwrap();
    m.apply(Event::Succeeded(1)).unwrap();
    assert_eq!(m.status(), Status::Compensated);
}

#[test]
fn recovered_compensating_saga_undoes_everything_in_reverse() {
    let mut m = SagaMachine::compensating(vec![vec![], vec![0]]);
    assert_eq!(
        m.start(),
        vec![Command {
            op: Operation::Compensate,
            branch: 1
        }]
    );
    assert_eq!(
        m.apply(Event::Succeeded(1)).unwrap(),
        vec![Command {
            op: Operation::Compensate,
            branch: 0
        }]
    );
}

const BRANCH_STATES: [BranchState; 10] = [
    BranchState::Pending,
    BranchState::Trying,
    BranchState::Tried,
    BranchState::Failed,
    BranchState::Uncertain,
    BranchState::Confirming,
    BranchState::Confirmed,
    BranchState::Cancelling,
    BranchState::Cancelled,
    BranchState::Skipped,
];

/// The TCC table for one branch: (state, phase, event) → (state, phase, command) or invalid.
fn tcc_expected(
    state: BranchState,
    phase: TccPhase,
    event: Event,
) -> Option<(BranchState, TccPhase, Option<Operation>)> {
    use BranchState::*;
    use TccPhase as P;
    let cancel = |s: BranchState| match s {
        Tried | Uncertain | Failed => (Cancelling, P::Cancelling, Some(Operation::Cancel)),
        Pending => (Skipped, P::Cancelling, None),
        other => (other, P::Cancelling, None),
    };
    // After the event, `next` runs for the phase reached.
    let settle = |s: BranchState, p: TccPhase| match p {
        P::Trying if s == Pending => (Trying, P::Trying, Some(Operation::Try)),
        P::Trying | P::Confirming if s == Tried => {
            (Confirming, P::Confirming, Some(Operation::Confirm))
        }
        P::Cancelling => cancel(s),
        _ => (s, p, None),
    };
    match (state, event) {
        (Trying, Event::Succeeded(_)) => Some(settle(Tried, phase)),
        (Trying, Event::Failed(_)) => Some(settle(Failed, P::Cancelling)),
        (Trying, Event::Exhausted(_)) => Some(settle(Uncertain, P::Cancelling)),
        (Confirming, Event::Succeeded(_)) => Some(settle(Confirmed, phase)),
        (Cancelling, Event::Succeeded(_)) => Some(settle(Cancelled, phase)),
        (_, Event::Abort) => Some(settle(
            state,
            if phase == P::Trying {
                P::Cancelling
            } else {
                phase
            },
        )),
        _ => None,
    }
}

#[test]
fn tcc_table_is_exhaustively_as_documented() {
    let mut checked = 0;
    for state in BRANCH_STATES {
        for phase in [TccPhase::Trying, TccPhase::Confirming, TccPhase::Cancelling] {
            for event in EVENTS {
                let mut m = TccMachine::from_states(vec![state], phase);
                let got = m
                    .apply(event)
                    .ok()
                    .map(|commands| (m.branches()[0], m.phase(), commands.first().map(|c| c.op)));
                assert_eq!(
                    got,
                    tcc_expected(state, phase, event),
                    "state {state:?}, phase {phase:?}, event {event:?}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 10 * 3 * 4);
}

#[test]
fn tcc_confirms_only_when_every_try_succeeded() {
    let mut m = TccMachine::new(3);
    assert_eq!(m.start().len(), 3);
    assert!(m.apply(Event::Succeeded(0)).unwrap().is_empty());
    assert!(m.apply(Event::Succeeded(2)).unwrap().is_empty());
    let confirms = m.apply(Event::Succeeded(1)).unwrap();
    assert_eq!(
        confirms
            .iter()
            .filter(|c| c.op == Operation::Confirm)
            .count(),
        3
    );
    // Once confirming, an abort (an expired TTL) changes nothing: the decision is final.
    assert!(m.apply(Event::Abort).unwrap().is_empty());
    for i in 0..3 {
        m.apply(Event::Succeeded(i)).unwrap();
    }
    assert_eq!(m.status(), Status::Committed);
}

#[test]
fn tcc_cancels_every_branch_that_was_tried() {
    let mut m = TccMachine::new(3);
    m.start();
    m.apply(Event::Succeeded(0)).unwrap();
    // The rejected try is cancelled too: another attempt of it may have reserved.
    let cancels = m.apply(Event::Failed(1)).unwrap();
    assert_eq!(
        cancels,
        vec![
            Command {
                op: Operation::Cancel,
                branch: 0
            },
            Command {
                op: Operation::Cancel,
                branch: 1
            }
        ]
    );
    // Branch 2's try is still running: it is cancelled once it settles.
    assert_eq!(
        m.apply(Event::Exhausted(2)).unwrap(),
        vec![Command {
            op: Operation::Cancel,
            branch: 2
        }]
    );
    for b in 0..3 {
        m.apply(Event::Succeeded(b)).unwrap();
    }
    assert_eq!(m.status(), Status::Compensated);
}

#[test]
fn a_recovered_saga_going_backward_undoes_steps_it_did_not_start() {
    // Re-driven after a crash: an earlier run may have applied b and c.
    let mut m = SagaMachine::recovered(vec![vec![], vec![0], vec![1]]);
    assert_eq!(
        m.start(),
        vec![Command {
            op: Operation::Action,
            branch: 0
        }]
    );
    // a's outcome stays unknown (say its deadline passed): every step is compensated,
    // in reverse order, instead of b and c being skipped.
    assert_eq!(
        m.apply(Event::Exhausted(0)).unwrap(),
        vec![Command {
            op: Operation::Compensate,
            branch: 2
        }]
    );
    assert_eq!(
        m.steps(),
        &[
            StepState::Uncertain,
            StepState::Uncertain,
            StepState::Compensating
        ]
    );
    assert_eq!(
        m.apply(Event::Succeeded(2)).unwrap(),
        vec![Command {
            op: Operation::Compensate,
            branch: 1
        }]
    );
    assert_eq!(
        m.apply(Event::Succeeded(1)).unwrap(),
        vec![Command {
            op: Operation::Compensate,
            branch: 0
        }]
    );
    m.apply(Event::Succeeded(0)).unwrap();
    assert_eq!(m.status(), Status::Compensated);
}
