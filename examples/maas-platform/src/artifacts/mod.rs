//! Model files: stored content-addressed by SHA-256 behind [`ArtifactStore`] (a directory by
//! default, [`DirStore`]), and checked by the builder, which reads only their header
//! ([`inspect`]): safetensors and GGUF, with every length checked against the file's size.
//!
//! ```
//! use maas_platform::artifacts::{Format, inspect, samples};
//!
//! let file = samples::safetensors(&[("embed", "F32", &[4, 8]), ("head", "BF16", &[8])]);
//! let meta = inspect(&file, file.len() as u64).unwrap().unwrap();
//! assert_eq!(meta.format, Format::Safetensors);
//! assert_eq!((meta.tensors, meta.parameters), (2, 40));
//! assert_eq!(meta.dtypes, ["BF16", "F32"]);
//!
//! // Cut short, it is refused with a reason, never a panic.
//! let err = inspect(&file[..file.len() - 1], file.len() as u64 - 1).unwrap_err();
//! assert!(err.to_string().starts_with("truncated:"), "{err}");
//! ```

mod dir;
mod gguf;
mod inspect;
mod safetensors;
pub mod samples;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use dir::DirStore;
pub use inspect::{Format, MAX_HEADER, ModelMetadata, inspect};

/// A SHA-256 content address, shown as `sha256:` and 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of these 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The 64 hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Digest {
    type Err = ArtifactError;

    /// Reads `sha256:<64 hex digits>`.
    fn from_str(s: &str) -> Result<Digest, ArtifactError> {
        let bad = || ArtifactError::Corrupt(format!("`{s}` is not a sha256: digest"));
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Digest(out))
    }
}

/// What a store keeps of one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Its SHA-256.
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// `false` when the store already held these bytes (a second upload of one file).
    pub new: bool,
}

/// Why an upload was not stored. Nothing of it is left in the store.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The body went over the maximum size.
    #[error("the model file is over the maximum of {max} bytes")]
    TooLarge {
        /// The maximum, in bytes.
        max: u64,
    },
    /// The body could not be read (the client went away, or stopped sending).
    #[error("reading the upload: {0}")]
    Body(#[source] io::Error),
    /// The store could not write.
    #[error("storing the upload: {0}")]
    Store(#[source] io::Error),
}

/// Why the builder refused a model file: the reason recorded on the failed model. The
/// message starts with the kind (`unsupported:`, `truncated:`, `corrupt:`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// Not a format the builder reads, or a part of one it does not.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The file ends before its header or its tensors do.
    #[error("truncated: {0}")]
    Truncated(String),
    /// The header contradicts itself or the file.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The header goes on past what the builder reads.
    #[error("header too large: over {limit} bytes")]
    HeaderTooLarge {
        /// The most the builder reads, in bytes.
        limit: usize,
    },
    /// The store has no file of that digest.
    #[error("missing: no stored model file {0}")]
    Missing(Digest),
}

/// A stream of body chunks.
pub type Body<'a> = BoxStream<'a, io::Result<axum::body::Bytes>>;

/// The first bytes of a stored file, and its whole size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    /// Up to the length asked for.
    pub bytes: Vec<u8>,
    /// The file's size.
    pub size: u64,
}

/// Where model files live, by SHA-256. Replicas that build each other's uploads must share
/// it (in Kubernetes: a `ReadWriteMany` volume, or an object store behind this trait).
pub trait ArtifactStore: Send + Sync + 'static {
    /// Stores `body`, hashing it as it arrives, and refuses it past `max` bytes. A body that
    /// fails, goes over `max` or is dropped half-way leaves nothing behind.
    fn put<'a>(&'a self, body: Body<'a>, max: u64) -> BoxFuture<'a, Result<Stored, PutError>>;

    /// The first `len` bytes (fewer when the file is shorter) of the file `digest`, and its
    /// size; `None` when there is no such file.
    fn prefix<'a>(
        &'a self,
        digest: &'a Digest,
        len: usize,
    ) -> BoxFuture<'a, io::Result<Option<Prefix>>>;

    /// Removes the file `digest`; `false` when there was none.
    fn remove<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, io::Result<bool>>;
}

/// Why [`inspect_stored`] has no answer.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file is refused: the build fails for this reason (retrying cannot help).
    #[error(transparent)]
    Refused(ArtifactError),
    /// The store failed: worth a retry.
    #[error("reading the model file: {0}")]
    Store(#[source] io::Error),
}

/// Reads the header of the stored file `digest` — 1 MiB first, more while the header goes
/// on, up to [`MAX_HEADER`] — and says what it holds.
///
/// # Cancel safety
///
/// Only reads: dropped, it leaves nothing to undo.
pub async fn inspect_stored(
    store: &dyn ArtifactStore,
    digest: &Digest,
) -> Result<ModelMetadata, InspectError> {
    let mut want = 1 << 20;
    loop {
        let prefix = store
            .prefix(digest, want)
            .await
            .map_err(InspectError::Store)?
            .ok_or(InspectError::Refused(ArtifactError::Missing(*digest)))?;
        let len = prefix.bytes.len();
        if len < want && (len as u64) < prefix.size {
            return Err(InspectError::Store(io::Error::other(format!(
                "the store gave {len} of the first {want} bytes of a {}-byte file",
                prefix.size
            ))));
        }
        match inspect(&prefix.bytes, prefix.size).map_err(InspectError::Refused)? {
            Some(meta) => return Ok(meta),
            None => want = (want * 4).min(MAX_HEADER),
        }
    }
}
