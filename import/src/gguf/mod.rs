//! Reading GGUF files (llama.cpp's model format, versions 2 and 3): header,
//! metadata of every value type, tensor infos, and f32 dequantization of the
//! common tensor types. The file is memory-mapped; tensor bytes are borrowed
//! from the map and only the dequantized values are allocated.
//!
//! Format source: the GGUF specification in ggml's `docs/gguf.md`.

mod dequant;
mod error;
mod metadata;
pub mod model;
mod reader;
mod types;
pub mod writer;

pub use dequant::dequantize;
pub use error::{GgufError, GgufErrorKind};
pub use metadata::{Metadata, Value};
pub use types::GgmlType;

use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as GGUF stores them: innermost (contiguous) first, so a
    /// Hugging Face `[out, in]` matrix appears here as `[in, out]`.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The shape in row-major (Hugging Face / safetensors) order: `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An open, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    data_offset: u64,
}

/// The whole file's bytes (mapped or in memory).
impl AsRef<[u8]> for GgufFile {
    fn as_ref(&self) -> &[u8] {
        self.bytes.as_slice()
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`; every tensor's extent is checked against the file.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let err = |kind| GgufError {
            file: path.to_path_buf(),
            kind,
        };
        let file = File::open(path).map_err(|e| err(e.into()))?;
        // SAFETY: the map is read-only; like every mmap reader we rely on the file
        // not being truncated by another process while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| err(e.into()))?;
        GgufFile::from_bytes(path, Bytes::Mapped(map))
    }

    /// Parses a GGUF image held in memory; `name` is used in error messages.
    pub fn from_vec(name: &Path, data: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(name, Bytes::Owned(data))
    }

    fn from_bytes(path: &Path, bytes: Bytes) -> Result<GgufFile, GgufError> {
        let header = reader::parse_header(bytes.as_slice()).map_err(|kind| GgufError {
            file: path.to_path_buf(),
            kind,
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            bytes,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            alignment: header.alignment,
            data_offset: header.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wraps an error about this file's contents with its path.
    pub fn error(&self, kind: GgufErrorKind) -> GgufError {
        GgufError {
            file: self.path.clone(),
            kind,
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (bounds were checked when the file was opened).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.bytes.as_slice()[self.tensor_range(t)]
    }

    /// Where a tensor's bytes lie in the whole file ([`GgufFile::as_ref`]).
    pub fn tensor_range(&self, t: &TensorInfo) -> std::ops::Range<usize> {
        let start = (self.data_offset + t.offset) as usize;
        start..start + t.n_bytes as usize
    }

    /// The tensor's values as f32, in GGUF element order (innermost dimension fastest).
    pub fn dequantize(&self, t: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        dequantize(&t.name, t.ty, self.tensor_bytes(t), t.n_elements as usize)
            .map_err(|k| self.error(k))
    }
}
