//! Number formats on a PE: rounding f32 values to the 16-bit type a value is
//! stored or sent in (`precision.activation_dtype` for activations and the
//! partial sums a reduction moves, `accumulate_dtype` for running sums,
//! `kv_dtype` for the cache). Round to nearest, ties to even, as the hardware's
//! conversions do; f32 is left as it is.
//!
//! The f16 path uses the x86 F16C conversions when the CPU has them (checked at
//! run time) and `half`'s otherwise; both give the same bits.

use half::{bf16, f16};
use wafer_core::DType;

/// The formats a reduction works in: every value a PE sends is rounded to
/// `wire`; every running sum is kept as `acc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formats {
    pub wire: DType,
    pub acc: DType,
}

impl Formats {
    /// f32 on the wire and in the sums: the arithmetic of an f32 host.
    pub const F32: Formats = Formats {
        wire: DType::F32,
        acc: DType::F32,
    };
}

/// `x` rounded to `dtype` and widened back to f32.
#[inline]
pub fn round(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F32 => x,
        DType::F16 => f16::from_f32(x).to_f32(),
        DType::BF16 => bf16::from_f32(x).to_f32(),
    }
}

/// Every value of `xs` rounded to `dtype` in place.
pub fn round_slice(dtype: DType, xs: &mut [f32]) {
    match dtype {
        DType::F32 => {}
        DType::F16 => {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx") && std::is_x86_feature_detected!("f16c") {
                // SAFETY: the CPU has AVX and F16C (checked above).
                unsafe { round_f16_f16c(xs) };
                return;
            }
            xs.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
        }
        DType::BF16 => xs.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32()),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn round_f16_f16c(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = xs.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` holds 8 f32 values; unaligned loads and stores.
        unsafe {
            let v = _mm256_loadu_ps(c.as_ptr());
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    for x in chunks.into_remainder() {
        *x = f16::from_f32(*x).to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_round_as_single_values_do_and_f16_ties_go_to_even() {
        // 1 + 2^-11 lies halfway between 1 and the next f16 (1 + 2^-10): even is 1.
        // 1 + 3 * 2^-11 lies between 1 + 2^-10 and 1 + 2^-9: even is 1 + 2^-9.
        let tie = 1.0 + 2f32.powi(-11);
        assert_eq!(round(DType::F16, tie), 1.0);
        assert_eq!(
            round(DType::F16, 1.0 + 3.0 * 2f32.powi(-11)),
            1.0 + 2f32.powi(-9)
        );
        // bf16 keeps 8 significant bits: 1 + 2^-8 is a tie, rounds to 1.
        assert_eq!(round(DType::BF16, 1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(round(DType::F32, tie), tie);
        // 19 values (two vector chunks and a tail), incl. overflow and subnormals.
        let xs: Vec<f32> = (0..19)
            .map(|i| match i {
                0 => 70000.0,
                1 => -1e-7,
                2 => f32::NEG_INFINITY,
                i => (i as f32 * 0.377).sin() * 10f32.powi(i % 7 - 3),
            })
            .collect();
        for dtype in [DType::F16, DType::BF16, DType::F32] {
            let mut got = xs.clone();
            round_slice(dtype, &mut got);
            for (g, &x) in got.iter().zip(&xs) {
                assert_eq!(g.to_bits(), round(dtype, x).to_bits(), "{dtype} {x}");
            }
        }
        let mut big = [70000.0f32];
        round_slice(DType::F16, &mut big);
        assert_eq!(big[0], f32::INFINITY);
    }
}
