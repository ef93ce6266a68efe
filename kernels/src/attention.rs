//! Decode attention's per-PE kernels: what one PE computes on its query dims
//! and the cached keys and values it holds (the collectives between them live
//! in the placed program). A PE holds some dims of one or more KV heads; each
//! KV head serves `group` query heads whose dims sit beside its own (query dim
//! `e * group + m` is head `m` of the group at KV dim `e`).
//!
//! - [`score_partials`]: the PE's share of every query head's dot with a block of
//!   cached keys (the `attention scores` step's `Gemv` over the cache);
//! - [`max_into`]: a running max of scores per head (`softmax max`);
//! - [`softmax_weights`]: one position's `exp(score - max)` and the running sums
//!   (`softmax exp-sum`);
//! - [`weighted_values`]: one position's values weighted by its heads' weights
//!   (`attention x V`), and [`normalize_heads`], the division by the sums.
//!
//! Their cycles are [`crate::Kernel`]'s `Gemv`, `Max`, `ExpSum` and `Normalize`.

use std::ops::Range;

/// Adds a PE's partial scores for a block of positions: `part[m * n + t] +=
/// sum over e in dims of q[e * group + m] * keys[e * key_stride + t]`, for the
/// `group` query heads `m` and the block's `n = part.len() / group` positions.
/// `keys` holds each key dim's positions contiguously, `key_stride` apart.
#[inline]
pub fn score_partials(
    part: &mut [f32],
    q: &[f32],
    keys: &[f32],
    key_stride: usize,
    dims: Range<usize>,
    group: usize,
) {
    let n = part.len() / group.max(1);
    for e in dims {
        let kv = &keys[e * key_stride..e * key_stride + n];
        for (pm, &qm) in part.chunks_exact_mut(n).zip(&q[e * group..(e + 1) * group]) {
            for (p, &k) in pm.iter_mut().zip(kv) {
                *p += qm * k;
            }
        }
    }
}

/// `max[h] = max(max[h], scores[h])` for every head.
#[inline]
pub fn max_into(max: &mut [f32], scores: &[f32]) {
    for (m, &s) in max.iter_mut().zip(scores) {
        *m = m.max(s);
    }
}

/// One position's softmax weights `p[h] = exp(scores[h] - max[h])`, added to
/// the running `sum[h]`.
#[inline]
pub fn softmax_weights(scores: &[f32], max: &[f32], p: &mut [f32], sum: &mut [f32]) {
    for (((p, s), &m), &x) in p.iter_mut().zip(sum.iter_mut()).zip(max).zip(scores) {
        *p = (x - m).exp();
        *s += *p;
    }
}

/// Adds one position's values weighted by its heads' weights: `out[e * group +
/// m] += p[(e / head_dim) * group + m] * v[e]` for each of the PE's KV dims `e`.
#[inline]
pub fn weighted_values(out: &mut [f32], p: &[f32], v: &[f32], head_dim: usize, group: usize) {
    for (e, &ve) in v.iter().enumerate() {
        let gk = e / head_dim;
        let weights = &p[gk * group..(gk + 1) * group];
        for (o, &w) in out[e * group..(e + 1) * group].iter_mut().zip(weights) {
            *o += w * ve;
        }
    }
}

/// `out[e * group + m] = values[e * group + m] / sum[(e / head_dim) * group + m]`.
#[inline]
pub fn normalize_heads(
    out: &mut [f32],
    values: &[f32],
    sum: &[f32],
    head_dim: usize,
    group: usize,
) {
    for (e, (o, v)) in out
        .chunks_exact_mut(group)
        .zip(values.chunks_exact(group))
        .enumerate()
    {
        let gk = e / head_dim;
        for (m, (o, v)) in o.iter_mut().zip(v).enumerate() {
            *o = v / sum[gk * group + m];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One PE holding every dim: the kernels composed give softmax attention,
    /// checked against a direct f64 evaluation.
    #[test]
    fn composed_on_one_pe_they_are_softmax_attention() {
        let (hd, kv_heads, group, n) = (4usize, 2usize, 3usize, 5usize);
        let kv_dim = hd * kv_heads;
        let heads = kv_heads * group;
        let val = |i: usize| ((i * 37 % 17) as f32 - 8.0) / 7.0;
        // Query dims in the grouped order; keys and values per position.
        let q: Vec<f32> = (0..kv_dim * group).map(|i| val(i + 3)).collect();
        let ks: Vec<Vec<f32>> = (0..n)
            .map(|t| (0..kv_dim).map(|e| val(7 * t + e + 1)).collect())
            .collect();
        let vs: Vec<Vec<f32>> = (0..n)
            .map(|t| (0..kv_dim).map(|e| val(11 * t + 2 * e)).collect())
            .collect();
        // Keys dim-major, as the cache stores a block.
        let keys: Vec<f32> = (0..kv_dim)
            .flat_map(|e| ks.iter().map(move |k| k[e]))
            .collect();
        let mut scores = vec![0.0; heads * n];
        for gk in 0..kv_heads {
            score_partials(
                &mut scores[gk * group * n..(gk + 1) * group * n],
                &q,
                &keys,
                n,
                gk * hd..(gk + 1) * hd,
                group,
            );
        }
        let at = |t: usize| -> Vec<f32> { (0..heads).map(|h| scores[h * n + t]).collect() };
        let mut max = vec![f32::NEG_INFINITY; heads];
        for t in 0..n {
            max_into(&mut max, &at(t));
        }
        let (mut p, mut sum) = (vec![0.0; heads], vec![0.0; heads]);
        let mut values = vec![0.0; kv_dim * group];
        for (t, v) in vs.iter().enumerate() {
            softmax_weights(&at(t), &max, &mut p, &mut sum);
            weighted_values(&mut values, &p, v, hd, group);
        }
        let mut out = vec![0.0; kv_dim * group];
        normalize_heads(&mut out, &values, &sum, hd, group);
        for gk in 0..kv_heads {
            for m in 0..group {
                let dims = gk * hd..(gk + 1) * hd;
                let s: Vec<f64> = ks
                    .iter()
                    .map(|k| {
                        dims.clone()
                            .map(|e| q[e * group + m] as f64 * k[e] as f64)
                            .sum()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let w: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = w.iter().sum();
                for e in dims {
                    let want: f64 =
                        w.iter().zip(&vs).map(|(w, v)| w * v[e] as f64).sum::<f64>() / z;
                    let got = out[e * group + m] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "head {gk}/{m} dim {e}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
