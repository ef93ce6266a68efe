//! The CPU kernels of the reference forward pass: matrix-vector (decode) and
//! matrix-matrix (prefill) products against a [`Matrix`] in any weight
//! precision or ggml quantization (row kernels in `qdot`), RMSNorm and SiLU·mul. All arithmetic and accumulation is f32.
//!
//! Decode is bound by memory bandwidth (every weight is read once per token), so
//! the GEMV widens 16-bit weights in registers (F16C / shifts) and uses AVX2+FMA
//! when the CPU has them (checked at run time), with a portable fallback.
//! Prefill goes through `ndarray`'s f32 GEMM (matrixmultiply), widening 16-bit
//! weights one row tile at a time.

use super::qdot;
use crate::weights::matrix::{Matrix, MatrixData};
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// Output rows per rayon task in the GEMV: large enough to amortise scheduling,
/// small enough to balance 2-16 cores.
const GEMV_ROWS_PER_TASK: usize = 64;
/// Weight rows widened to f32 per GEMM tile.
const GEMM_ROWS_PER_TILE: usize = 128;

/// `out[r] = sum_c w[r][c] * x[c]` for every row `r` (`out.len() == w.rows`).
pub fn gemv(w: &Matrix, x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), w.cols, "gemv: input length");
    assert_eq!(out.len(), w.rows, "gemv: output length");
    out.par_chunks_mut(GEMV_ROWS_PER_TASK)
        .enumerate()
        .for_each(|(t, chunk)| rows_dot(w, t * GEMV_ROWS_PER_TASK, x, chunk));
}

/// `out[i]` = row `r0 + i` of `w` dotted with `x`, whatever the storage (the
/// kernel is chosen once for the rows).
pub(crate) fn rows_dot(w: &Matrix, r0: usize, x: &[f32], out: &mut [f32]) {
    let cols = w.cols;
    let rows = |rb: usize, dot: &dyn Fn(usize) -> f32, out: &mut [f32]| {
        for (i, o) in out.iter_mut().enumerate() {
            *o = dot((r0 + i) * rb);
        }
    };
    match &w.data {
        MatrixData::Quant(q) => {
            let (bytes, rb, k) = (
                q.bytes.as_slice(),
                q.row_bytes(cols),
                qdot::row_kernel(q.ty),
            );
            rows(rb, &|a| k(&bytes[a..a + rb], x), out)
        }
        MatrixData::F32(v) => rows(cols, &|a| dot_f32(&v[a..a + cols], x), out),
        MatrixData::F16(v) => rows(cols, &|a| dot_f16(&v[a..a + cols], x), out),
        MatrixData::BF16(v) => rows(cols, &|a| dot_bf16(&v[a..a + cols], x), out),
    }
}

/// Query head `head` of `q` over the cached keys and values (one score per
/// entry of `scores`, whose length is the number of positions): the scaled
/// dot products, their softmax, and the weighted sum of values into `out`
/// (`head_dim` values). The query-key dot products use AVX-512 or AVX2+FMA
/// when the CPU has them (checked at run time), else a portable loop; the
/// weighted sum is the same loop everywhere, compiled for each.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_head(
    head: usize,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    head_dim: usize,
    kv_dim: usize,
    group_size: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let g = head / group_size;
    let qh = &q[head * head_dim..(head + 1) * head_dim];
    let keys = |t: usize| &k_cache[t * kv_dim + g * head_dim..t * kv_dim + (g + 1) * head_dim];
    let values = |t: usize| &v_cache[t * kv_dim + g * head_dim..t * kv_dim + (g + 1) * head_dim];
    let scale = 1.0 / (head_dim as f32).sqrt();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && has_avx2_fma() {
            // SAFETY: the CPU has the features these functions are compiled for.
            unsafe {
                for (t, s) in scores.iter_mut().enumerate() {
                    *s = x86::dot_f32_512(qh, keys(t)) * scale;
                }
                softmax(scores);
                return x86::weighted_sum_512(scores, values, out);
            }
        }
        if has_avx2_fma() {
            // SAFETY: as above.
            unsafe {
                for (t, s) in scores.iter_mut().enumerate() {
                    *s = x86::dot_f32(qh, keys(t)) * scale;
                }
                softmax(scores);
                return x86::weighted_sum_256(scores, values, out);
            }
        }
    }
    for (t, s) in scores.iter_mut().enumerate() {
        *s = portable_dot(keys(t).iter().copied(), qh) * scale;
    }
    softmax(scores);
    weighted_sum(scores, values, out);
}

/// `out = sum_t p[t] * rows(t)`, row by row in position order.
#[inline(always)]
fn weighted_sum<'a>(p: &[f32], rows: impl Fn(usize) -> &'a [f32], out: &mut [f32]) {
    out.iter_mut().for_each(|v| *v = 0.0);
    for (t, p) in p.iter().enumerate() {
        out.iter_mut().zip(rows(t)).for_each(|(o, v)| *o += p * v);
    }
}

/// `out = x · wᵀ` for a batch of rows: `x` is `[n, cols]`, `out` is `[n, rows]`.
pub fn gemm(w: &Matrix, x: ArrayView2<f32>, mut out: ArrayViewMut2<f32>) {
    assert_eq!(x.ncols(), w.cols, "gemm: input width");
    assert_eq!(out.ncols(), w.rows, "gemm: output width");
    assert_eq!(out.nrows(), x.nrows(), "gemm: batch");
    let cols = w.cols;
    let tiles: Vec<_> = out
        .axis_chunks_iter_mut(ndarray::Axis(1), GEMM_ROWS_PER_TILE)
        .enumerate()
        .collect();
    tiles.into_par_iter().for_each(|(t, mut out_tile)| {
        let r0 = t * GEMM_ROWS_PER_TILE;
        let r1 = r0 + out_tile.ncols();
        let len = (r1 - r0) * cols;
        let mul = |tile: &[f32], out_tile: &mut ArrayViewMut2<f32>| {
            let tile = ArrayView2::from_shape((r1 - r0, cols), tile).expect("tile shape");
            ndarray::linalg::general_mat_mul(1.0, &x, &tile.t(), 0.0, out_tile);
        };
        match &w.data {
            MatrixData::F32(v) => mul(&v[r0 * cols..r1 * cols], &mut out_tile),
            _ => TILE.with_borrow_mut(|buf| {
                // Each worker thread widens into its own buffer, grown (and
                // zeroed) once, then overwritten tile after tile.
                if buf.len() < len {
                    buf.resize(len, 0.0);
                }
                w.rows_to_f32(r0, r1, &mut buf[..len]);
                mul(&buf[..len], &mut out_tile);
            }),
        }
    });
}

thread_local! {
    /// The GEMM's widened weight tile, one per thread.
    static TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Dot product of two f32 slices of equal length.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { x86::dot_f32(a, b) };
    }
    portable_dot(a.iter().copied(), b)
}

/// Dot product of f16 bit patterns (widened to f32) with f32 values.
pub fn dot_f16(a: &[u16], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() && std::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU supports AVX2, FMA and F16C (checked above).
        return unsafe { x86::dot_f16(a, b) };
    }
    portable_dot(a.iter().map(|&h| half::f16::from_bits(h).to_f32()), b)
}

/// Dot product of bf16 bit patterns (widened to f32) with f32 values.
pub fn dot_bf16(a: &[u16], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { x86::dot_bf16(a, b) };
    }
    portable_dot(a.iter().map(|&h| f32::from_bits((h as u32) << 16)), b)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Eight independent accumulators let the compiler vectorise without reassociating.
pub(crate) fn portable_dot(a: impl Iterator<Item = f32>, b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (i, (x, y)) in a.zip(b).enumerate() {
        acc[i % 8] += x * y;
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// The sum of a vector's eight lanes (also used by the quantized kernels).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Four accumulators of 8 lanes hide the FMA latency: the group of eight
    /// elements starting at `8 * g` goes to accumulator `g % 4`, groups in
    /// order, then `(acc0 + acc1) + (acc2 + acc3)` is summed horizontally; the
    /// last `n % 8` elements are scalar. `reference::qdot` sums quantized rows in
    /// exactly this order, so their results are bit-identical.
    macro_rules! dot_body {
        ($a:ident, $b:ident, $load:expr) => {{
            let n = $a.len().min($b.len());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (k, a) in acc.iter_mut().enumerate() {
                    let j = i + 8 * k;
                    *a = _mm256_fmadd_ps($load(j), _mm256_loadu_ps($b.as_ptr().add(j)), *a);
                }
                i += 32;
            }
            while i + 8 <= n {
                let a = &mut acc[(i / 8) % 4];
                *a = _mm256_fmadd_ps($load(i), _mm256_loadu_ps($b.as_ptr().add(i)), *a);
                i += 8;
            }
            (i, hsum(sum4(acc)))
        }};
    }

    /// `(acc0 + acc1) + (acc2 + acc3)`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum4(acc: [__m256; 4]) -> __m256 {
        _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))
    }

    /// A short dot product (an attention head's query and key): four 16-lane
    /// accumulators, summed in a fixed order.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn dot_f32_512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let o = i + 16 * j;
                *acc =
                    _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(o)), _mm512_loadu_ps(pb.add(o)), *acc);
            }
            i += 64;
        }
        while i + 16 <= n {
            acc[0] = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i)),
                _mm512_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 16;
        }
        let v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        let mut sum = _mm512_reduce_add_ps(v);
        for k in i..n {
            sum += a[k] * b[k];
        }
        sum
    }

    /// [`super::weighted_sum`] compiled for AVX-512.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn weighted_sum_512<'a>(
        p: &[f32],
        rows: impl Fn(usize) -> &'a [f32],
        out: &mut [f32],
    ) {
        super::weighted_sum(p, rows, out)
    }

    /// [`super::weighted_sum`] compiled for AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_sum_256<'a>(
        p: &[f32],
        rows: impl Fn(usize) -> &'a [f32],
        out: &mut [f32],
    ) {
        super::weighted_sum(p, rows, out)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let load = |i: usize| _mm256_loadu_ps(a.as_ptr().add(i));
        let (i, mut s) = dot_body!(a, b, load);
        for j in i..a.len().min(b.len()) {
            s += a[j] * b[j];
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(a: &[u16], b: &[f32]) -> f32 {
        let load = |i: usize| _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i) as *const __m128i));
        let (i, mut s) = dot_body!(a, b, load);
        for j in i..a.len().min(b.len()) {
            s += half::f16::from_bits(a[j]).to_f32() * b[j];
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_bf16(a: &[u16], b: &[f32]) -> f32 {
        let load = |i: usize| {
            let h = _mm_loadu_si128(a.as_ptr().add(i) as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        };
        let (i, mut s) = dot_body!(a, b, load);
        for j in i..a.len().min(b.len()) {
            s += f32::from_bits((a[j] as u32) << 16) * b[j];
        }
        s
    }
}

/// Hugging Face `LlamaRMSNorm`: `w * x / sqrt(mean(x²) + eps)`, in f32.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f64, out: &mut [f32]) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (mean_sq + eps as f32).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * inv);
    }
}

/// SwiGLU's elementwise part: `gate = silu(gate) * up`, in place.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// In-place numerically stable softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::DType;

    fn naive(w: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
        (0..rows)
            .map(|r| {
                (0..cols)
                    .map(|c| w[r * cols + c] as f64 * x[c] as f64)
                    .sum::<f64>() as f32
            })
            .collect()
    }

    #[test]
    fn gemv_and_gemm_match_naive_products_at_every_precision() {
        // Odd sizes exercise the vector tails and partial tiles.
        let (rows, cols, n) = (131, 45, 3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
            .collect();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 8.0)
            .collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            // These values are exact in every dtype, so the products must agree closely.
            let m = Matrix::from_f32(rows, cols, w.clone(), dtype);
            let mut out = vec![0.0; rows];
            gemv(&m, &x[..cols], &mut out);
            let want = naive(&w, rows, cols, &x[..cols]);
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{dtype}: gemv {a} vs {b}");
            }
            let xa = ArrayView2::from_shape((n, cols), &x).unwrap();
            let mut o = ndarray::Array2::zeros((n, rows));
            gemm(&m, xa, o.view_mut());
            for i in 0..n {
                let want = naive(&w, rows, cols, &x[i * cols..(i + 1) * cols]);
                for (a, b) in o.row(i).iter().zip(&want) {
                    assert!((a - b).abs() < 1e-4, "{dtype}: gemm {a} vs {b}");
                }
            }
        }
    }

    /// The GEMV of a quantized matrix is the row kernel on every row, whatever
    /// the row count (rows crossing the 64-row task boundaries), and rows
    /// taken a range at a time (`rows_dot`, as the decode team does) give the
    /// same bits.
    #[test]
    fn gemv_rows_are_the_row_kernel() {
        use crate::reference::qdot::tests::random_blocks;
        use crate::weights::quant::{QuantData, QuantType, SharedBytes};
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let cols = 64;
        let quant = |ty: QuantType, rows: usize, rng: &mut rand_chacha::ChaCha8Rng| {
            let bytes = random_blocks(ty, rows * cols / ty.block_len(), rng);
            let q = QuantData::new(ty, rows, cols, SharedBytes::owned(bytes)).unwrap();
            Matrix {
                rows,
                cols,
                data: MatrixData::Quant(q),
            }
        };
        let c = quant(QuantType::Q8_0, 131, &mut rng);
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let mut want = vec![0.0; c.rows];
        gemv(&c, &x, &mut want);
        for cut in [1, 64, 100] {
            let mut parts = vec![0.0; c.rows];
            let (a, b) = parts.split_at_mut(cut);
            rows_dot(&c, 0, &x, a);
            rows_dot(&c, cut, &x, b);
            assert_eq!(parts, want, "rows split at {cut}");
        }
        // And the separate GEMV is the row kernel on every row.
        let MatrixData::Quant(q) = &c.data else {
            unreachable!()
        };
        let rb = q.row_bytes(cols);
        let k = crate::reference::qdot::row_kernel(q.ty);
        for (r, w) in want.iter().enumerate() {
            assert_eq!(
                w.to_bits(),
                k(&q.bytes.as_slice()[r * rb..(r + 1) * rb], &x).to_bits()
            );
        }
    }

    /// One query head against a cache, computed in f64 from the definition
    /// (scaled dot products, softmax, weighted values): every compiled path
    /// (the CPU's best, and the portable loop) agrees to f32 rounding, for
    /// head sizes that are and are not multiples of the vector width, and
    /// for each query head of a group reading its group's keys.
    #[test]
    fn attention_of_one_head_matches_the_definition() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (head_dim, positions) in [(64, 37), (80, 5), (8, 1), (128, 200)] {
            let (kv_heads, group) = (2, 3);
            let kv_dim = kv_heads * head_dim;
            let q: Vec<f32> = (0..kv_heads * group * head_dim).map(|_| next()).collect();
            let k: Vec<f32> = (0..positions * kv_dim).map(|_| 2.0 * next()).collect();
            let v: Vec<f32> = (0..positions * kv_dim).map(|_| next()).collect();
            for head in 0..kv_heads * group {
                let g = head / group;
                let qh = &q[head * head_dim..(head + 1) * head_dim];
                let logits: Vec<f64> = (0..positions)
                    .map(|t| {
                        let kt = &k[t * kv_dim + g * head_dim..][..head_dim];
                        let dot: f64 = qh.iter().zip(kt).map(|(a, b)| *a as f64 * *b as f64).sum();
                        dot / (head_dim as f64).sqrt()
                    })
                    .collect();
                let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                let z: f64 = e.iter().sum();
                let want: Vec<f64> = (0..head_dim)
                    .map(|j| {
                        (0..positions)
                            .map(|t| e[t] / z * v[t * kv_dim + g * head_dim + j] as f64)
                            .sum()
                    })
                    .collect();
                let mut scores = vec![0.0; positions];
                let mut out = vec![0.0; head_dim];
                attend_head(
                    head,
                    &q,
                    &k,
                    &v,
                    head_dim,
                    kv_dim,
                    group,
                    &mut scores,
                    &mut out,
                );
                let mut portable = vec![0.0; head_dim];
                for (t, s) in scores.iter_mut().enumerate() {
                    let kt = &k[t * kv_dim + g * head_dim..][..head_dim];
                    *s = portable_dot(kt.iter().copied(), qh) / (head_dim as f32).sqrt();
                }
                softmax(&mut scores);
                weighted_sum(
                    &scores,
                    |t| &v[t * kv_dim + g * head_dim..][..head_dim],
                    &mut portable,
                );
                for (name, got) in [("dispatched", &out), ("portable", &portable)] {
                    for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (*a as f64 - b).abs() < 1e-5,
                            "{name}: head {head} dim {j} (head_dim {head_dim}, {positions} positions): {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rms_norm_and_softmax_values() {
        let mut out = [0.0; 2];
        rms_norm(&[3.0, 4.0], &[1.0, 2.0], 0.0, &mut out);
        // mean(x²) = 12.5, 1/sqrt = 0.28284
        assert!((out[0] - 0.848_528).abs() < 1e-5 && (out[1] - 2.262_741).abs() < 1e-5);
        let mut p = [0.0, (2.0f32).ln()];
        softmax(&mut p);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-6 && (p[1] - 2.0 / 3.0).abs() < 1e-6);
    }
}
