//! The engine's validated settings.

use std::time::Duration;

use super::error::ConfigError;

/// What [`EngineBuilder`](crate::EngineBuilder) collects; validated before anything starts.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) lease: Duration,
    pub(crate) recovery_interval: Duration,
    pub(crate) recovery_batch: usize,
    pub(crate) retention: Duration,
    pub(crate) gc_interval: Duration,
    pub(crate) alert_after: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease: Duration::from_secs(5),
            recovery_interval: Duration::from_secs(1),
            recovery_batch: 64,
            retention: Duration::from_secs(7 * 24 * 3600),
            gc_interval: Duration::from_secs(600),
            alert_after: 10,
        }
    }
}

impl Settings {
    /// The settings with every duration clamped to [`MAX_DURATION`](crate::MAX_DURATION);
    /// zero lease, recovery or GC intervals (loops that would spin on the store) and an
    /// empty recovery batch refused.
    pub(crate) fn validated(mut self) -> Result<Self, ConfigError> {
        for (setting, d) in [
            ("lease", self.lease),
            ("recovery_interval", self.recovery_interval),
            ("gc_interval", self.gc_interval),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero { setting });
            }
        }
        if self.recovery_batch == 0 {
            return Err(ConfigError::EmptyRecoveryBatch);
        }
        self.lease = crate::duration::clamp(self.lease);
        self.recovery_interval = crate::duration::clamp(self.recovery_interval);
        self.retention = crate::duration::clamp(self.retention);
        self.gc_interval = crate::duration::clamp(self.gc_interval);
        Ok(self)
    }

    /// How often leases are renewed: a third of the lease (never zero).
    pub(crate) fn renew_interval(&self) -> Duration {
        (self.lease / 3).max(Duration::from_nanos(1))
    }
}
