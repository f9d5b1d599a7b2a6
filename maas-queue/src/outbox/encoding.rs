//! Headers as the outbox stores them: one byte string of `(u32 length, bytes)` pairs, name
//! then value, in order.

use bytes::Bytes;

use crate::Headers;

/// Encodes `headers`.
pub(crate) fn encode(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in headers {
        for part in [n.as_bytes(), &v[..]] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&part[..len as usize]);
        }
    }
    out
}

/// Decodes what [`encode`] wrote; `None` when the bytes are not such an encoding.
pub(crate) fn decode(mut bytes: &[u8]) -> Option<Headers> {
    let mut out = Vec::new();
    let take = |b: &mut &[u8]| -> Option<Vec<u8>> {
        let (len, rest) = b.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (part, rest) = rest.split_at(len);
        *b = rest;
        Some(part.to_vec())
    };
    while !bytes.is_empty() {
        let name = String::from_utf8(take(&mut bytes)?).ok()?;
        let value = take(&mut bytes)?;
        out.push((name, Bytes::from(value)));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_in_order_and_garbage_is_refused() {
        let h: Headers = vec![
            ("a".into(), Bytes::from_static(b"1")),
            ("a".into(), Bytes::from_static(b"")),
            ("traceparent".into(), Bytes::from_static(b"00-x")),
        ];
        assert_eq!(decode(&encode(&h)).unwrap(), h);
        assert_eq!(decode(&[]).unwrap(), Vec::new());
        assert!(decode(&[0, 0, 0, 9, 1]).is_none());
    }
}
