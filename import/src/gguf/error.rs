//! Errors from reading a GGUF file. Each names the file, then what was being read
//! (a header field, a metadata key, a tensor) and what was expected versus found.

use std::path::PathBuf;
use thiserror::Error;

/// An error about one GGUF file.
#[derive(Debug, Error)]
#[error("GGUF file {}: {kind}", file.display())]
pub struct GgufError {
    pub file: PathBuf,
    pub kind: GgufErrorKind,
}

#[derive(Debug, Error)]
pub enum GgufErrorKind {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file: expected magic bytes \"GGUF\", found {found:?}")]
    BadMagic { found: String },
    #[error("unsupported GGUF version {found} (expected 2 or 3){hint}")]
    UnsupportedVersion { found: u32, hint: &'static str },
    #[error(
        "file ends early while reading {what}: it needs {needed} bytes at offset {offset}, \
         but the file is {file_len} bytes long"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        file_len: u64,
    },
    #[error("{what} is {found}, more than the limit of {max}")]
    TooLarge { what: String, found: u64, max: u64 },
    #[error("{what}: unknown metadata value type {found} (expected 0 to 12)")]
    BadValueType { what: String, found: u32 },
    #[error("{what} is not valid UTF-8")]
    BadUtf8 { what: String },
    #[error("{what}: a boolean must be 0 or 1, found {found}")]
    BadBool { what: String, found: u8 },
    #[error("metadata key `{key}` appears twice")]
    DuplicateKey { key: String },
    #[error("tensor `{tensor}` appears twice")]
    DuplicateTensor { tensor: String },
    #[error("tensor `{tensor}`: unknown ggml type id {found}")]
    UnknownTensorType { tensor: String, found: u32 },
    #[error(
        "tensor `{tensor}` has type {ty}, which wafer cannot dequantize \
         (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)"
    )]
    UnsupportedTensorType { tensor: String, ty: String },
    #[error("tensor `{tensor}`: {reason}")]
    BadShape { tensor: String, reason: String },
    #[error(
        "tensor `{tensor}`: its data (bytes {start}..{end}) runs past the end of the file \
         ({file_len} bytes)"
    )]
    DataPastEof {
        tensor: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    #[error(
        "tensor `{tensor}`: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    Misaligned {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("`general.alignment` is {found}, expected a non-zero power of two")]
    BadAlignment { found: u64 },
    #[error("metadata key `{key}` is missing")]
    MissingKey { key: String },
    #[error("metadata key `{key}` holds {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
}
