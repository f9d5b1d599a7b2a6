//! How the layer finds a request's key and cost.

use std::hash::Hash;

/// Finds the key a request is limited under (API key, tenant, model, client address).
///
/// Implemented for every `Fn(&Request) -> Key`; [`NoKey`] puts every request under one key.
pub trait KeyExtractor<R>: Send + Sync + 'static {
    /// The key type; it must match the limiter's (`Limiter<Key>`).
    type Key: Hash + Send + Sync + 'static;

    /// The key of `request`.
    fn key(&self, request: &R) -> Self::Key;
}

impl<R, K, F> KeyExtractor<R> for F
where
    F: Fn(&R) -> K + Send + Sync + 'static,
    K: Hash + Send + Sync + 'static,
{
    type Key = K;

    #[inline]
    fn key(&self, request: &R) -> K {
        self(request)
    }
}

/// Every request under the same key `()`: for single-stream limiters.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl<R> KeyExtractor<R> for NoKey {
    type Key = ();

    #[inline]
    fn key(&self, _request: &R) {}
}

/// The cost of a request in units of quota (tokens for a model call, bytes of an upload).
///
/// Implemented for every `Fn(&Request) -> u64`; [`UnitCost`] charges 1 per request.
pub trait CostExtractor<R>: Send + Sync + 'static {
    /// The cost of `request`.
    fn cost(&self, request: &R) -> u64;
}

impl<R, F> CostExtractor<R> for F
where
    F: Fn(&R) -> u64 + Send + Sync + 'static,
{
    #[inline]
    fn cost(&self, request: &R) -> u64 {
        self(request)
    }
}

/// Every request costs 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCost;

impl<R> CostExtractor<R> for UnitCost {
    #[inline]
    fn cost(&self, _request: &R) -> u64 {
        1
    }
}
