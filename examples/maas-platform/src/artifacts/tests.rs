//! The header checks: exact metadata for valid files; a typed reason, never a panic, for
//! everything else.

use proptest::prelude::*;

use super::*;

fn check(file: &[u8]) -> Result<ModelMetadata, ArtifactError> {
    inspect(file, file.len() as u64).map(|m| m.expect("a whole file gets an answer"))
}

fn refused(file: &[u8]) -> String {
    check(file).unwrap_err().to_string()
}

/// Asserts that `file` is refused with a reason of this kind (`truncated:`, …).
fn refused_as(file: &[u8], kind: &str) {
    let reason = refused(file);
    assert!(reason.starts_with(kind), "{reason}");
}

/// A safetensors file of this JSON header and `data` zero bytes.
fn with_header(header: &[u8], data: usize) -> Vec<u8> {
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.resize(file.len() + data, 0);
    file
}

fn llama() -> Vec<u8> {
    samples::gguf(
        "llama",
        &[
            ("token_embd.weight", 12, &[256, 4]),
            ("output_norm.weight", 0, &[256]),
            ("blk.0.attn_q.weight", 8, &[64, 64]),
        ],
    )
}

#[test]
fn safetensors_metadata_is_exact() {
    let file = samples::safetensors(&[
        ("embed", "F32", &[4, 8]),
        ("norm", "BF16", &[8]),
        ("mask", "U8", &[2, 3]),
    ]);
    assert_eq!(
        check(&file).unwrap(),
        ModelMetadata {
            format: Format::Safetensors,
            tensors: 3,
            parameters: 32 + 8 + 6,
            dtypes: vec!["BF16".into(), "F32".into(), "U8".into()],
            architecture: None,
        }
    );
}

#[test]
fn gguf_metadata_is_exact() {
    assert_eq!(
        check(&llama()).unwrap(),
        ModelMetadata {
            format: Format::Gguf,
            tensors: 3,
            parameters: 1024 + 256 + 4096,
            dtypes: vec!["F32".into(), "Q4_K".into(), "Q8_0".into()],
            architecture: Some("llama".into()),
        }
    );
}

#[test]
fn a_header_longer_than_the_prefix_asks_for_more() {
    let file = llama();
    assert_eq!(inspect(&file[..40], file.len() as u64), Ok(None));
    let st = samples::safetensors(&[("w", "F32", &[2])]);
    assert_eq!(inspect(&st[..4], st.len() as u64), Ok(None));
    assert_eq!(inspect(&st[..20], st.len() as u64), Ok(None));
}

#[test]
fn truncated_files_are_refused() {
    for file in [samples::safetensors(&[("w", "F32", &[16])]), llama()] {
        // Cut in the header, in the tensor data, and one byte short.
        for cut in [12, file.len() - 30, file.len() - 1] {
            let reason = refused(&file[..cut]);
            assert!(reason.starts_with("truncated:"), "cut at {cut}: {reason}");
        }
    }
}

#[test]
fn lying_safetensors_headers_are_refused() {
    // A header length past the end of the file.
    let mut huge = samples::safetensors(&[("w", "F32", &[4])]);
    huge[..8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    refused_as(&huge, "truncated:");
    // A tensor whose byte range does not match its shape.
    let lying = with_header(
        br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}}"#,
        12,
    );
    refused_as(&lying, "corrupt:");
    // Bytes after the last tensor.
    let mut long = samples::safetensors(&[("w", "F32", &[4])]);
    long.extend_from_slice(&[0; 3]);
    assert_eq!(refused(&long), "corrupt: 3 bytes follow the last tensor");
    // A dtype no one defined, and a header that is not JSON.
    let odd = samples::safetensors(&[("w", "F7", &[4])]);
    refused_as(&odd, "unsupported:");
    let mut garbage = samples::safetensors(&[("w", "F32", &[4])]);
    garbage[12] = b'\xff';
    refused_as(&garbage, "corrupt:");
    // A shape whose element count overflows.
    let overflow = with_header(
        br#"{"w":{"dtype":"F32","shape":[18446744073709551615,4],"data_offsets":[0,4]}}"#,
        4,
    );
    refused_as(&overflow, "corrupt:");
}

#[test]
fn lying_gguf_headers_are_refused() {
    // A tensor count far beyond what the file holds.
    let mut many = llama();
    many[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    // The parser reads on into the padding (zeros: a nameless tensor of no dimensions).
    assert_eq!(
        refused(&many),
        "corrupt: tensor `` has 0 dimensions (1 to 4)"
    );
    // Cut where the third tensor entry ends (byte 316): the fourth is missing.
    many.truncate(316);
    refused_as(&many, "truncated:");
    // A tensor of an element type this builder does not know.
    let odd = samples::gguf("llama", &[("w", 99, &[32])]);
    assert_eq!(refused(&odd), "unsupported: tensor `w` has element type 99");
    // Q8_0 packs 32 elements a block: 33 cannot be stored.
    let ragged = samples::gguf("llama", &[("w", 8, &[33])]);
    refused_as(&ragged, "corrupt:");
    // Versions 1 and 4, and a big-endian file.
    for (version, reason) in [
        (1u32.to_le_bytes(), "unsupported: GGUF version 1"),
        (4u32.to_le_bytes(), "unsupported: GGUF version 4"),
        (3u32.to_be_bytes(), "unsupported: big-endian GGUF"),
    ] {
        let mut file = llama();
        file[4..8].copy_from_slice(&version);
        assert_eq!(refused(&file), reason);
    }
    // Two tensors named alike.
    let twice = samples::gguf("llama", &[("w", 0, &[8]), ("w", 0, &[8])]);
    assert_eq!(refused(&twice), "corrupt: tensor `w` is named twice");
    // Dimensions ggml cannot have.
    let flat = samples::gguf("llama", &[("w", 0, &[])]);
    refused_as(&flat, "corrupt:");
    // No tensors at all.
    assert_eq!(
        refused(&samples::gguf("llama", &[])),
        "unsupported: the file holds no tensors"
    );
}

#[test]
fn other_files_are_unsupported() {
    for file in [&b""[..], b"hi", b"PK\x03\x04 a zip archive, not a model"] {
        assert_eq!(refused(file), "unsupported: not a safetensors or GGUF file");
    }
}

#[test]
fn a_header_past_the_limit_is_refused_with_the_limit() {
    let mut file = samples::safetensors(&[("w", "F32", &[4])]);
    let declared = MAX_HEADER as u64 + 1;
    file[..8].copy_from_slice(&declared.to_le_bytes());
    // The file claims to be big enough: the length alone decides.
    let err = inspect(&file, declared + 100).unwrap_err();
    assert_eq!(err, ArtifactError::HeaderTooLarge { limit: MAX_HEADER });
}

#[test]
fn digests_read_back_and_refuse_other_text() {
    let d: Digest = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        .parse()
        .unwrap();
    assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    for bad in [
        "",
        "sha256:",
        "md5:00",
        "sha256:zz4d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
        "sha256:é4d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcd",
    ] {
        assert!(bad.parse::<Digest>().is_err(), "{bad}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes, any claimed size: an answer, a request for more, or a typed refusal.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), extra in 0u64..1 << 40) {
        let _ = inspect(&bytes, bytes.len() as u64 + extra);
        let _ = inspect(&bytes, bytes.len() as u64);
    }

    /// Valid files with a byte overwritten: read or refused, never a panic.
    #[test]
    fn damaged_files_never_panic(gguf in any::<bool>(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut file = if gguf { llama() } else { safetensors_sample() };
        let i = at.index(file.len());
        file[i] = byte;
        let _ = check(&file);
    }

    /// Valid files cut anywhere short of their end are always refused.
    #[test]
    fn cut_files_are_refused(gguf in any::<bool>(), cut in any::<prop::sample::Index>()) {
        let file = if gguf { llama() } else { safetensors_sample() };
        let short = cut.index(file.len());
        prop_assert!(check(&file[..short]).is_err());
    }
}

fn safetensors_sample() -> Vec<u8> {
    samples::safetensors(&[("a", "F16", &[3, 5]), ("b", "I64", &[2])])
}
