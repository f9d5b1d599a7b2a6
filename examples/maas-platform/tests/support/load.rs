//! A bounded load for the fault tests: `clients` tasks, each calling `call(client, n)` for
//! n = 1, 2, … with a pause between calls, until stopped; every outcome is kept in order.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Load<T> {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<T>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<T: Clone + Send + 'static> Load<T> {
    pub fn start<F, Fut>(clients: usize, pause: Duration, call: F) -> Load<T>
    where
        F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = T> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<T>>> = Arc::default();
        let tasks = (0..clients)
            .map(|c| {
                let (stop, seen, call) = (stop.clone(), seen.clone(), call.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let outcome = call(c, n).await;
                        seen.lock().unwrap().push(outcome);
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load { stop, seen, tasks }
    }

    /// The outcomes so far.
    pub fn seen(&self) -> Vec<T> {
        self.seen.lock().unwrap().clone()
    }

    /// How many calls have ended so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Stops every client after its call in flight; all the outcomes.
    pub async fn stop(self) -> Vec<T> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}
