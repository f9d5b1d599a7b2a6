//! The safetensors header: an 8-byte little-endian length `n`, `n` bytes of JSON naming each
//! tensor's dtype, shape and byte range, then the tensors back to back. The `safetensors`
//! crate parses and validates the JSON (ranges contiguous, each the size its dtype and shape
//! say); its `read_metadata` wants the whole file in memory, so the length checks against
//! the file's size are made here.

use safetensors::tensor::Metadata;

use super::ArtifactError;
use super::inspect::{Format, MAX_HEADER, ModelMetadata, Parse, distinct};

/// Parses the header at the start of `prefix`, the first bytes of a file of `size` bytes.
pub(super) fn parse(prefix: &[u8], size: u64) -> Result<ModelMetadata, Parse> {
    let Some(len) = prefix.get(..8) else {
        return Err(Parse::Short);
    };
    let n = u64::from_le_bytes(len.try_into().map_err(|_| Parse::Short)?);
    let end = n.checked_add(8).filter(|&end| end <= size).ok_or_else(|| {
        ArtifactError::Truncated(format!(
            "the header declares {n} bytes; the file has {size} in all"
        ))
    })?;
    if n > MAX_HEADER as u64 {
        return Err(ArtifactError::HeaderTooLarge { limit: MAX_HEADER }.into());
    }
    let Some(header) = prefix.get(8..end as usize) else {
        return Err(Parse::Short);
    };
    let metadata: Metadata = serde_json::from_slice(header).map_err(|e| {
        let e = e.to_string();
        if e.contains("unknown variant") {
            ArtifactError::Unsupported(format!("header: {e}"))
        } else {
            ArtifactError::Corrupt(format!("header: {e}"))
        }
    })?;
    let data = size - end;
    let needed = metadata.data_len() as u64;
    if needed > data {
        return Err(ArtifactError::Truncated(format!(
            "the tensors need {needed} bytes after the header; the file has {data}"
        ))
        .into());
    }
    if needed < data {
        return Err(ArtifactError::Corrupt(format!(
            "{} bytes follow the last tensor",
            data - needed
        ))
        .into());
    }
    let tensors = metadata.tensors();
    if tensors.is_empty() {
        return Err(ArtifactError::Unsupported("the file holds no tensors".into()).into());
    }
    let mut parameters = 0u64;
    let mut dtypes = Vec::new();
    for info in tensors.values() {
        // The crate checked that shape × dtype fits its byte range, so no product overflows.
        let elements = info
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        parameters = elements
            .and_then(|e| parameters.checked_add(e))
            .ok_or_else(|| ArtifactError::Corrupt("the parameter count overflows".into()))?;
        dtypes.push(format!("{:?}", info.dtype));
    }
    Ok(ModelMetadata {
        format: Format::Safetensors,
        tensors: tensors.len() as u64,
        parameters,
        dtypes: distinct(dtypes),
        architecture: None,
    })
}
