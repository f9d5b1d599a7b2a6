//! Turning records into a Kafka record batch (format v2, optionally compressed).
//!
//! The batch is written straight from our [`Record`]s into one buffer: no intermediate record
//! structs, header maps or copies of keys and values, which is most of a producer's CPU time
//! when records are small. Compression uses `kafka-protocol`'s codecs.

use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

use crate::time::millis;
use crate::trace::{TRACEPARENT, TRACEPARENT_LEN, put_new_traceparent};
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
    /// The codec's number in a batch's attributes.
    fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// Bytes of the batch header after the length field, up to and including the record count.
const HEADER_AFTER_LENGTH: usize = 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4;
/// Bytes from the start of the batch to the first byte the CRC covers (the attributes).
const CRC_START: usize = 8 + 4 + 4 + 1 + 4;

/// Encodes `records` as one batch with offsets from 0.
pub(crate) fn encode(records: &[&Record], compression: Compression) -> Result<Bytes, QueueError> {
    let now = millis(SystemTime::now());
    let stamp = |r: &Record| r.timestamp.map_or(now, millis);
    let first = records.first().map_or(now, |r| stamp(r));
    let max = records.iter().map(|r| stamp(r)).max().unwrap_or(now);
    let body: usize = records.iter().map(|r| r.approx_size() + 16).sum();
    let mut buf = BytesMut::with_capacity(8 + 4 + HEADER_AFTER_LENGTH + body);

    buf.put_i64(0); // base offset
    buf.put_i32(0); // batch length, filled in below
    buf.put_i32(-1); // partition leader epoch
    buf.put_i8(2); // magic
    buf.put_u32(0); // CRC, filled in below
    buf.put_i16(compression.attribute()); // creation-time timestamps, not transactional
    buf.put_i32(records.len().saturating_sub(1) as i32); // last offset delta
    buf.put_i64(first);
    buf.put_i64(max);
    buf.put_i64(-1); // producer id: none
    buf.put_i16(-1); // producer epoch
    buf.put_i32(-1); // base sequence
    buf.put_i32(records.len() as i32);

    let write = |out: &mut BytesMut| {
        for (i, r) in records.iter().enumerate() {
            put_record(out, r, stamp(r) - first, i as i32);
        }
    };
    let compressed = match compression {
        Compression::None => {
            write(&mut buf);
            Ok(())
        }
        Compression::Gzip => Gzip::compress(&mut buf, |out| {
            write(out);
            Ok(())
        }),
        Compression::Snappy => Snappy::compress(&mut buf, |out| {
            write(out);
            Ok(())
        }),
        Compression::Lz4 => Lz4::compress(&mut buf, |out| {
            write(out);
            Ok(())
        }),
        Compression::Zstd => Zstd::compress(&mut buf, |out| {
            write(out);
            Ok(())
        }),
    };
    compressed.map_err(|e| QueueError::Protocol(format!("compressing a batch: {e}")))?;

    let length = (buf.len() - 12) as i32;
    buf[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[CRC_START - 4..CRC_START].copy_from_slice(&crc.to_be_bytes());
    Ok(buf.freeze())
}

/// Writes one record: its length, then attributes, deltas, key, value and headers.
fn put_record(out: &mut BytesMut, r: &Record, timestamp_delta: i64, offset_delta: i32) {
    let bytes = |b: &Option<Bytes>| b.as_ref().map_or(varint_len(-1), |b| sized_len(b.len()));
    // Every record carries a `traceparent`: the caller's, or a new one written here.
    let add_trace = r.header_value(TRACEPARENT).is_none();
    let mut headers: usize = r
        .headers
        .iter()
        .map(|(n, v)| sized_len(n.len()) + sized_len(v.len()))
        .sum();
    let mut count = r.headers.len();
    if add_trace {
        headers += sized_len(TRACEPARENT.len()) + sized_len(TRACEPARENT_LEN);
        count += 1;
    }
    let length = 1
        + varint_len(timestamp_delta)
        + varint_len(offset_delta.into())
        + bytes(&r.key)
        + bytes(&r.value)
        + varint_len(count as i64)
        + headers;
    put_varint(out, length as i64);
    out.put_i8(0);
    put_varint(out, timestamp_delta);
    put_varint(out, offset_delta.into());
    for b in [&r.key, &r.value] {
        match b {
            Some(b) => put_sized(out, b),
            None => put_varint(out, -1),
        }
    }
    put_varint(out, count as i64);
    for (n, v) in &r.headers {
        put_sized(out, n.as_bytes());
        put_sized(out, v);
    }
    if add_trace {
        put_sized(out, TRACEPARENT.as_bytes());
        put_varint(out, TRACEPARENT_LEN as i64);
        put_new_traceparent(out);
    }
}

fn put_sized(out: &mut BytesMut, b: &[u8]) {
    put_varint(out, b.len() as i64);
    out.put_slice(b);
}

fn sized_len(n: usize) -> usize {
    varint_len(n as i64) + n
}

/// Kafka's zig-zag variable-length integer (used for both varint and varlong).
fn put_varint(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{Compression as WireCompression, RecordBatchDecoder};

    use super::*;
    use std::time::UNIX_EPOCH;

    /// Every compression yields a v2 batch a decoder reads back intact. (Snappy is checked
    /// here only: tansu 0.6 cannot serve Snappy batches, whoever produced them.)
    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn batches_decode_with_every_compression() {
        let at = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000);
        let mut records: Vec<Record> = (0..50)
            .map(|i| {
                let mut r = Record::new("t", format!("value value value {i}"))
                    .key(format!("k{i}"))
                    .header("n", i.to_string());
                // Out of order, so that some timestamp deltas are negative.
                r.timestamp = Some(at + std::time::Duration::from_millis((i * 37 % 11) as u64));
                r
            })
            .collect();
        // Lengths that need multi-byte varints, and a record without key or value.
        records[3].value = Some(Bytes::from(vec![7u8; 20_000]));
        records[4].key = None;
        records[4].value = None;
        records[7] = records[7].clone().header(TRACEPARENT, CALLER);
        let refs: Vec<&Record> = records.iter().collect();
        for (c, wire) in [
            (Compression::None, WireCompression::None),
            (Compression::Gzip, WireCompression::Gzip),
            (Compression::Snappy, WireCompression::Snappy),
            (Compression::Lz4, WireCompression::Lz4),
            (Compression::Zstd, WireCompression::Zstd),
        ] {
            let mut bytes = encode(&refs, c).expect("encode");
            // The decoder checks the CRC and the batch length.
            let set = RecordBatchDecoder::decode(&mut bytes).expect("decode");
            assert_eq!(set.compression, wire, "{c:?}");
            assert_eq!(set.records.len(), 50, "{c:?}");
            assert!(bytes.is_empty(), "{c:?}: one batch, nothing after it");
            for (i, (r, want)) in set.records.iter().zip(&records).enumerate() {
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.key, want.key, "{c:?} record {i}");
                assert_eq!(r.value, want.value, "{c:?} record {i}");
                assert_eq!(
                    r.timestamp,
                    millis(want.timestamp.unwrap()),
                    "{c:?} record {i}"
                );
                assert_eq!(r.producer_id, -1);
                let n = r
                    .headers
                    .get(&StrBytes::from_static_str("n"))
                    .cloned()
                    .flatten();
                assert_eq!(n.as_deref(), Some(i.to_string().as_bytes()));
                // A record without `traceparent` gets a new one; a caller's is kept.
                let tp = r
                    .headers
                    .get(&StrBytes::from_static_str(TRACEPARENT))
                    .cloned()
                    .flatten()
                    .expect("traceparent");
                let tp = std::str::from_utf8(&tp).unwrap();
                assert!(crate::trace::trace_id(tp).is_some(), "{tp}");
                if i == 7 {
                    assert_eq!(tp, CALLER);
                }
            }
        }
    }

    #[test]
    fn varint_lengths_match_what_is_written() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -64,
            -65,
            8191,
            8192,
            1 << 20,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = BytesMut::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }
}
