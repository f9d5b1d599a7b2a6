//! What a Redis limiter does between checks: tops up leases ahead of demand, gives back the
//! leases of idle keys, forgets idle keys, and announces the replica.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::lease::Slot;
use super::{Inner, RedisLimiter};

/// How often the replica announces itself (the replica set forgets a replica after 5 s).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

impl RedisLimiter {
    /// Tops `key`'s lease up in the background, unless Redis is known to be away or
    /// another call already changes the lease.
    pub(super) fn spawn_refill(&self, key: &str, slot: Arc<Slot>) {
        let inner = &self.inner;
        let Some(leases) = &inner.leases else { return };
        // Outside a Tokio runtime there is nowhere to run it: the next check that finds the
        // lease empty takes a new one inline.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if inner.outage.is_down() {
            return;
        }
        let sent_at = leases.now();
        let params = self.params_for(key);
        let Some((want, held)) = slot.claim(sent_at, &leases.sizing(params.max_overshoot)) else {
            return;
        };
        let this = self.clone();
        let keys = self.lease_keys(key);
        runtime.spawn(async move {
            let inner = &this.inner;
            let Some(leases) = &inner.leases else { return };
            let answered = inner
                .caller
                .take(
                    keys,
                    &inner.params,
                    &inner.replica,
                    0,
                    want,
                    held,
                    leases.lifetime(),
                )
                .await;
            match answered {
                Ok((_, reply)) => {
                    inner.caller.observer.refill(reply.granted);
                    slot.settle(sent_at, 0, true, &reply);
                    this.note_success();
                }
                Err(e) => {
                    slot.unclaim();
                    this.note_failure(&e, false);
                }
            }
        });
    }

    /// Starts the limiter's background task: it ends once every clone is dropped.
    pub(super) fn spawn_background(&self) {
        let weak = Arc::downgrade(&self.inner);
        let tick = self
            .inner
            .leases
            .as_ref()
            .map(|l| (l.lifetime() / 4).clamp(Duration::from_millis(10), HEARTBEAT_EVERY))
            .unwrap_or(HEARTBEAT_EVERY);
        tokio::spawn(background(weak, tick));
    }

    /// Announces this replica and takes the count of replicas seen.
    pub(super) async fn heartbeat(&self) {
        let inner = &self.inner;
        let set = format!("{}:replicas", inner.prefix);
        if let Ok(n) = inner.caller.heartbeat(set, &inner.replica).await {
            if let Some(l) = &inner.leases {
                l.set_replicas(n);
            }
            if let Some(s) = inner.local.as_ref().filter(|s| s.follows_seen()) {
                s.resize(n);
            }
        }
    }

    /// One round of upkeep: the leases of keys idle for a quarter of a lease's life go back,
    /// and those with less than half a life left that nobody renewed (so no lease expires
    /// with units unused); keys idle for a whole life are forgotten.
    async fn upkeep(&self) {
        let Some(leases) = &self.inner.leases else {
            return;
        };
        for (key, slot) in leases.to_return(leases.now()) {
            self.give_back(&key, &slot).await;
        }
        let now = leases.now();
        leases.evict(now.saturating_sub(leases.settings.lifetime_ns), now);
    }
}

async fn background(weak: Weak<Inner>, tick: Duration) {
    let mut last_beat = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = weak.upgrade() else { return };
        let this = RedisLimiter { inner };
        if this.inner.outage.is_down() {
            continue;
        }
        this.upkeep().await;
        if last_beat.elapsed() >= HEARTBEAT_EVERY {
            last_beat = tokio::time::Instant::now();
            this.heartbeat().await;
        }
    }
}
