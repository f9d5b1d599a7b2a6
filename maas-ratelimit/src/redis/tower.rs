//! A [`RedisLimiter`] in [`RateLimitLayer`](crate::RateLimitLayer) and the HTTP adapter:
//! checks answered from a lease or a cached denial pass or fail at once; the others wait
//! for Redis (at most the deadline) inside the response future.

use super::RedisLimiter;
use crate::{Answer, AsyncLimiter, Limiter};

impl AsyncLimiter<str> for RedisLimiter {
    fn check_async(&self, key: &str, cost: u64) -> Answer {
        if let Some(d) = self.local_answer(key, cost) {
            return Answer::Ready(d);
        }
        let this = self.clone();
        let key = key.to_owned();
        Answer::Pending(Box::pin(async move {
            this.decide_remotely(&key, cost, true).await
        }))
    }

    fn as_sync(&self) -> Option<&dyn Limiter<str>> {
        None
    }
}

impl AsyncLimiter<String> for RedisLimiter {
    fn check_async(&self, key: &String, cost: u64) -> Answer {
        AsyncLimiter::<str>::check_async(self, key.as_str(), cost)
    }

    fn as_sync(&self) -> Option<&dyn Limiter<String>> {
        None
    }
}
