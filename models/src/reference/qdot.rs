//! Dot products of one quantized weight row (ggml blocks, see
//! `weights::quant`) with an f32 vector, decoding the blocks inside the inner
//! loop: AVX2 + FMA + F16C when the CPU has them (detected at run time), and a
//! portable fallback.
//!
//! Both paths compute every weight with the same f32 operations as the scalar
//! decoder (`QuantType::decode_block`, itself bit-identical to the GGUF
//! converter), so each weight is exactly the converted model's, and they sum
//! the products in the order of the f32 kernels in `ops` (AVX2: four 8-lane
//! accumulators, group of eight `g` into accumulator `g % 4`, fused multiply-adds;
//! portable: eight lanes, multiply then add): a quantized row's dot product is
//! bit-identical to the dot product of its dequantized f32 row.
//!
//! These are CPU kernels of the reference engine, not wafer PE kernels, so they
//! live here rather than in the `wafer-kernels` crate (which models one PE and
//! which `wafer-models` does not depend on).

use crate::weights::quant::QuantType;

/// A row kernel: `(row bytes, x) -> sum of w[i] * x[i]`; `x.len()` is the row's
/// element count.
pub type RowDot = fn(&[u8], &[f32]) -> f32;

/// The fastest row kernel this CPU runs for `ty`.
pub fn row_kernel(ty: QuantType) -> RowDot {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma_f16c() {
        return match ty {
            QuantType::Q8_0 => |r, x| unsafe { x86::dot_q8_0(r, x) },
            QuantType::Q4_0 => |r, x| unsafe { x86::dot_q4_0(r, x) },
            QuantType::Q4_1 => |r, x| unsafe { x86::dot_q4_1(r, x) },
            QuantType::Q4_K => |r, x| unsafe { x86::dot_q4_k(r, x) },
            QuantType::Q6_K => |r, x| unsafe { x86::dot_q6_k(r, x) },
        };
    }
    portable_kernel(ty)
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

/// Whether [`row_kernel`] picks the AVX2 path on this CPU.
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
    //! blocks and `x.len()` at least the row's element count (checked by assert).
    use super::QuantType;
    use crate::reference::ops::x86::hsum;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_at(b: &[u8], i: usize) -> f32 {
        let bits = u16::from_le_bytes([b[i], b[i + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    /// Eight unsigned bytes at `v`'s low half (or high half) as eight f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn u8x8_lo(v: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn u8x8_hi(v: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)))
    }

    /// Eight unsigned bytes minus `bias` as eight f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn u8x8_minus(v: __m128i, bias: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(v), bias))
    }

    /// Q6_K's two high bits at `shift` of each byte of `h`, moved to bits 4..6.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6_high(h: __m128i, shift: u32) -> __m128i {
        let v = match shift {
            0 => h,
            2 => _mm_srli_epi16(h, 2),
            4 => _mm_srli_epi16(h, 4),
            _ => _mm_srli_epi16(h, 6),
        };
        _mm_slli_epi16(_mm_and_si128(v, _mm_set1_epi8(3)), 4)
    }

    fn check(ty: QuantType, row: &[u8], x: &[f32]) -> usize {
        let blocks = row.len() / ty.block_bytes();
        assert!(
            row.len() == blocks * ty.block_bytes() && x.len() >= blocks * ty.block_len(),
            "{ty} row of {} bytes against {} inputs",
            row.len(),
            x.len()
        );
        blocks
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
        let n = check(QuantType::Q8_0, row, x);
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in 0..n {
            let b = &row[i * 34..i * 34 + 34];
            let xp = x.as_ptr().add(i * 32);
            let d = _mm256_set1_ps(f16_at(b, 0));
            for (k, a) in acc.iter_mut().enumerate() {
                let q = _mm_loadl_epi64(b.as_ptr().add(2 + 8 * k) as *const __m128i);
                let w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
                *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp.add(8 * k)), *a);
            }
        }
        hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_0(row: &[u8], x: &[f32]) -> f32 {
        let n = check(QuantType::Q4_0, row, x);
        let mask = _mm_set1_epi8(0x0F);
        let eight = _mm256_set1_epi32(8);
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in 0..n {
            let b = &row[i * 18..i * 18 + 18];
            let xp = x.as_ptr().add(i * 32);
            let d = _mm256_set1_ps(f16_at(b, 0));
            let q = _mm_loadu_si128(b.as_ptr().add(2) as *const __m128i);
            let lo = _mm_and_si128(q, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
            let parts = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
            for (k, p) in parts.into_iter().enumerate() {
                let w = _mm256_mul_ps(u8x8_minus(p, eight), d);
                let a = &mut acc[k];
                *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp.add(8 * k)), *a);
            }
        }
        hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_1(row: &[u8], x: &[f32]) -> f32 {
        let n = check(QuantType::Q4_1, row, x);
        let mask = _mm_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in 0..n {
            let b = &row[i * 20..i * 20 + 20];
            let xp = x.as_ptr().add(i * 32);
            let d = _mm256_set1_ps(f16_at(b, 0));
            let m = _mm256_set1_ps(f16_at(b, 2));
            let q = _mm_loadu_si128(b.as_ptr().add(4) as *const __m128i);
            let lo = _mm_and_si128(q, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
            let parts = [u8x8_lo(lo), u8x8_hi(lo), u8x8_lo(hi), u8x8_hi(hi)];
            for (k, p) in parts.into_iter().enumerate() {
                // q * d + m as two roundings, like the scalar decoder (never fused).
                let w = _mm256_add_ps(_mm256_mul_ps(p, d), m);
                let a = &mut acc[k];
                *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp.add(8 * k)), *a);
            }
        }
        hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_k(row: &[u8], x: &[f32]) -> f32 {
        let n = check(QuantType::Q4_K, row, x);
        let mask = _mm_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in 0..n {
            let b = &row[i * 144..i * 144 + 144];
            let d = f16_at(b, 0);
            let dmin = f16_at(b, 2);
            let scales = &b[4..16];
            for chunk in 0..4 {
                let xp = x.as_ptr().add(i * 256 + chunk * 64);
                let qp = b.as_ptr().add(16 + chunk * 32);
                let (sc1, m1) = crate::weights::quant::scale_min_k4(2 * chunk, scales);
                let (sc2, m2) = crate::weights::quant::scale_min_k4(2 * chunk + 1, scales);
                let subs = [
                    (d * f32::from(sc1), dmin * f32::from(m1), false),
                    (d * f32::from(sc2), dmin * f32::from(m2), true),
                ];
                for (s, &(ds, ms, high)) in subs.iter().enumerate() {
                    let (dv, mv) = (_mm256_set1_ps(ds), _mm256_set1_ps(ms));
                    for h in 0..2 {
                        let q = _mm_loadu_si128(qp.add(16 * h) as *const __m128i);
                        let nib = if high {
                            _mm_and_si128(_mm_srli_epi16(q, 4), mask)
                        } else {
                            _mm_and_si128(q, mask)
                        };
                        let parts = [u8x8_lo(nib), u8x8_hi(nib)];
                        for (k, p) in parts.into_iter().enumerate() {
                            let w = _mm256_sub_ps(_mm256_mul_ps(dv, p), mv);
                            let xo = xp.add(32 * s + 16 * h + 8 * k);
                            let a = &mut acc[2 * h + k];
                            *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(xo), *a);
                        }
                    }
                }
            }
        }
        hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q6_k(row: &[u8], x: &[f32]) -> f32 {
        let n = check(QuantType::Q6_K, row, x);
        let m0f = _mm_set1_epi8(0x0F);
        let k32 = _mm256_set1_epi32(32);
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in 0..n {
            let b = &row[i * 210..i * 210 + 210];
            let d = f16_at(b, 208);
            for half in 0..2 {
                let ql = b.as_ptr().add(half * 64);
                let qh = b.as_ptr().add(128 + half * 32);
                let sc = &b[192 + half * 8..192 + half * 8 + 8];
                let xp = x.as_ptr().add(i * 256 + half * 128);
                // Every 16 values of `ql`/`qh` give four groups of 16 weights
                // (at l, l + 32, l + 64, l + 96); they are visited in element
                // order so the sums run in the order of the f32 kernel.
                let mut qs = [[_mm_setzero_si128(); 4]; 2];
                for (j, l0) in [0usize, 16].into_iter().enumerate() {
                    let a = _mm_loadu_si128(ql.add(l0) as *const __m128i);
                    let c = _mm_loadu_si128(ql.add(l0 + 32) as *const __m128i);
                    let h = _mm_loadu_si128(qh.add(l0) as *const __m128i);
                    qs[j] = [
                        _mm_or_si128(_mm_and_si128(a, m0f), q6_high(h, 0)),
                        _mm_or_si128(_mm_and_si128(c, m0f), q6_high(h, 2)),
                        _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), m0f), q6_high(h, 4)),
                        _mm_or_si128(_mm_and_si128(_mm_srli_epi16(c, 4), m0f), q6_high(h, 6)),
                    ];
                }
                for g in 0..4 {
                    for (j, l0) in [0usize, 16].into_iter().enumerate() {
                        let q = qs[j][g];
                        let s = _mm256_set1_ps(d * f32::from(sc[j + 2 * g] as i8));
                        let xo = xp.add(l0 + 32 * g);
                        let w0 = _mm256_mul_ps(s, u8x8_minus(q, k32));
                        let w1 = _mm256_mul_ps(s, u8x8_minus(_mm_srli_si128(q, 8), k32));
                        let (a0, a1) = (l0 / 8, l0 / 8 + 1);
                        acc[a0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xo), acc[a0]);
                        acc[a1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xo.add(8)), acc[a1]);
                    }
                }
            }
        }
        hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }
}

#[cfg(test)]
mod tests {
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
                for (name, k) in [("fast", row_kernel(ty)), ("portable", portable_kernel(ty))] {
                    let got = k(&row, &x) as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * scale.max(1e-3),
                        "{ty} {name}, {blocks} blocks: {got} vs {want}"
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
                let got = portable_kernel(ty)(&row, &x);
                assert_eq!(
                    got.to_bits(),
                    portable.to_bits(),
                    "{ty} portable, {blocks} blocks"
                );
                if has_simd() {
                    let fast = super::super::ops::dot_f32(&w, &x);
                    let got = row_kernel(ty)(&row, &x);
                    assert_eq!(got.to_bits(), fast.to_bits(), "{ty} AVX2, {blocks} blocks");
                } else {
                    eprintln!(
                        "{ty}: this CPU has no AVX2/FMA/F16C, only the portable path is checked"
                    );
                }
            }
        }
    }
}
