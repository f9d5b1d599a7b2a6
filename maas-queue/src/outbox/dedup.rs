//! A bounded memory of the event ids already handled.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Remembers the last `capacity` event ids seen and says whether an id is new: the
/// consumer's side of an at-least-once outbox. Memory is bounded: the oldest ids are
/// forgotten first, so a repeat older than `capacity` ids passes again — size it above the
/// records a relay can publish twice (one relay batch) times the relays that may overlap.
///
/// ```
/// use maas_queue::outbox::Deduplicator;
/// let seen = Deduplicator::new(2);
/// assert!(seen.first_time("a"));
/// assert!(!seen.first_time("a"));
/// assert!(seen.first_time("b"));
/// assert!(seen.first_time("c")); // "a" is forgotten now
/// assert!(seen.first_time("a"));
/// ```
#[derive(Debug)]
pub struct Deduplicator {
    inner: Mutex<Seen>,
}

#[derive(Debug)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
    repeats: u64,
}

impl Deduplicator {
    /// Remembers up to `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Deduplicator {
            inner: Mutex::new(Seen {
                ids: HashSet::with_capacity(capacity.min(1 << 16)),
                order: VecDeque::with_capacity(capacity.min(1 << 16)),
                capacity,
                repeats: 0,
            }),
        }
    }

    /// Whether `id` was not seen among the last `capacity` ids; records it.
    pub fn first_time(&self, id: &str) -> bool {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if s.ids.contains(id) {
            s.repeats += 1;
            return false;
        }
        if s.order.len() == s.capacity
            && let Some(old) = s.order.pop_front()
        {
            s.ids.remove(&old);
        }
        s.ids.insert(id.to_owned());
        s.order.push_back(id.to_owned());
        true
    }

    /// How many repeats were dropped so far.
    pub fn repeats(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).repeats
    }
}
