//! Dequantizing ggml tensor data to f32.
//!
//! Block formats are decoded by `wafer_models::weights::quant` (the reference
//! engine's decoder: ggml's reference `dequantize_row_*` in the same f32
//! operations and order), so results are bit-identical to ggml and to the `gguf`
//! Python package's `gguf.quants` (checked against fixtures made with it, see
//! `fixtures/gguf/make_fixture.py`).

use super::{GgmlType, GgufErrorKind};
use half::{bf16, f16};
use rayon::prelude::*;
use wafer_models::weights::quant::QuantType;

/// Blocks per rayon task: large enough to amortise scheduling, small enough to
/// spread a 576-wide row set over both cores.
const BLOCKS_PER_TASK: usize = 1024;

/// Dequantizes `src` (the raw bytes of tensor `tensor`, of type `ty`, holding
/// `n_elements` values) to f32.
pub fn dequantize(
    tensor: &str,
    ty: GgmlType,
    src: &[u8],
    n_elements: usize,
) -> Result<Vec<f32>, GgufErrorKind> {
    if !ty.is_dequantizable() {
        return Err(GgufErrorKind::UnsupportedTensorType {
            tensor: tensor.to_string(),
            ty: ty.name().to_string(),
        });
    }
    let block_len = ty.block_len() as usize;
    let block_bytes = ty.block_bytes() as usize;
    if !n_elements.is_multiple_of(block_len) || src.len() != n_elements / block_len * block_bytes {
        return Err(GgufErrorKind::BadShape {
            tensor: tensor.to_string(),
            reason: format!(
                "{n_elements} {ty} elements need {} bytes, found {}",
                n_elements.div_ceil(block_len) * block_bytes,
                src.len()
            ),
        });
    }
    let mut out = vec![0f32; n_elements];
    match ty {
        GgmlType::F32 => par_blocks(src, &mut out, 4, 1, |b, o| {
            o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }),
        GgmlType::F16 => par_blocks(src, &mut out, 2, 1, |b, o| {
            o[0] = f16::from_le_bytes([b[0], b[1]]).to_f32()
        }),
        GgmlType::BF16 => par_blocks(src, &mut out, 2, 1, |b, o| {
            o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()
        }),
        // The block formats are decoded by the reference engine's own decoder,
        // so a converted model holds exactly the weights a GGUF run multiplies.
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q6_K => {
            let q = QuantType::from_name(ty.name()).expect("a ggml block type it decodes");
            par_blocks(src, &mut out, block_bytes, block_len, |b, o| {
                q.decode_block(b, o)
            })
        }
        _ => unreachable!("checked by is_dequantizable above"),
    }
    Ok(out)
}

/// Runs `f` on every (input block, output block) pair, in parallel over groups of blocks.
fn par_blocks(
    src: &[u8],
    dst: &mut [f32],
    block_bytes: usize,
    block_len: usize,
    f: impl Fn(&[u8], &mut [f32]) + Sync + Send,
) {
    dst.par_chunks_mut(block_len * BLOCKS_PER_TASK)
        .zip(src.par_chunks(block_bytes * BLOCKS_PER_TASK))
        .for_each(|(out, inp)| {
            for (o, b) in out
                .chunks_exact_mut(block_len)
                .zip(inp.chunks_exact(block_bytes))
            {
                f(b, o);
            }
        });
}
