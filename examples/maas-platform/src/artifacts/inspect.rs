//! What the builder checks in a model file: its format, read from the header alone — never
//! the tensor data — with every length checked against the file's real size.

use serde::{Deserialize, Serialize};

use super::{ArtifactError, gguf, safetensors};

/// The longest header the builder reads (GGUF headers carry the tokenizer's vocabulary; a
/// large one is a few MiB).
pub const MAX_HEADER: usize = 64 << 20;

/// What the builder recorded about a model file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// `safetensors` or `gguf`.
    pub format: Format,
    /// How many tensors the file holds.
    pub tensors: u64,
    /// How many parameters (elements of all tensors).
    pub parameters: u64,
    /// The element types of its tensors, sorted, each once (`F32`, `BF16`, `Q4_K`, …).
    pub dtypes: Vec<String>,
    /// GGUF only: `general.architecture` (e.g. `llama`), when the file names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
}

/// A model file format the builder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Hugging Face safetensors: an 8-byte length, a JSON header, the tensors.
    Safetensors,
    /// llama.cpp's GGUF, versions 2 and 3 (little-endian).
    Gguf,
}

/// How a parse ended short of an answer.
#[derive(Debug)]
pub(super) enum Parse {
    /// It needs more of the file than the prefix it was given.
    Short,
    /// The file is wrong.
    Bad(ArtifactError),
}

impl From<ArtifactError> for Parse {
    fn from(e: ArtifactError) -> Self {
        Parse::Bad(e)
    }
}

/// Reads `prefix`, the first bytes of a file of `size` bytes.
///
/// `Ok(None)` when the header goes on past `prefix` (read more and call again); never panics,
/// whatever the bytes.
pub fn inspect(prefix: &[u8], size: u64) -> Result<Option<ModelMetadata>, ArtifactError> {
    let whole = prefix.len() as u64 >= size;
    let parsed = if prefix.starts_with(gguf::MAGIC) {
        gguf::parse(prefix, size)
    } else if prefix.len() > 8 && prefix[8] == b'{' {
        safetensors::parse(prefix, size)
    } else if !whole && prefix.len() <= 8 {
        Err(Parse::Short)
    } else {
        return Err(ArtifactError::Unsupported(
            "not a safetensors or GGUF file".into(),
        ));
    };
    match parsed {
        Ok(m) => Ok(Some(m)),
        Err(Parse::Short) if whole => Err(ArtifactError::Truncated(
            "the file ends inside its header".into(),
        )),
        Err(Parse::Short) if prefix.len() >= MAX_HEADER => {
            Err(ArtifactError::HeaderTooLarge { limit: MAX_HEADER })
        }
        Err(Parse::Short) => Ok(None),
        Err(Parse::Bad(e)) => Err(e),
    }
}

/// `dtypes` sorted, each once.
pub(super) fn distinct(mut dtypes: Vec<String>) -> Vec<String> {
    dtypes.sort();
    dtypes.dedup();
    dtypes
}
