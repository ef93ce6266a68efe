//! Rotary position embeddings with the scalings Hugging Face transformers
//! implements (`modeling_rope_utils.py`, v4.46): default, linear and llama3.
//!
//! The inverse frequencies are computed in f32 in the same order of operations
//! as transformers, and each angle is the f32 product `inv_freq * position`
//! (as transformers' f32 matmul produces it) before its cosine and sine are
//! taken. At positions in the thousands one f32 ulp of the angle is ~2e-4
//! radians, so matching the rounding, not just the formula, matters.

use crate::config::{ModelConfig, RopeScaling};

/// The `head_dim / 2` inverse frequencies after scaling.
pub fn inv_freq(config: &ModelConfig) -> Vec<f32> {
    inv_freq_for(config.head_dim, config.rope_theta, &config.rope_scaling)
}

pub fn inv_freq_for(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Vec<f32> {
    // `1.0 / (base ** (arange(0, dim, 2).float() / dim))`, all in f32.
    let base = theta as f32;
    let default: Vec<f32> = (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            let p = (base as f64).powf(exponent as f64) as f32;
            1.0 / p
        })
        .collect();
    match *scaling {
        RopeScaling::Default => default,
        RopeScaling::Linear { factor } => default.iter().map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old_ctx = original_max_position_embeddings as f64;
            let low_freq_wavelen = (old_ctx / low_freq_factor) as f32;
            let high_freq_wavelen = (old_ctx / high_freq_factor) as f32;
            let factor = factor as f32;
            default
                .iter()
                .map(|&f| {
                    // torch evaluates `scalar / tensor` as `tensor.reciprocal() * scalar`.
                    let wavelen = (1.0 / f) * (2.0 * std::f64::consts::PI) as f32;
                    let llama = if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        f
                    };
                    let smooth = ((1.0 / wavelen) * old_ctx as f32 - low_freq_factor as f32)
                        / (high_freq_factor - low_freq_factor) as f32;
                    let smoothed = (1.0 - smooth) * llama / factor + smooth * llama;
                    let medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
                    if medium {
                        smoothed
                    } else {
                        llama
                    }
                })
                .collect()
        }
    }
}

/// Fills `cos` and `sin` (each `head_dim / 2`) for one position.
pub fn cos_sin(inv_freq: &[f32], position: usize, cos: &mut [f32], sin: &mut [f32]) {
    let pos = position as f32;
    for ((f, c), s) in inv_freq.iter().zip(cos.iter_mut()).zip(sin.iter_mut()) {
        let angle = (f * pos) as f64;
        *c = angle.cos() as f32;
        *s = angle.sin() as f32;
    }
}

/// Rotates one head in place, Hugging Face's `rotate_half` convention: element
/// `i` pairs with element `i + head_dim / 2`.
pub fn apply(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (a, b) = x.split_at_mut(half);
    for i in 0..half {
        let (x1, x2) = (a[i], b[i]);
        a[i] = x1 * cos[i] - x2 * sin[i];
        b[i] = x2 * cos[i] + x1 * sin[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frequencies_are_theta_powers() {
        let f = inv_freq_for(8, 10_000.0, &RopeScaling::Default);
        // 1 / 10000^(0/8, 2/8, 4/8, 6/8)
        let want = [1.0, 0.1, 0.01, 0.001];
        for (a, b) in f.iter().zip(want) {
            assert!((a - b).abs() <= b * 1e-6, "{a} vs {b}");
        }
        let lin = inv_freq_for(8, 10_000.0, &RopeScaling::Linear { factor: 4.0 });
        assert!((lin[1] - 0.025).abs() < 1e-8);
    }

    #[test]
    fn llama3_scaling_by_band_hand_checked() {
        // theta 10000, head_dim 8: wavelengths 2π/f = 6.28, 62.8, 628, 6283.
        // old context 1024, low 1, high 4: high-frequency band below 256 keeps f,
        // low-frequency band above 1024 divides by the factor 8, 628 lies between.
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 1024,
        };
        let f = inv_freq_for(8, 10_000.0, &s);
        assert!((f[0] - 1.0).abs() < 1e-7);
        assert!((f[1] - 0.1).abs() < 1e-8);
        assert!((f[3] - 0.001 / 8.0).abs() < 1e-10);
        // smooth = (1024 / 628.3185 - 1) / 3 = 0.210584; f = (1 - s) * 0.01 / 8 + s * 0.01
        let smooth = (1024.0 / (2.0 * std::f64::consts::PI / 0.01) - 1.0) / 3.0;
        let want = (1.0 - smooth) * 0.01 / 8.0 + smooth * 0.01;
        assert!((f[2] as f64 - want).abs() < 1e-8, "{} vs {want}", f[2]);
    }

    #[test]
    fn rotation_is_by_the_position_angle() {
        // One pair (head_dim 2) at frequency 1: position 3 rotates (1, 0) by 3 rad.
        let (mut c, mut s) = ([0.0], [0.0]);
        cos_sin(&[1.0], 3, &mut c, &mut s);
        let mut x = [1.0, 0.0];
        apply(&mut x, &c, &s);
        assert!((x[0] - 3f32.cos()).abs() < 1e-7 && (x[1] - 3f32.sin()).abs() < 1e-7);
    }
}
