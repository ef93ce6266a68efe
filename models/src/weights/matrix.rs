//! A row-major weight matrix held in f32, f16, bf16 or a ggml block
//! quantization (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K; see [`super::quant`]).
//!
//! The CPU engines keep matrices at a chosen weight precision: f32, rounded to
//! 16 bits (as the wafer holds them), or as a GGUF file stores them. Arithmetic
//! is always f32: 16-bit and quantized rows are widened inside the kernels (see
//! `reference::ops` and `reference::qdot`), which also cuts the bytes that
//! decode has to stream from memory per token.

use super::quant::QuantData;
use half::{bf16, f16};
use wafer_core::DType;

/// Matrix storage. 16-bit variants hold the raw IEEE / bfloat16 bit patterns;
/// `Quant` holds ggml blocks, row after row, as the file stores them.
#[derive(Debug, Clone)]
pub enum MatrixData {
    F32(Vec<f32>),
    F16(Vec<u16>),
    BF16(Vec<u16>),
    Quant(QuantData),
}

/// A `rows x cols` row-major matrix (`[out_features, in_features]` for a Linear).
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: MatrixData,
}

/// Rounds f32 values to `dtype` and back, so vectors (norm weights, biases)
/// carry the same precision as the matrices.
pub fn round_to(values: &mut [f32], dtype: DType) {
    match dtype {
        DType::F32 => {}
        DType::F16 => values
            .iter_mut()
            .for_each(|v| *v = f16::from_f32(*v).to_f32()),
        DType::BF16 => values
            .iter_mut()
            .for_each(|v| *v = bf16::from_f32(*v).to_f32()),
    }
}

impl Matrix {
    /// Builds a matrix from f32 values, rounding them to `dtype`.
    pub fn from_f32(rows: usize, cols: usize, values: Vec<f32>, dtype: DType) -> Matrix {
        assert_eq!(values.len(), rows * cols, "matrix data length");
        let data = match dtype {
            DType::F32 => MatrixData::F32(values),
            DType::F16 => {
                MatrixData::F16(values.iter().map(|v| f16::from_f32(*v).to_bits()).collect())
            }
            DType::BF16 => MatrixData::BF16(
                values
                    .iter()
                    .map(|v| bf16::from_f32(*v).to_bits())
                    .collect(),
            ),
        };
        Matrix { rows, cols, data }
    }

    /// The precision of the values: a quantized matrix's weights decode
    /// exactly to f32.
    pub fn dtype(&self) -> DType {
        match self.data {
            MatrixData::F32(_) | MatrixData::Quant(_) => DType::F32,
            MatrixData::F16(_) => DType::F16,
            MatrixData::BF16(_) => DType::BF16,
        }
    }

    /// How the matrix is stored: `F32`, `F16`, `BF16` or a ggml type name (`Q4_1`).
    pub fn stored_type(&self) -> &'static str {
        match &self.data {
            MatrixData::F32(_) => "F32",
            MatrixData::F16(_) => "F16",
            MatrixData::BF16(_) => "BF16",
            MatrixData::Quant(q) => q.ty.name(),
        }
    }

    /// Bytes the matrix occupies in memory (or in the mapped file).
    pub fn size_bytes(&self) -> usize {
        match &self.data {
            MatrixData::Quant(q) => q.bytes.len(),
            _ => self.rows * self.cols * self.dtype().size_bytes() as usize,
        }
    }

    /// Widens rows `r0..r1` to f32 into `out` (length `(r1 - r0) * cols`).
    pub fn rows_to_f32(&self, r0: usize, r1: usize, out: &mut [f32]) {
        let (a, b) = (r0 * self.cols, r1 * self.cols);
        match &self.data {
            MatrixData::F32(v) => out.copy_from_slice(&v[a..b]),
            MatrixData::F16(v) => {
                let src: &[f16] = bytemuck::cast_slice(&v[a..b]);
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, out);
            }
            MatrixData::BF16(v) => {
                let src: &[bf16] = bytemuck::cast_slice(&v[a..b]);
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, out);
            }
            MatrixData::Quant(q) => {
                let rb = q.row_bytes(self.cols);
                crate::reference::qdot::decode(q.ty, &q.bytes.as_slice()[r0 * rb..r1 * rb], out);
            }
        }
    }
}
