//! Choosing the next token from logits: greedy at temperature 0, otherwise
//! temperature, then top-k, then top-p (the order Hugging Face's logits warpers
//! apply them), drawn with a seeded ChaCha generator so a seed fixes the text.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep only the k most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p.
    pub top_p: f32,
    pub seed: u64,
}

impl SamplingParams {
    pub fn greedy() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            top_k: None,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Rejects values that have no meaning, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            bail!(
                "--temperature must be a finite number >= 0, found {}",
                self.temperature
            );
        }
        if self.top_k == Some(0) {
            bail!("--top-k must be at least 1, found 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p must be in (0, 1], found {}", self.top_p);
        }
        Ok(())
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha20Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let rng = ChaCha20Rng::seed_from_u64(params.seed);
        Ok(Sampler { params, rng })
    }

    /// The next token. Logits that are NaN or +infinity (a broken forward pass)
    /// are an error rather than a token; -infinity means "never this token".
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        check_logits(logits)?;
        if self.params.temperature == 0.0 {
            return Ok(argmax(logits));
        }
        let candidates = candidates(logits, &self.params);
        let u: f32 = self.rng.gen();
        let mut cum = 0.0;
        for &(id, p) in &candidates {
            cum += p;
            if u < cum {
                return Ok(id);
            }
        }
        // Rounding can leave the total a hair under u; the last candidate takes it.
        Ok(candidates
            .last()
            .map(|c| c.0)
            .unwrap_or_else(|| argmax(logits)))
    }
}

/// Refuses logits no token can be chosen from: any NaN or +infinity, or none finite.
pub fn check_logits(logits: &[f32]) -> Result<()> {
    if let Some(i) = logits
        .iter()
        .position(|l| l.is_nan() || *l == f32::INFINITY)
    {
        bail!(
            "the model produced an invalid logit ({}) for token id {i} of {}: cannot choose a token",
            logits[i],
            logits.len()
        );
    }
    if !logits.iter().any(|l| l.is_finite()) {
        bail!(
            "the model produced no finite logit among {} tokens: cannot choose a token",
            logits.len()
        );
    }
    Ok(())
}

/// The first index of the largest logit (as `torch.argmax` picks ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The tokens that may be drawn, most likely first, with renormalised
/// probabilities, after temperature, top-k and top-p.
pub fn candidates(logits: &[f32], p: &SamplingParams) -> Vec<(u32, f32)> {
    let t = if p.temperature > 0.0 {
        p.temperature
    } else {
        1.0
    };
    // Subtract the largest logit before dividing: (l - max) / t is at most 0, so
    // a tiny temperature (even a subnormal one) sends the others to -inf (weight 0)
    // instead of overflowing every logit to +inf and the softmax to NaN; that is
    // greedy decoding, the limit of a vanishing temperature.
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut items: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, if l == top { 0.0 } else { (l - top) / t }))
        .collect();
    let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if let Some(k) = p.top_k {
        if k < items.len() {
            items.select_nth_unstable_by(k - 1, by_logit_desc);
            items.truncate(k);
        }
    }
    items.sort_unstable_by(by_logit_desc);
    let max = items.first().map(|x| x.1).unwrap_or(0.0);
    let mut sum = 0.0f64;
    for it in items.iter_mut() {
        it.1 = (it.1 - max).exp();
        sum += it.1 as f64;
    }
    items
        .iter_mut()
        .for_each(|it| it.1 = (it.1 as f64 / sum) as f32);
    if p.top_p < 1.0 {
        let mut cum = 0.0f64;
        let mut keep = items.len();
        for (i, it) in items.iter().enumerate() {
            cum += it.1 as f64;
            if cum >= p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        items.truncate(keep);
        let total: f64 = items.iter().map(|x| x.1 as f64).sum();
        items
            .iter_mut()
            .for_each(|it| it.1 = (it.1 as f64 / total) as f32);
    }
    items
}

/// The `k` most likely tokens and their log-probabilities (log-softmax of the logits).
pub fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max as f64
        + logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln();
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(idx.len());
    let cmp = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    idx.truncate(k);
    idx.sort_unstable_by(cmp);
    idx.into_iter()
        .map(|i| (i, (logits[i as usize] as f64 - lse) as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: Option<usize>, top_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed: 7,
        }
    }

    #[test]
    fn top_k_and_top_p_keep_the_right_sets() {
        // Probabilities 0.5, 0.25, 0.125, 0.125 at temperature 1.
        let logits = [2f32.ln() + 1.0, 1.0, 0.5f32.ln() + 1.0, 0.5f32.ln() + 1.0];
        let ids = |c: Vec<(u32, f32)>| c.into_iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(
            ids(candidates(&logits, &params(1.0, None, 1.0))),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            ids(candidates(&logits, &params(1.0, Some(2), 1.0))),
            vec![0, 1]
        );
        // 0.5 < 0.6 <= 0.75: the first two.
        assert_eq!(
            ids(candidates(&logits, &params(1.0, None, 0.6))),
            vec![0, 1]
        );
        assert_eq!(ids(candidates(&logits, &params(1.0, None, 0.5))), vec![0]);
        let c = candidates(&logits, &params(1.0, Some(2), 1.0));
        assert!(
            (c[0].1 - 2.0 / 3.0).abs() < 1e-6,
            "renormalised after top-k"
        );
        // Temperature 2 flattens: p ∝ sqrt(0.5, 0.25, ...).
        let c = candidates(&logits, &params(2.0, None, 1.0));
        let z = 0.5f32.sqrt() + 0.5 + 2.0 * 0.125f32.sqrt();
        assert!((c[0].1 - 0.5f32.sqrt() / z).abs() < 1e-6);
    }

    #[test]
    fn same_seed_same_draws_and_greedy_is_argmax() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7919) % 13) as f32 / 3.0).collect();
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0, Some(20), 0.9)
            })
            .unwrap();
            (0..64)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        let mut g = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(g.sample(&[0.1, 3.0, -1.0, 3.0]).unwrap(), 1);
        // Draws stay inside the top-k set.
        let allowed: Vec<u32> = candidates(&logits, &params(1.0, Some(20), 0.9))
            .iter()
            .map(|x| x.0)
            .collect();
        assert!(draw(3).iter().all(|t| allowed.contains(t)));
    }

    #[test]
    fn top_logprobs_are_log_softmax() {
        let t = top_logprobs(&[0.0, 2f32.ln(), 0.0], 2);
        assert_eq!(t[0].0, 1);
        assert!((t[0].1 - 0.5f32.ln()).abs() < 1e-6 && (t[1].1 - 0.25f32.ln()).abs() < 1e-6);
        assert_eq!(t[1].0, 0, "ties go to the lower id");
    }

    #[test]
    fn bad_values_are_rejected_naming_the_flag() {
        let check = |p: SamplingParams, needle: &str| {
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        };
        check(params(-1.0, None, 1.0), "--temperature");
        check(params(f32::NAN, None, 1.0), "--temperature");
        check(params(1.0, Some(0), 1.0), "--top-k");
        check(params(1.0, None, 0.0), "--top-p");
        check(params(1.0, None, 1.5), "--top-p");
    }

    #[test]
    fn tiny_temperatures_pick_the_most_likely_token() {
        let logits = [1.0, 5.0, 4.999, -3.0, f32::NEG_INFINITY];
        for t in [1e-30, 1e-37, 1e-39, 1e-45, f32::MIN_POSITIVE] {
            let c = candidates(&logits, &params(t, None, 1.0));
            assert!(c.iter().all(|x| x.1.is_finite()), "t={t}: {c:?}");
            assert_eq!((c[0].0, c[0].1), (1, 1.0), "t={t}: {c:?}");
            let mut s = Sampler::new(params(t, None, 1.0)).unwrap();
            for _ in 0..20 {
                assert_eq!(s.sample(&logits).unwrap(), 1, "t={t}");
            }
        }
        // Large logits at a small temperature stay finite too.
        let c = candidates(&[3e38, -3e38, 2e38], &params(1e-3, None, 1.0));
        assert_eq!((c[0].0, c[0].1), (0, 1.0), "{c:?}");
    }

    #[test]
    fn nan_or_infinite_logits_are_an_error_not_a_token() {
        for t in [0.0, 0.7] {
            let mut s = Sampler::new(params(t, None, 1.0)).unwrap();
            for bad in [
                vec![f32::NAN, 1.0, 2.0],
                vec![0.0, 1.0, f32::INFINITY],
                vec![f32::NEG_INFINITY; 3],
            ] {
                let e = s.sample(&bad).unwrap_err().to_string();
                assert!(e.contains("logit"), "t={t} {bad:?}: {e}");
            }
            assert_eq!(
                s.sample(&[f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY])
                    .unwrap(),
                1
            );
        }
    }
}
