//! API keys and the admin token: how they are made, stored and checked.
//!
//! A key is `maas_<id>_<secret>`: `id` is 8 hex digits (32 random bits) that name the key
//! in listings and in the database, `secret` is 32 random bytes (256 bits, from the
//! operating system's generator) in unpadded base64url. Only the key's SHA-256 is stored —
//! the key has far too much entropy for a dictionary, so no slow hash is needed — and a
//! presented key is checked by looking its `id` up and comparing the digests in constant
//! time. The key itself is shown once, when it is created.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 of a key or token: what is stored and compared.
pub type KeyHash = [u8; 32];

/// A key just made: the whole key (shown once) and what is stored of it.
#[derive(Debug)]
pub struct NewKey {
    /// The key's public id (8 hex digits), which listings show and revocation names.
    pub id: String,
    /// The whole key, `maas_<id>_<secret>`.
    pub key: String,
    /// Its SHA-256.
    pub hash: KeyHash,
}

/// The operating system's random generator failed (it does not, on any supported system).
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random generator failed: {0}")]
pub struct RandomError(getrandom::Error);

/// Makes a new key.
pub fn generate() -> Result<NewKey, RandomError> {
    let mut id = [0u8; 4];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).map_err(RandomError)?;
    getrandom::fill(&mut secret).map_err(RandomError)?;
    let id = format!("{:08x}", u32::from_be_bytes(id));
    let key = format!(
        "maas_{id}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let hash = digest(&key);
    Ok(NewKey { id, key, hash })
}

/// Makes a random admin token (32 bytes, base64url) for when none is configured.
pub fn generate_token() -> Result<String, RandomError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(RandomError)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret))
}

/// The SHA-256 of `secret`.
pub fn digest(secret: &str) -> KeyHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether two digests are equal, taking the same time wherever they differ.
pub fn same(a: &KeyHash, b: &KeyHash) -> bool {
    a.ct_eq(b).into()
}

/// The id of a presented key, if it has the shape of one (`maas_<8 hex>_<43 base64url>`);
/// anything else is refused without a database lookup.
pub fn id_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("maas_")?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == 8
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(id)
}

/// The bearer credential of an `Authorization` header value (`Bearer <credential>`, the
/// scheme in any case).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, credential) = value.trim().split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_has_its_id_inside_and_its_digest_alongside() {
        let k = generate().unwrap();
        assert_eq!(id_of(&k.key), Some(k.id.as_str()));
        assert_eq!(k.key.len(), "maas_".len() + 8 + 1 + 43);
        assert!(same(&k.hash, &digest(&k.key)));
        let other = generate().unwrap();
        assert_ne!(k.key, other.key);
        assert!(!same(&k.hash, &other.hash));
    }

    #[test]
    fn the_comparison_tells_every_differing_byte() {
        let a = digest("maas_0000abcd_x");
        assert!(same(&a, &a.clone()));
        for i in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert!(!same(&a, &b), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn malformed_keys_and_headers_are_refused() {
        let k = generate().unwrap().key;
        for bad in [
            "",
            "maas_",
            "maas_0000abcd",
            "maas_0000ABCD_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "maas_0000abc_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "maas_0000abcd_aaaa",
            "maas_0000abcd_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=",
            "sk-0000abcd_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(id_of(bad), None, "{bad:?}");
        }
        assert_eq!(bearer(&format!("Bearer {k}")), Some(k.as_str()));
        assert_eq!(bearer(&format!("bearer  {k} ")), Some(k.as_str()));
        assert_eq!(bearer(&format!("Basic {k}")), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer(&k), None);
    }
}
