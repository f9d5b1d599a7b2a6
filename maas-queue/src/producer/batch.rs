//! Turning records into a Kafka record batch (format v2, optionally compressed).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as WireCompression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
    Record as WireRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::{QueueError, Record};

/// Compression of produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// None (the default).
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    fn wire(self) -> WireCompression {
        match self {
            Compression::None => WireCompression::None,
            Compression::Gzip => WireCompression::Gzip,
            Compression::Snappy => WireCompression::Snappy,
            Compression::Lz4 => WireCompression::Lz4,
            Compression::Zstd => WireCompression::Zstd,
        }
    }
}

pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Encodes `records` as one batch.
pub(crate) fn encode(records: &[&Record], compression: Compression) -> Result<Bytes, QueueError> {
    let now = millis(SystemTime::now());
    let wire: Vec<WireRecord> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut headers = IndexMap::with_capacity(r.headers.len());
            for (n, v) in &r.headers {
                headers.insert(StrBytes::from_string(n.clone()), Some(v.clone()));
            }
            WireRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: NO_PRODUCER_EPOCH,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: NO_SEQUENCE,
                timestamp: r.timestamp.map_or(now, millis),
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::with_capacity(records.iter().map(|r| r.approx_size()).sum::<usize>() + 64);
    RecordBatchEncoder::encode(
        &mut buf,
        &wire,
        &RecordEncodeOptions {
            version: 2,
            compression: compression.wire(),
        },
    )
    .map_err(|e| QueueError::Protocol(format!("encoding a record batch: {e}")))?;
    Ok(buf.freeze())
}
