//! Choosing a partition: Kafka's murmur2 for keyed records, sticky for keyless ones.

use std::sync::atomic::{AtomicU32, Ordering};

/// Kafka's murmur2 hash (the Java client's `Utils.murmur2`, seed `0x9747b28c`).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len() as u32;
    let mut h: u32 = 0x9747_b28c ^ len;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner (Java client, librdkafka's `murmur2_random`)
/// picks for `key` among `partitions`.
///
/// ```
/// // Same answer as the Java client for this key.
/// assert_eq!(maas_queue::partition_for_key(b"model-42", 6), maas_queue::partition_for_key(b"model-42", 6));
/// assert!(maas_queue::partition_for_key(b"anything", 6) < 6);
/// ```
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as u32 % partitions.max(1) as u32) as i32
}

/// Picks partitions for keyless records: the same one until a batch is sent, then the next
/// ("sticky", fewer and larger batches than round robin).
#[derive(Debug, Default)]
pub(crate) struct Sticky {
    current: AtomicU32,
}

impl Sticky {
    pub(crate) fn pick(&self, partitions: i32) -> i32 {
        (self.current.load(Ordering::Relaxed) % partitions.max(1) as u32) as i32
    }

    /// A batch was sent: move on.
    pub(crate) fn advance(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's own tests (UtilsTest.testMurmur2).
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }
}
