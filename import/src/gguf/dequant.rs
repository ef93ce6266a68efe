//! Dequantizing ggml tensor data to f32.
//!
//! Block layouts and arithmetic follow ggml's reference `dequantize_row_*`
//! functions (ggml-quants.c), evaluated in the same order in f32 so results are
//! bit-identical to ggml and to the `gguf` Python package's `gguf.quants`
//! (checked against fixtures made with it, see `fixtures/gguf/make_fixture.py`).

use super::{GgmlType, GgufErrorKind};
use half::{bf16, f16};
use rayon::prelude::*;

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
        GgmlType::Q8_0 => par_blocks(src, &mut out, block_bytes, block_len, q8_0),
        GgmlType::Q4_0 => par_blocks(src, &mut out, block_bytes, block_len, q4_0),
        GgmlType::Q4_1 => par_blocks(src, &mut out, block_bytes, block_len, q4_1),
        GgmlType::Q4_K => par_blocks(src, &mut out, block_bytes, block_len, q4_k),
        GgmlType::Q6_K => par_blocks(src, &mut out, block_bytes, block_len, q6_k),
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

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// `{ f16 d; i8 qs[32] }`: x = d * q.
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = f32::from(q as i8) * d;
    }
}

/// `{ f16 d; u8 qs[16] }`: low nibbles are elements 0..16, high nibbles 16..32; x = (q - 8) * d.
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &q) in b[2..18].iter().enumerate() {
        lo[j] = f32::from((q & 0x0F) as i8 - 8) * d;
        hi[j] = f32::from((q >> 4) as i8 - 8) * d;
    }
}

/// `{ f16 d; f16 m; u8 qs[16] }`: x = q * d + m, nibbles as in Q4_0.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let (lo, hi) = out.split_at_mut(16);
    for (j, &q) in b[4..20].iter().enumerate() {
        lo[j] = f32::from(q & 0x0F) * d + m;
        hi[j] = f32::from(q >> 4) * d + m;
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8)
/// packed in the 12 `scales` bytes of a Q4_K block.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `{ f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }`, 256 elements in 8
/// sub-blocks of 32 with 6-bit scales and mins: x = (d * sc) * q - (dmin * m).
/// Each 32 bytes of `qs` hold two sub-blocks: low nibbles first, then high.
fn q4_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    for (chunk, y) in out.chunks_exact_mut(64).enumerate() {
        let q = &b[16 + chunk * 32..16 + chunk * 32 + 32];
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (lo, hi) = y.split_at_mut(32);
        for l in 0..32 {
            lo[l] = d1 * f32::from(q[l] & 0x0F) - m1;
            hi[l] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

/// `{ u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }`, 256 elements: each 6-bit
/// value is 4 low bits from `ql` and 2 high bits from `qh`, minus 32, times
/// `d * scale` of its 16-element group.
fn q6_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let sc = &b[192 + half * 8..192 + half * 8 + 8];
        let y = &mut out[half * 128..half * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = s(0) * f32::from(q1);
            y[l + 32] = s(2) * f32::from(q2);
            y[l + 64] = s(4) * f32::from(q3);
            y[l + 96] = s(6) * f32::from(q4);
        }
    }
}
