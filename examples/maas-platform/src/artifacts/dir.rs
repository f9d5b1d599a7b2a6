//! [`DirStore`]: model files in a directory, one file per digest.

use std::io;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use futures::future::BoxFuture;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ArtifactStore, Body, Digest, Prefix, PutError, Stored};

/// How long an unfinished upload sits untouched before [`DirStore::open`] removes it.
const STALE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Model files in `<root>/sha256/<hex>`. An upload is written to `<root>/tmp/` and renamed
/// into place once complete and synced, so a reader never sees half a file; what a crash
/// leaves in `tmp/` is removed by a later [`DirStore::open`] once an hour old.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// Opens (and creates) the store at `root`, clearing uploads a crash left unfinished.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<DirStore> {
        let root = root.into();
        std::fs::create_dir_all(root.join("sha256"))?;
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        // Replicas may share the directory: only uploads idle for an hour are dead ones (a
        // live upload writes at least every request timeout).
        for entry in std::fs::read_dir(&tmp)? {
            let entry = entry?;
            let idle = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|idle| idle >= STALE);
            if idle {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(DirStore { root })
    }

    /// Where the file `digest` is (or would be).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("sha256").join(digest.hex())
    }
}

/// Removes an unfinished upload when dropped (an error, or the request going away).
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn write(path: &Path, mut body: Body<'_>, max: u64) -> Result<(Digest, u64), PutError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(PutError::Store)?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(PutError::Body)?;
        size += chunk.len() as u64;
        if size > max {
            return Err(PutError::TooLarge { max });
        }
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(PutError::Store)?;
    }
    file.sync_all().await.map_err(PutError::Store)?;
    Ok((Digest::from_bytes(hash.finalize().into()), size))
}

impl ArtifactStore for DirStore {
    fn put<'a>(&'a self, body: Body<'a>, max: u64) -> BoxFuture<'a, Result<Stored, PutError>> {
        Box::pin(async move {
            let name = format!("{:016x}.part", fastrand::u64(..));
            let tmp = self.root.join("tmp").join(name);
            let mut partial = Partial(Some(tmp.clone()));
            let (digest, size) = write(&tmp, body, max).await?;
            let path = self.path(&digest);
            // A hard link puts the file in place only if none is there — atomically, so of
            // two identical uploads at once exactly one is `new`. `partial` then removes the
            // temporary name (or this copy, when the bytes were there already).
            let new = match tokio::fs::hard_link(&tmp, &path).await {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                Err(_) => {
                    // A filesystem without hard links: the same, less atomically.
                    let new = !tokio::fs::try_exists(&path)
                        .await
                        .map_err(PutError::Store)?;
                    if new {
                        tokio::fs::rename(&tmp, &path)
                            .await
                            .map_err(PutError::Store)?;
                        partial.0 = None;
                    }
                    new
                }
            };
            drop(partial);
            Ok(Stored { digest, size, new })
        })
    }

    fn prefix<'a>(
        &'a self,
        digest: &'a Digest,
        len: usize,
    ) -> BoxFuture<'a, io::Result<Option<Prefix>>> {
        Box::pin(async move {
            let file = match tokio::fs::File::open(self.path(digest)).await {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let size = file.metadata().await?.len();
            let mut bytes = Vec::with_capacity(len.min(size as usize));
            file.take(len as u64).read_to_end(&mut bytes).await?;
            Ok(Some(Prefix { bytes, size }))
        })
    }

    fn remove<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, io::Result<bool>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path(digest)).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: Vec<io::Result<&'static [u8]>>) -> Body<'static> {
        futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| c.map(axum::body::Bytes::from_static)),
        )
        .boxed()
    }

    fn store() -> (DirStore, PathBuf) {
        let root = std::env::temp_dir().join(format!("maas-artifacts-{:016x}", fastrand::u64(..)));
        (DirStore::open(&root).unwrap(), root)
    }

    fn leftovers(root: &Path) -> usize {
        std::fs::read_dir(root.join("tmp")).unwrap().count()
    }

    #[tokio::test]
    async fn a_file_is_stored_by_its_sha256_once() {
        let (s, root) = store();
        let a = s
            .put(body(vec![Ok(b"hello "), Ok(b"world")]), 100)
            .await
            .unwrap();
        // sha256("hello world")
        assert_eq!(
            a.digest.to_string(),
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!((a.size, a.new), (11, true));
        let again = s.put(body(vec![Ok(b"hello world")]), 100).await.unwrap();
        assert_eq!((again.digest, again.new), (a.digest, false));
        let p = s.prefix(&a.digest, 5).await.unwrap().unwrap();
        assert_eq!((p.bytes.as_slice(), p.size), (&b"hello"[..], 11));
        assert_eq!(leftovers(&root), 0);
        assert!(s.remove(&a.digest).await.unwrap());
        assert!(s.prefix(&a.digest, 5).await.unwrap().is_none());
        assert!(!s.remove(&a.digest).await.unwrap());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn of_identical_uploads_at_once_exactly_one_is_new() {
        let (s, root) = store();
        let puts = (0..8).map(|_| s.put(body(vec![Ok(b"same "), Ok(b"bytes")]), 100));
        let stored = futures::future::join_all(puts).await;
        let new = stored.iter().filter(|r| r.as_ref().unwrap().new).count();
        assert_eq!(new, 1);
        assert_eq!(leftovers(&root), 0);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn a_body_over_the_maximum_or_failing_leaves_nothing() {
        let (s, root) = store();
        let err = s
            .put(body(vec![Ok(b"12345"), Ok(b"678")]), 6)
            .await
            .unwrap_err();
        assert!(matches!(err, PutError::TooLarge { max: 6 }), "{err}");
        let err = s
            .put(body(vec![Ok(b"12"), Err(io::Error::other("reset"))]), 6)
            .await
            .unwrap_err();
        assert!(matches!(err, PutError::Body(_)), "{err}");
        assert_eq!(leftovers(&root), 0);
        assert_eq!(std::fs::read_dir(root.join("sha256")).unwrap().count(), 0);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn an_upload_dropped_half_way_leaves_nothing() {
        let (s, root) = store();
        let (tx, rx) = futures::channel::mpsc::unbounded::<io::Result<axum::body::Bytes>>();
        tx.unbounded_send(Ok(axum::body::Bytes::from_static(b"part")))
            .unwrap();
        let put = s.put(rx.boxed(), 100);
        // Polled until it waits for more, then dropped, as when a client hangs up.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(100), put)
                .await
                .is_err()
        );
        assert_eq!(leftovers(&root), 0);
        drop(tx);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn opening_clears_what_a_crash_left_but_not_a_live_upload() {
        let (_, root) = store();
        let dead = root.join("tmp").join("dead.part");
        std::fs::write(&dead, b"half").unwrap();
        let old = std::time::SystemTime::now() - STALE - std::time::Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&dead)
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::fs::write(root.join("tmp").join("live.part"), b"half").unwrap();
        DirStore::open(&root).unwrap();
        assert_eq!(leftovers(&root), 1);
        assert!(!dead.exists());
        std::fs::remove_dir_all(root).unwrap();
    }
}
