//! Scripted participants for the engine tests: each (branch, operation) answers from a
//! script, and every call is logged in order. A barrier-like ledger records what applied.
#![allow(dead_code)]

pub mod pg;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maas_saga::{BranchCall, Operation, Participant, Reply, participant};
use tower::service_fn;

/// How one call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Applies and answers success.
    Ok,
    /// Business failure: does not apply.
    Reject,
    /// Fails without applying: unknown outcome.
    Err,
    /// Applies, then the answer is lost: unknown outcome.
    LoseAnswer,
    /// Never answers (the engine's timeout fires).
    Hang,
}

#[derive(Default)]
pub struct Script {
    plan: HashMap<(String, Operation), VecDeque<Act>>,
    pub log: Vec<(String, Operation, u32)>,
    /// (branch, op) that applied, in order.
    pub applied: Vec<(String, Operation)>,
}

#[derive(Clone, Default)]
pub struct Scripted(pub Arc<Mutex<Script>>);

impl Scripted {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers for the next calls of (branch, op); after the script runs out: `Ok`.
    pub fn plan(&self, branch: &str, op: Operation, acts: &[Act]) -> &Self {
        self.0
            .lock()
            .unwrap()
            .plan
            .entry((branch.to_owned(), op))
            .or_default()
            .extend(acts.iter().copied());
        self
    }

    pub fn log(&self) -> Vec<(String, Operation, u32)> {
        self.0.lock().unwrap().log.clone()
    }

    pub fn applied(&self) -> Vec<(String, Operation)> {
        self.0.lock().unwrap().applied.clone()
    }

    /// Calls of one operation.
    pub fn calls(&self, branch: &str, op: Operation) -> usize {
        self.log()
            .iter()
            .filter(|(b, o, _)| b == branch && *o == op)
            .count()
    }

    pub fn participant(&self) -> Participant {
        let me = self.clone();
        participant(service_fn(move |call: BranchCall| {
            let me = me.clone();
            async move {
                let act = {
                    let mut s = me.0.lock().unwrap();
                    s.log.push((call.branch.clone(), call.op, call.attempt));
                    s.plan
                        .get_mut(&(call.branch.clone(), call.op))
                        .and_then(VecDeque::pop_front)
                        .unwrap_or(Act::Ok)
                };
                match act {
                    Act::Ok => {
                        me.0.lock().unwrap().applied.push((call.branch, call.op));
                        Ok(Reply::Done)
                    }
                    Act::Reject => Ok(Reply::Rejected("no".into())),
                    Act::Err => Err(std::io::Error::other("boom")),
                    Act::LoseAnswer => {
                        me.0.lock().unwrap().applied.push((call.branch, call.op));
                        Err(std::io::Error::other("answer lost"))
                    }
                    Act::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(Reply::Done)
                    }
                }
            }
        }))
    }
}
