//! The GGUF header (llama.cpp's model format, versions 2 and 3, little-endian): the magic
//! `GGUF`, a version, the tensor and key-value counts, the key-value pairs, then one entry per
//! tensor (name, dimensions, element type, offset into the data section). The data section
//! starts at the next multiple of `general.alignment` (32 unless the file says otherwise).
//!
//! Every count and length comes from the file, so none is trusted: nothing is allocated by a
//! count, each read is checked against the bytes at hand, and each tensor's byte range is
//! checked against the file's real size.

use std::collections::HashSet;

use super::ArtifactError;
use super::inspect::{Format, ModelMetadata, Parse, distinct};

/// The first four bytes of a GGUF file.
pub(super) const MAGIC: &[u8] = b"GGUF";

/// ggml's limit on a tensor's dimensions.
const MAX_DIMS: u32 = 4;
/// How deep arrays of arrays may nest in a value.
const MAX_NESTING: u32 = 3;
const DEFAULT_ALIGNMENT: u64 = 32;

/// The element types whose block layout is fixed and known here: (name, elements per block,
/// bytes per block). Others (the newer `IQ*` and ternary types) are refused as unsupported.
fn element_type(code: u32) -> Option<(&'static str, u64, u64)> {
    Some(match code {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        30 => ("BF16", 1, 2),
        _ => return None,
    })
}

/// A cursor over the prefix at hand.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], Parse> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.at.checked_add(n))
            .ok_or(Parse::Short)?;
        let bytes = self.bytes.get(self.at..end).ok_or(Parse::Short)?;
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Parse> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, Parse> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Parse> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<&'a [u8], Parse> {
        let len = self.u64()?;
        self.take(len)
    }
}

/// A value's type code, and its size when that is fixed.
fn scalar_size(kind: u32) -> Option<u64> {
    match kind {
        0 | 1 | 7 => Some(1), // u8, i8, bool
        2 | 3 => Some(2),     // u16, i16
        4..=6 => Some(4),     // u32, i32, f32
        10..=12 => Some(8),   // u64, i64, f64
        _ => None,
    }
}

const STRING: u32 = 8;
const ARRAY: u32 = 9;

/// Steps over one value of type `kind`.
fn skip(c: &mut Cursor<'_>, kind: u32, depth: u32) -> Result<(), Parse> {
    if let Some(n) = scalar_size(kind) {
        c.take(n)?;
        return Ok(());
    }
    match kind {
        STRING => {
            c.string()?;
        }
        ARRAY => {
            if depth >= MAX_NESTING {
                return Err(ArtifactError::Unsupported(format!(
                    "metadata arrays nested deeper than {MAX_NESTING}"
                ))
                .into());
            }
            let item = c.u32()?;
            let count = c.u64()?;
            match scalar_size(item) {
                // A fixed-size array is stepped over at once; its length is checked by `take`.
                Some(n) => {
                    c.take(count.checked_mul(n).ok_or(Parse::Short)?)?;
                }
                // Each string or array takes at least 8 bytes, so the prefix bounds the loop.
                None => {
                    for _ in 0..count {
                        skip(c, item, depth + 1)?;
                    }
                }
            }
        }
        other => {
            return Err(
                ArtifactError::Corrupt(format!("metadata value of unknown type {other}")).into(),
            );
        }
    }
    Ok(())
}

/// Parses the header at the start of `prefix`, the first bytes of a file of `size` bytes.
pub(super) fn parse(prefix: &[u8], size: u64) -> Result<ModelMetadata, Parse> {
    let mut c = Cursor {
        bytes: prefix,
        at: 0,
    };
    c.take(4)?; // the magic, which the caller matched
    let version = c.u32()?;
    match version {
        2 | 3 => {}
        1 => return Err(ArtifactError::Unsupported("GGUF version 1".into()).into()),
        v if matches!(v.swap_bytes(), 2 | 3) => {
            return Err(ArtifactError::Unsupported("big-endian GGUF".into()).into());
        }
        v => return Err(ArtifactError::Unsupported(format!("GGUF version {v}")).into()),
    }
    let tensor_count = c.u64()?;
    let kv_count = c.u64()?;

    let mut alignment = DEFAULT_ALIGNMENT;
    let mut architecture = None;
    for _ in 0..kv_count {
        let key = c.string()?;
        let kind = c.u32()?;
        match (key, kind) {
            (b"general.alignment", 4) => {
                let a = u64::from(c.u32()?);
                if a == 0 || !a.is_power_of_two() {
                    return Err(ArtifactError::Corrupt(format!(
                        "general.alignment {a} is not a power of two"
                    ))
                    .into());
                }
                alignment = a;
            }
            (b"general.architecture", STRING) => {
                architecture = Some(String::from_utf8_lossy(c.string()?).into_owned());
            }
            _ => skip(&mut c, kind, 0)?,
        }
    }

    let mut names = HashSet::new();
    let mut ranges = Vec::new();
    let mut parameters = 0u64;
    let mut dtypes = Vec::new();
    for _ in 0..tensor_count {
        let name = String::from_utf8_lossy(c.string()?).into_owned();
        let dims = c.u32()?;
        if dims == 0 || dims > MAX_DIMS {
            return Err(ArtifactError::Corrupt(format!(
                "tensor `{name}` has {dims} dimensions (1 to {MAX_DIMS})"
            ))
            .into());
        }
        let mut shape = Vec::with_capacity(dims as usize);
        for _ in 0..dims {
            shape.push(c.u64()?);
        }
        let code = c.u32()?;
        let offset = c.u64()?;
        let (dtype, block, block_bytes) = element_type(code).ok_or_else(|| {
            ArtifactError::Unsupported(format!("tensor `{name}` has element type {code}"))
        })?;
        let overflow = || ArtifactError::Corrupt(format!("tensor `{name}` is too large to exist"));
        let elements = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(overflow)?;
        if shape[0] % block != 0 {
            return Err(ArtifactError::Corrupt(format!(
                "tensor `{name}`: {dtype} packs {block} elements a block; its first dimension is {}",
                shape[0]
            ))
            .into());
        }
        let bytes = (elements / block)
            .checked_mul(block_bytes)
            .ok_or_else(overflow)?;
        if offset % alignment != 0 {
            return Err(ArtifactError::Corrupt(format!(
                "tensor `{name}` starts at {offset}, not a multiple of the alignment {alignment}"
            ))
            .into());
        }
        let end = offset.checked_add(bytes).ok_or_else(overflow)?;
        if !names.insert(name.clone()) {
            return Err(ArtifactError::Corrupt(format!("tensor `{name}` is named twice")).into());
        }
        parameters = parameters.checked_add(elements).ok_or_else(overflow)?;
        dtypes.push(dtype.to_owned());
        ranges.push((offset, end, name));
    }
    if tensor_count == 0 {
        return Err(ArtifactError::Unsupported("the file holds no tensors".into()).into());
    }

    // The data section starts at the next multiple of the alignment after the header.
    let data_start = (c.at as u64).div_ceil(alignment) * alignment;
    let data = size.checked_sub(data_start).ok_or_else(|| {
        ArtifactError::Truncated("the file ends before its tensor data starts".into())
    })?;
    ranges.sort();
    let mut previous_end = 0;
    for (offset, end, name) in &ranges {
        if *offset < previous_end {
            return Err(ArtifactError::Corrupt(format!("tensor `{name}` overlaps another")).into());
        }
        if *end > data {
            return Err(ArtifactError::Truncated(format!(
                "tensor `{name}` needs bytes up to {end} of the data section; it has {data}"
            ))
            .into());
        }
        previous_end = *end;
    }
    Ok(ModelMetadata {
        format: Format::Gguf,
        tensors: tensor_count,
        parameters,
        dtypes: distinct(dtypes),
        architecture,
    })
}
