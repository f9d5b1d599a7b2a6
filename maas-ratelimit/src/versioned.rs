//! A 60-bit state word tagged with a 4-bit configuration generation, and the configuration
//! slots it points into: how single-key limiters change their quota at runtime without a lock
//! on the check path and without a torn (half old, half new) configuration.
//!
//! A check loads the state word, reads the configuration of the word's generation, computes,
//! and compare-and-swaps the word. `set_quota` (serialised by a mutex that checks never take)
//! writes the next generation's slot, converts the state, and swaps both generation and state
//! in one CAS. A check that raced with it fails its CAS and retries with the new configuration.
//! A slot is rewritten only 16 generations after it was last current, so a reader can see a
//! torn slot only if 15 quota changes complete during a single check — and even then its CAS
//! fails, because the generation moved.
//!
//! Every check reads the clock *after* loading the state word (again on each retry), so the
//! state it sees was computed from a clock reading no later than its own: with a clock that
//! never goes back, a stored time is never ahead of the reader's. The cores rely on that to
//! read their 60-bit times modulo 2^60 without mistaking a stale time for a future one.

use std::marker::PhantomData;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Decision;

/// Number of configuration words per slot.
pub(crate) const WORDS: usize = 3;
const GENERATIONS: usize = 16;
const GEN_SHIFT: u32 = 60;
/// Largest value the state word can hold.
pub(crate) const VALUE_MASK: u64 = (1 << GEN_SHIFT) - 1;

/// A limiter's configuration as plain words, so it can live in atomics.
pub(crate) type Words = [u64; WORDS];

/// What a check computed: the answer, and the new state to store (None: leave it).
pub(crate) type Step<D> = (D, Option<u64>);

/// A configuration whose whole state fits one word: the token bucket and the fixed window.
pub(crate) trait WordConfig: Copy {
    fn to_words(self) -> Words;
    fn from_words(words: &Words) -> Self;
    /// One check at `now` against `state`; the new state when it changes.
    fn step(&self, state: u64, now: u64, cost: u64, consume: bool) -> Step<Decision>;
    /// `state` (kept under `old`) re-expressed under `self`.
    fn convert_from(&self, old: &Self, state: u64, now: u64) -> u64;
}

#[derive(Debug)]
pub(crate) struct Versioned<C> {
    state: AtomicU64,
    slots: [[AtomicU64; WORDS]; GENERATIONS],
    writer: Mutex<()>,
    config: PhantomData<C>,
}

impl<C: WordConfig> Versioned<C> {
    pub(crate) fn new(config: C, state: u64) -> Self {
        let v = Versioned {
            state: AtomicU64::new(state & VALUE_MASK),
            slots: Default::default(),
            writer: Mutex::new(()),
            config: PhantomData,
        };
        for (slot, word) in v.slots[0].iter().zip(config.to_words()) {
            slot.store(word, Ordering::Relaxed);
        }
        v
    }

    fn read_slot(&self, generation: usize) -> Words {
        let slot = &self.slots[generation];
        [
            slot[0].load(Ordering::Relaxed),
            slot[1].load(Ordering::Relaxed),
            slot[2].load(Ordering::Relaxed),
        ]
    }

    /// The current configuration.
    pub(crate) fn config(&self) -> C {
        let w = self.state.load(Ordering::Acquire);
        C::from_words(&self.read_slot((w >> GEN_SHIFT) as usize))
    }

    /// A check of `cost` at the time `now` reads, consuming it when `consume` is set and it
    /// passes.
    #[inline]
    pub(crate) fn decide(&self, now: impl Fn() -> u64, cost: u64, consume: bool) -> Decision {
        self.update(|words, state| C::from_words(words).step(state, now(), cost, consume))
    }

    /// Installs `new`, converting the state so nothing already spent is forgotten.
    pub(crate) fn retune(&self, new: C, now: impl Fn() -> u64) {
        self.reconfigure(new.to_words(), |old, state| {
            new.convert_from(&C::from_words(old), state, now())
        });
    }

    /// Runs `f(config, state)` and stores the state it returns, retrying on races. `f` is
    /// called after the state is loaded, so a clock it reads is no earlier than the reading
    /// the loaded state was computed from.
    #[inline]
    pub(crate) fn update<D>(&self, mut f: impl FnMut(&Words, u64) -> Step<D>) -> D {
        let mut word = self.state.load(Ordering::Acquire);
        loop {
            let generation = word >> GEN_SHIFT;
            let config = self.read_slot(generation as usize);
            let (answer, next) = f(&config, word & VALUE_MASK);
            match next {
                Some(value) => {
                    let new = (generation << GEN_SHIFT) | (value & VALUE_MASK);
                    match self.state.compare_exchange_weak(
                        word,
                        new,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return answer,
                        Err(actual) => word = actual,
                    }
                }
                None => {
                    // Nothing to store: make sure the configuration we read was current.
                    let again = self.state.load(Ordering::Acquire);
                    if again >> GEN_SHIFT == generation {
                        return answer;
                    }
                    word = again;
                }
            }
        }
    }

    /// Installs a new configuration, converting the state with `convert(old, new, state)`
    /// in the same atomic step.
    pub(crate) fn reconfigure(&self, new_config: Words, convert: impl Fn(&Words, u64) -> u64) {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut word = self.state.load(Ordering::Acquire);
        loop {
            let generation = (word >> GEN_SHIFT) as usize;
            let next = (generation + 1) % GENERATIONS;
            let old = self.read_slot(generation);
            for (slot, w) in self.slots[next].iter().zip(new_config) {
                slot.store(w, Ordering::Relaxed);
            }
            let value = convert(&old, word & VALUE_MASK) & VALUE_MASK;
            let new = ((next as u64) << GEN_SHIFT) | value;
            match self
                .state
                .compare_exchange(word, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test configuration: three plain words.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Plain(Words);

    impl WordConfig for Plain {
        fn to_words(self) -> Words {
            self.0
        }
        fn from_words(words: &Words) -> Self {
            Plain(*words)
        }
        fn step(&self, _: u64, _: u64, _: u64, _: bool) -> Step<Decision> {
            unreachable!("not used by these tests")
        }
        fn convert_from(&self, _: &Self, state: u64, _: u64) -> u64 {
            state
        }
    }

    #[test]
    fn update_sees_the_configuration_of_its_generation() {
        let v = Versioned::new(Plain([7, 0, 0]), 1);
        let seen = v.update(|c, s| (c[0] + s, Some(s + 1)));
        assert_eq!(seen, 8);
        v.reconfigure([100, 0, 0], |old, s| s * old[0]);
        assert_eq!(v.config(), Plain([100, 0, 0]));
        let seen = v.update(|c, s| (c[0] + s, None));
        assert_eq!(seen, 100 + 14);
    }

    #[test]
    fn generations_wrap_around() {
        let v = Versioned::new(Plain([0, 0, 0]), 0);
        for g in 1..=40u64 {
            v.reconfigure([g, g, g], |_, s| s + 1);
            assert_eq!(v.config(), Plain([g, g, g]));
            assert_eq!(v.update(|_, s| (s, None)), g);
        }
    }
}
