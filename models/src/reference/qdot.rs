//! Dot products of one quantized weight row (ggml blocks, see
//! `weights::quant`) with an f32 vector, decoding the blocks inside the inner
//! loop: AVX2 + FMA + F16C when the CPU has them (detected at run time), with
//! AVX-512F versions of Q8_0 and Q4_1 (the types of the default GGUF), and a
//! portable fallback.
//!
//! Both paths compute every weight to the same f32 value as the scalar
//! decoder (`QuantType::decode_block`, itself bit-identical to the GGUF
//! converter; the AVX2 path fuses `q * d + m` where `q * d` is exact, see the
//! `x86` module), so each weight is exactly the converted model's, and they sum
//! the products in the order of the f32 kernels in `ops` (AVX2: four 8-lane
//! accumulators, group of eight `g` into accumulator `g % 4`, fused multiply-adds;
//! portable: eight lanes, multiply then add): a quantized row's dot product is
//! bit-identical to the dot product of its dequantized f32 row.
//!
//! These are CPU kernels of the reference engine, not wafer PE kernels, so they
//! live here rather than in the `wafer-kernels` crate (which models one PE and
//! which `wafer-models` does not depend on). [`decode`] is the vectorised
//! dequantization of whole rows (for prefill's GEMM tiles), built from the same
//! per-block code as the dot products.

use crate::weights::quant::QuantType;

/// A row kernel: `(row bytes, x) -> sum of w[i] * x[i]`; `x.len()` is the row's
/// element count.
pub type RowDot = fn(&[u8], &[f32]) -> f32;

/// The fastest row kernel this CPU runs for `ty`.
pub fn row_kernel(ty: QuantType) -> RowDot {
    kernels(ty)
        .last()
        .expect("the portable kernel is always there")
        .1
}

/// Every row kernel this CPU runs for `ty`, slowest first: `portable`, then
/// `avx2` (AVX2+FMA+F16C), then `avx512` (AVX-512F as well; Q8_0 and Q4_1
/// only). All give the same bits on the same row; the benches and tests run
/// each.
pub fn kernels(ty: QuantType) -> Vec<(&'static str, RowDot)> {
    let mut v = vec![("portable", portable_kernel(ty))];
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma_f16c() {
        // SAFETY (every closure below): the CPU has the features the kernel
        // needs (checked here); lengths are checked inside.
        let avx2: RowDot = match ty {
            QuantType::Q8_0 => |r, x| unsafe { x86::dot_q8_0(r, x) },
            QuantType::Q4_0 => |r, x| unsafe { x86::dot_q4_0(r, x) },
            QuantType::Q4_1 => |r, x| unsafe { x86::dot_q4_1(r, x) },
            QuantType::Q4_K => |r, x| unsafe { x86::dot_q4_k(r, x) },
            QuantType::Q6_K => |r, x| unsafe { x86::dot_q6_k(r, x) },
        };
        v.push(("avx2", avx2));
        if std::is_x86_feature_detected!("avx512f") {
            match ty {
                QuantType::Q8_0 => v.push(("avx512", |r, x| unsafe { x86_512::dot_q8_0(r, x) })),
                QuantType::Q4_1 => v.push(("avx512", |r, x| unsafe { x86_512::dot_q4_1(r, x) })),
                _ => {}
            }
        }
    }
    v
}

/// The portable row kernel for `ty` (what CPUs without AVX2/FMA/F16C run).
pub fn portable_kernel(ty: QuantType) -> RowDot {
    match ty {
        QuantType::Q8_0 => |r, x| portable_dot(QuantType::Q8_0, r, x),
        QuantType::Q4_0 => |r, x| portable_dot(QuantType::Q4_0, r, x),
        QuantType::Q4_1 => |r, x| portable_dot(QuantType::Q4_1, r, x),
        QuantType::Q4_K => |r, x| portable_dot(QuantType::Q4_K, r, x),
        QuantType::Q6_K => |r, x| portable_dot(QuantType::Q6_K, r, x),
    }
}

/// Decodes whole blocks of `ty` to f32 (`src` holds `out.len() / block_len`
/// blocks): exactly [`QuantType::decode`]'s values, bit for bit, vectorised on
/// CPUs with AVX2/FMA/F16C. Prefill widens its weight tiles with it.
pub fn decode(ty: QuantType, src: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma_f16c() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked above); the lengths are
        // checked inside.
        unsafe {
            match ty {
                QuantType::Q8_0 => x86::decode_q8_0(src, out),
                QuantType::Q4_0 => x86::decode_q4_0(src, out),
                QuantType::Q4_1 => x86::decode_q4_1(src, out),
                QuantType::Q4_K => x86::decode_q4_k(src, out),
                QuantType::Q6_K => x86::decode_q6_k(src, out),
            }
        }
        return;
    }
    ty.decode(src, out)
}

/// Whether [`row_kernel`] picks a SIMD path (AVX2, or AVX-512 for Q8_0 / Q4_1) on this CPU.
pub fn has_simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2_fma_f16c()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma_f16c() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// Decodes each block into a stack buffer, then multiplies into eight lanes.
fn portable_dot(ty: QuantType, row: &[u8], x: &[f32]) -> f32 {
    let (bl, bb) = (ty.block_len(), ty.block_bytes());
    let mut w = [0f32; 256];
    let mut acc = [0f32; 8];
    for (b, xs) in row.chunks_exact(bb).zip(x.chunks_exact(bl)) {
        let w = &mut w[..bl];
        ty.decode_block(b, w);
        for (wc, xc) in w.chunks_exact(8).zip(xs.chunks_exact(8)) {
            for i in 0..8 {
                acc[i] += wc[i] * xc[i];
            }
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)]
mod x86 {
    //! Each function needs AVX2, FMA and F16C, `row.len()` a whole number of
    //! blocks and `x.len()` (or `out.len()`) at least the row's element count
    //! (checked by assert).
    //!
    //! Quantized values reach 32-bit lanes straight from memory (`vpmovzxbd` /
    //! `vpmovsxbd` of eight bytes); a 4-bit pair is split in the lanes (`& 15`
    //! for the low nibble, `>> 4` for the high one, no mask needed). Where the
    //! scalar decoder computes `q * d + m` in two roundings the kernels use one
    //! fused multiply-add: `q * d` is exact in f32 (a 4-bit integer times an f16
    //! scale, or a 6-bit sub-block scale product for Q4_K: at most 21
    //! significant bits), so the fused form rounds the same exact value once,
    //! the same result including the sign of a zero.
    use super::QuantType;
    use crate::reference::ops::x86::{hsum, sum4};
    use std::arch::x86_64::*;

    /// The f16 at `p`, broadcast to eight f32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_bcast(p: *const u8) -> __m256 {
        let bits = std::ptr::read_unaligned(p as *const u16);
        _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// The two consecutive f16 at `p` (Q4_1's `d, m`), each broadcast.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16x2_bcast(p: *const u8) -> (__m256, __m256) {
        let bits = std::ptr::read_unaligned(p as *const i32);
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
        (
            _mm256_broadcastss_ps(v),
            _mm256_broadcastss_ps(_mm_movehdup_ps(v)),
        )
    }

    /// Eight unsigned bytes at `p` in eight 32-bit lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn u8x8(p: *const u8) -> __m256i {
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
    }

    /// The 32 nibbles of 16 packed bytes at `p` as f32, in element order: low
    /// nibbles of bytes 0..8, 8..16, then high nibbles of bytes 0..8, 8..16.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles32(p: *const u8) -> [__m256; 4] {
        let m15 = _mm256_set1_epi32(15);
        let (r0, r1) = (u8x8(p), u8x8(p.add(8)));
        [
            _mm256_cvtepi32_ps(_mm256_and_si256(r0, m15)),
            _mm256_cvtepi32_ps(_mm256_and_si256(r1, m15)),
            _mm256_cvtepi32_ps(_mm256_srli_epi32(r0, 4)),
            _mm256_cvtepi32_ps(_mm256_srli_epi32(r1, 4)),
        ]
    }

    pub(super) fn check(ty: QuantType, row: &[u8], n: usize) -> usize {
        let blocks = row.len() / ty.block_bytes();
        assert!(
            row.len() == blocks * ty.block_bytes() && n >= blocks * ty.block_len(),
            "{ty} row of {} bytes against {n} values",
            row.len(),
        );
        blocks
    }

    // One block's 32 (Q8_0, Q4_0, Q4_1) or 256 (Q4_K, Q6_K) weights, eight at a
    // time: `f(k, w)` receives the group of elements `8k..8k + 8` in element
    // order. The dot products and the decoder share these.

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_q8_0(b: *const u8, mut f: impl FnMut(usize, __m256)) {
        let d = f16_bcast(b);
        for k in 0..4 {
            let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.add(2 + 8 * k) as *const __m128i));
            f(k, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_q4_0(b: *const u8, mut f: impl FnMut(usize, __m256)) {
        let d = f16_bcast(b);
        let (m15, eight) = (_mm256_set1_epi32(15), _mm256_set1_epi32(8));
        let (r0, r1) = (u8x8(b.add(2)), u8x8(b.add(10)));
        let qs = [
            _mm256_and_si256(r0, m15),
            _mm256_and_si256(r1, m15),
            _mm256_srli_epi32(r0, 4),
            _mm256_srli_epi32(r1, 4),
        ];
        // (q - 8) * d as the scalar decoder (the integer subtraction first keeps
        // the sign of a zero weight).
        for (k, q) in qs.into_iter().enumerate() {
            f(
                k,
                _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, eight)), d),
            );
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_q4_1(b: *const u8, mut f: impl FnMut(usize, __m256)) {
        let (d, m) = f16x2_bcast(b);
        for (k, q) in nibbles32(b.add(4)).into_iter().enumerate() {
            f(k, _mm256_fmadd_ps(q, d, m));
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_q4_k(b: *const u8, mut f: impl FnMut(usize, __m256)) {
        let bs = std::slice::from_raw_parts(b, 144);
        let (d, dmin) = (f16_scalar(b), f16_scalar(b.add(2)));
        let scales = &bs[4..16];
        let m15 = _mm256_set1_epi32(15);
        for chunk in 0..4 {
            let qp = b.add(16 + chunk * 32);
            let (sc1, m1) = crate::weights::quant::scale_min_k4(2 * chunk, scales);
            let (sc2, m2) = crate::weights::quant::scale_min_k4(2 * chunk + 1, scales);
            let (d1, mn1) = (
                _mm256_set1_ps(d * f32::from(sc1)),
                _mm256_set1_ps(dmin * f32::from(m1)),
            );
            let (d2, mn2) = (
                _mm256_set1_ps(d * f32::from(sc2)),
                _mm256_set1_ps(dmin * f32::from(m2)),
            );
            let raw = [
                u8x8(qp),
                u8x8(qp.add(8)),
                u8x8(qp.add(16)),
                u8x8(qp.add(24)),
            ];
            for (k, r) in raw.iter().enumerate() {
                let q = _mm256_cvtepi32_ps(_mm256_and_si256(*r, m15));
                f(8 * chunk + k, _mm256_fmsub_ps(q, d1, mn1));
            }
            for (k, r) in raw.iter().enumerate() {
                let q = _mm256_cvtepi32_ps(_mm256_srli_epi32(*r, 4));
                f(8 * chunk + 4 + k, _mm256_fmsub_ps(q, d2, mn2));
            }
        }
    }

    /// Q6_K visits its groups of eight in the order `l0, l0 + 32, l0 + 64,
    /// l0 + 96` for each `l0` of a half-block: every group still reaches `f` in
    /// increasing order among the groups `k` of one residue `k % 4`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block_q6_k(b: *const u8, mut f: impl FnMut(usize, __m256)) {
        let d = f16_scalar(b.add(208));
        let (m15, m48, k32) = (
            _mm256_set1_epi32(15),
            _mm256_set1_epi32(48),
            _mm256_set1_epi32(32),
        );
        for half in 0..2 {
            let ql = b.add(half * 64);
            let qh = b.add(128 + half * 32);
            let sc = b.add(192 + half * 8);
            for l0 in [0usize, 8, 16, 24] {
                let is = l0 / 16;
                let (a, c, h) = (u8x8(ql.add(l0)), u8x8(ql.add(l0 + 32)), u8x8(qh.add(l0)));
                let qs = [
                    _mm256_or_si256(
                        _mm256_and_si256(a, m15),
                        _mm256_and_si256(_mm256_slli_epi32(h, 4), m48),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(c, m15),
                        _mm256_and_si256(_mm256_slli_epi32(h, 2), m48),
                    ),
                    _mm256_or_si256(_mm256_srli_epi32(a, 4), _mm256_and_si256(h, m48)),
                    _mm256_or_si256(
                        _mm256_srli_epi32(c, 4),
                        _mm256_and_si256(_mm256_srli_epi32(h, 2), m48),
                    ),
                ];
                for (g, q) in qs.into_iter().enumerate() {
                    let s = _mm256_set1_ps(d * f32::from(*sc.add(is + 2 * g) as i8));
                    let w = _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_sub_epi32(q, k32)));
                    f(half * 16 + g * 4 + l0 / 8, w);
                }
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_scalar(p: *const u8) -> f32 {
        let bits = std::ptr::read_unaligned(p as *const u16);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// The dot product of a row of `$ty` blocks with `x`, summed like
    /// `ops::dot_f32` (group `k` into accumulator `k % 4`).
    macro_rules! dot {
        ($name:ident, $ty:expr, $block:ident) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $name(row: &[u8], x: &[f32]) -> f32 {
                let ty: QuantType = $ty;
                let n = check(ty, row, x.len());
                let (bb, bl) = (ty.block_bytes(), ty.block_len());
                let mut acc = [_mm256_setzero_ps(); 4];
                for i in 0..n {
                    let xp = x.as_ptr().add(i * bl);
                    $block(row.as_ptr().add(i * bb), |k, w| {
                        let a = &mut acc[k % 4];
                        *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp.add(8 * k)), *a);
                    });
                }
                hsum(sum4(acc))
            }
        };
    }

    /// Decodes a row of `$ty` blocks into `out`.
    macro_rules! decode {
        ($name:ident, $ty:expr, $block:ident) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $name(row: &[u8], out: &mut [f32]) {
                let ty: QuantType = $ty;
                let n = check(ty, row, out.len());
                let (bb, bl) = (ty.block_bytes(), ty.block_len());
                for i in 0..n {
                    let op = out.as_mut_ptr().add(i * bl);
                    $block(row.as_ptr().add(i * bb), |k, w| {
                        _mm256_storeu_ps(op.add(8 * k), w)
                    });
                }
            }
        };
    }

    dot!(dot_q8_0, QuantType::Q8_0, block_q8_0);
    dot!(dot_q4_0, QuantType::Q4_0, block_q4_0);
    dot!(dot_q4_1, QuantType::Q4_1, block_q4_1);
    dot!(dot_q4_k, QuantType::Q4_K, block_q4_k);
    dot!(dot_q6_k, QuantType::Q6_K, block_q6_k);
    decode!(decode_q8_0, QuantType::Q8_0, block_q8_0);
    decode!(decode_q4_0, QuantType::Q4_0, block_q4_0);
    decode!(decode_q4_1, QuantType::Q4_1, block_q4_1);
    decode!(decode_q4_k, QuantType::Q4_K, block_q4_k);
    decode!(decode_q6_k, QuantType::Q6_K, block_q6_k);
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)]
mod x86_512 {
    //! Q8_0 and Q4_1 in 16-lane AVX-512 registers: one block is two vectors.
    //! Each needs AVX-512F, AVX2, FMA and F16C; lengths as in `x86`.
    //!
    //! The sums stay those of `ops::dot_f32`'s four 8-lane accumulators: `a`
    //! holds accumulators 0 and 1 in its low and high halves (elements 0..16 of
    //! every block), `b` accumulators 2 and 3 (elements 16..32), each lane
    //! receiving the same products in the same order; the halves are split
    //! and summed as `(acc0 + acc1) + (acc2 + acc3)` at the end.
    use super::QuantType;
    use crate::reference::ops::x86::{hsum, sum4};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn finish(a: __m512, b: __m512) -> f32 {
        let half = |v: __m512| {
            (
                _mm512_castps512_ps256(v),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
            )
        };
        let ((a0, a1), (b0, b1)) = (half(a), half(b));
        hsum(sum4([a0, a1, b0, b1]))
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn dot_q4_1(row: &[u8], x: &[f32]) -> f32 {
        let n = super::x86::check(QuantType::Q4_1, row, x.len());
        let m15 = _mm512_set1_epi32(15);
        let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in 0..n {
            let p = row.as_ptr().add(i * 20);
            let xp = x.as_ptr().add(i * 32);
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const i32)));
            let d = _mm512_broadcastss_ps(dm);
            let m = _mm512_broadcastss_ps(_mm_movehdup_ps(dm));
            let r = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.add(4) as *const __m128i));
            // q * d + m fused: q * d is exact (see `x86`).
            let lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(r, m15)), d, m);
            let hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(r, 4)), d, m);
            a = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xp), a);
            b = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xp.add(16)), b);
        }
        finish(a, b)
    }

    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
        let n = super::x86::check(QuantType::Q8_0, row, x.len());
        let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for i in 0..n {
            let p = row.as_ptr().add(i * 34);
            let xp = x.as_ptr().add(i * 32);
            let bits = std::ptr::read_unaligned(p as *const u16);
            let d = _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))));
            let q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(2) as *const __m128i));
            let q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(18) as *const __m128i));
            let w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(q0), d);
            let w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(q1), d);
            a = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xp), a);
            b = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xp.add(16)), b);
        }
        finish(a, b)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Random blocks of `ty` whose f16 scales are finite (random bytes elsewhere).
    pub(crate) fn random_blocks(ty: QuantType, blocks: usize, rng: &mut impl Rng) -> Vec<u8> {
        let mut v = vec![0u8; blocks * ty.block_bytes()];
        rng.fill(&mut v[..]);
        let scale_at: &[usize] = match ty {
            QuantType::Q8_0 | QuantType::Q4_0 => &[0],
            QuantType::Q4_1 | QuantType::Q4_K => &[0, 2],
            QuantType::Q6_K => &[208],
        };
        for b in v.chunks_exact_mut(ty.block_bytes()) {
            for &at in scale_at {
                let s = half::f16::from_f32(rng.gen_range(-0.05f32..0.05)).to_le_bytes();
                b[at..at + 2].copy_from_slice(&s);
            }
        }
        v
    }

    #[test]
    fn every_kernel_matches_decode_then_dot_on_random_blocks() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for ty in QuantType::ALL {
            // One block, an odd number of blocks, and SmolLM2's row lengths.
            for blocks in [1usize, 3, 7, 18] {
                let row = random_blocks(ty, blocks, &mut rng);
                let n = blocks * ty.block_len();
                let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
                let mut w = vec![0f32; n];
                ty.decode(&row, &mut w);
                let want: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
                let scale: f64 = w
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                for (name, k) in kernels(ty) {
                    let got = k(&row, &x) as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * scale.max(1e-3),
                        "{ty} {name}, {blocks} blocks: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// The vectorised decoder gives the scalar decoder's values bit for bit
    /// (signed zeros included: random nibbles hit q = 0 and m = 0 often).
    #[test]
    fn decode_is_bit_identical_to_the_scalar_decoder() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for ty in QuantType::ALL {
            for blocks in [1usize, 2, 9] {
                let mut row = random_blocks(ty, blocks, &mut rng);
                // Zero scales and minimums in the first block: every weight is a zero.
                row[..4].iter_mut().for_each(|b| *b = 0);
                if ty == QuantType::Q6_K {
                    row[208..210].iter_mut().for_each(|b| *b = 0x80); // -0.0
                }
                let n = blocks * ty.block_len();
                let (mut want, mut got) = (vec![0f32; n], vec![1f32; n]);
                ty.decode(&row, &mut want);
                decode(ty, &row, &mut got);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{ty} {blocks} blocks, weight {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// A quantized row's dot product is bit-identical to the f32 kernel's on its
    /// decoded row: the fast path to `ops::dot_f32`'s AVX2 path, the portable one
    /// to its portable path.
    #[test]
    fn kernels_are_bit_identical_to_the_f32_kernels_on_decoded_rows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for ty in QuantType::ALL {
            for blocks in [1usize, 3, 5, 18] {
                let row = random_blocks(ty, blocks, &mut rng);
                let n = blocks * ty.block_len();
                let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
                let mut w = vec![0f32; n];
                ty.decode(&row, &mut w);
                let portable = super::super::ops::portable_dot(w.iter().copied(), &x);
                let fast = super::super::ops::dot_f32(&w, &x);
                let paths = kernels(ty);
                for (name, k) in &paths {
                    let want = if *name == "portable" { portable } else { fast };
                    let got = k(&row, &x);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{ty} {name}, {blocks} blocks"
                    );
                }
                if paths.len() == 1 {
                    eprintln!(
                        "{ty}: this CPU has no AVX2/FMA/F16C, only the portable path is checked"
                    );
                }
            }
        }
    }
}
