//! Record timestamps: Unix milliseconds, as Kafka carries them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds of `t` (0 before 1970, `i64::MAX` past what it holds).
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
