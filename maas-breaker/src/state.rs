//! The breaker's state, and how it is packed into one atomic word.

use std::fmt;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls pass; outcomes are recorded.
    Closed,
    /// Calls fail fast until the open time is over.
    Open,
    /// A limited number of probe calls pass to test the dependency.
    HalfOpen,
    /// Held open by an operator: every call fails fast until released.
    ForcedOpen,
    /// Switched off by an operator: every call passes, nothing is recorded.
    Disabled,
}

impl BreakerState {
    /// A stable lower-case name (`closed`, `open`, `half_open`, `forced_open`, `disabled`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::Disabled => "disabled",
        }
    }

    /// The value of the `maas_breaker_state` gauge: 0 closed, 1 open, 2 half-open,
    /// 3 forced open, 4 disabled.
    pub fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u64) -> Self {
        match code {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            3 => BreakerState::ForcedOpen,
            _ => BreakerState::Disabled,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// The word: state in bits 0..3, generation in 3..32, half-open probes in flight in 32..48,
// half-open successes in 48..64. Every state change bumps the generation, so a result that
// comes back from an earlier generation is recognised and ignored.
//
// Capacity: probes and successes hold 65,535 (`build()` refuses more); the generation wraps
// after 2^29 state changes, so a permit would have to outlive 536 million transitions to be
// mistaken for a current one.
const STATE_MASK: u64 = 0b111;
const GEN_SHIFT: u32 = 3;
const GEN_MASK: u64 = (1 << 29) - 1;
const FLIGHT_SHIFT: u32 = 32;
const SUCCESS_SHIFT: u32 = 48;
const COUNT_MASK: u64 = 0xFFFF;

/// A decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) state: BreakerState,
    pub(crate) generation: u32,
    pub(crate) in_flight: u16,
    pub(crate) successes: u16,
}

impl Word {
    #[inline]
    pub(crate) fn decode(w: u64) -> Self {
        Word {
            state: BreakerState::from_code(w & STATE_MASK),
            generation: ((w >> GEN_SHIFT) & GEN_MASK) as u32,
            in_flight: ((w >> FLIGHT_SHIFT) & COUNT_MASK) as u16,
            successes: ((w >> SUCCESS_SHIFT) & COUNT_MASK) as u16,
        }
    }

    #[inline]
    pub(crate) fn encode(self) -> u64 {
        u64::from(self.state.code())
            | ((u64::from(self.generation) & GEN_MASK) << GEN_SHIFT)
            | (u64::from(self.in_flight) << FLIGHT_SHIFT)
            | (u64::from(self.successes) << SUCCESS_SHIFT)
    }

    /// The first word of the next generation in `state`.
    pub(crate) fn next(self, state: BreakerState) -> Self {
        Word {
            state,
            generation: (self.generation + 1) & GEN_MASK as u32,
            in_flight: 0,
            successes: 0,
        }
    }
}

/// Whether two raw words are in the same generation of the same state.
#[inline]
pub(crate) fn same_epoch(a: u64, b: u64) -> bool {
    (a ^ b) & ((GEN_MASK << GEN_SHIFT) | STATE_MASK) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        let w = Word {
            state: BreakerState::HalfOpen,
            generation: GEN_MASK as u32,
            in_flight: 7,
            successes: 65_535,
        };
        assert_eq!(Word::decode(w.encode()), w);
        let n = w.next(BreakerState::Closed);
        assert_eq!(n.generation, 0, "generations wrap");
        assert!(!same_epoch(w.encode(), n.encode()));
        let busier = Word { in_flight: 1, ..w };
        assert!(same_epoch(w.encode(), busier.encode()));
    }
}
