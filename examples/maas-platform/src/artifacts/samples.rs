//! Tiny, valid model files, made on the spot: for tests and for trying the platform out
//! (nothing is downloaded). Every byte of tensor data is zero.

/// A safetensors file holding `tensors`: `(name, dtype, shape)`, with `dtype` one of `F64`,
/// `F32`, `F16`, `BF16`, `I64`, `I32`, `I16`, `I8`, `U8` or `BOOL` (others are given 4 bytes
/// an element, which the builder refuses as corrupt — a way to make a lying file).
pub fn safetensors(tensors: &[(&str, &str, &[u64])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, dtype, shape) in tensors {
        let width = match *dtype {
            "F64" | "I64" => 8,
            "F16" | "BF16" | "I16" => 2,
            "I8" | "U8" | "BOOL" => 1,
            _ => 4,
        };
        let bytes = shape.iter().product::<u64>() * width;
        header.insert(
            (*name).to_owned(),
            serde_json::json!({ "dtype": dtype, "shape": shape,
                                "data_offsets": [offset, offset + bytes] }),
        );
        offset += bytes;
    }
    let header = serde_json::Value::Object(header).to_string().into_bytes();
    let mut file = Vec::with_capacity(8 + header.len() + offset as usize);
    file.extend_from_slice(&(header.len() as u64).to_le_bytes());
    file.extend_from_slice(&header);
    file.resize(file.len() + offset as usize, 0);
    file
}

/// A GGUF (version 3) file naming `architecture` and holding `tensors`: `(name, ggml type
/// code, shape)`, e.g. `0` (F32), `1` (F16), `8` (Q8_0, 32 elements a block) or `12` (Q4_K,
/// 256 a block). Tensors are aligned to 32 bytes.
pub fn gguf(architecture: &str, tensors: &[(&str, u32, &[u64])]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let bytes_of = |code: u32, elements: u64| -> u64 {
        let (block, size) = match code {
            0 => (1, 4),
            1 | 30 => (1, 2),
            2 => (32, 18),
            8 => (32, 34),
            12 => (256, 144),
            14 => (256, 210),
            _ => (1, 4),
        };
        elements / block * size
    };
    let mut f = Vec::new();
    f.extend_from_slice(b"GGUF");
    f.extend_from_slice(&3u32.to_le_bytes());
    f.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    f.extend_from_slice(&2u64.to_le_bytes());
    string(&mut f, "general.architecture");
    f.extend_from_slice(&8u32.to_le_bytes());
    string(&mut f, architecture);
    // An array of strings, as tokenizers write them: the parser steps over it.
    string(&mut f, "tokenizer.ggml.tokens");
    f.extend_from_slice(&9u32.to_le_bytes());
    f.extend_from_slice(&8u32.to_le_bytes());
    f.extend_from_slice(&3u64.to_le_bytes());
    for t in ["<s>", "</s>", "hello"] {
        string(&mut f, t);
    }
    let mut offset = 0u64;
    for (name, code, shape) in tensors {
        string(&mut f, name);
        f.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in *shape {
            f.extend_from_slice(&d.to_le_bytes());
        }
        f.extend_from_slice(&code.to_le_bytes());
        f.extend_from_slice(&offset.to_le_bytes());
        offset += bytes_of(*code, shape.iter().product()).div_ceil(32) * 32;
    }
    f.resize(f.len().div_ceil(32) * 32, 0);
    f.resize(f.len() + offset as usize, 0);
    f
}
