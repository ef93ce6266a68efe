//! The price of speculative decoding: one verification step, the K draft
//! tokens plus the last accepted one run through every layer at once, against
//! K + 1 decode steps.
//!
//! A verification step is the streamed pass ([`layer_pass_program`] with
//! `tokens = K + 1`, the last token at KV length `position + K + 1`): every
//! GEMV becomes a GEMM of K + 1 rows through the same weight tile and every
//! collective carries K + 1 times the values, so the K + 1 tokens share every
//! collective's fixed latency (phase overhead, tree depth, hops, ramps). Around
//! the layers: the embedding of K + 1 tokens, each hand-off carrying K + 1
//! residual vectors, and the final norm, LM head (a GEMM of K + 1 rows), argmax
//! and loop-back for every one of the K + 1 positions (verification needs each
//! position's choice). Rejected draft tokens are charged in full (the step runs
//! them all); rolling them back is a length change in every PE's cache, charged
//! nothing.
//!
//! Drafting: prompt lookup runs on the host and is charged 0 cycles (an n-gram
//! match over the text so far, microseconds at most, not modelled); a draft model
//! is charged K of its own decode steps per verification step, on its own
//! placement (its own wafer or region, an assumption: it does not share the
//! target's PEs), run before the verification step (not overlapped).
//!
//! With acceptance rate `a` (each draft accepted with probability `a`,
//! independently, until the first rejection) a step yields
//! [`expected_tokens_per_verify`] `= (1 - a^(K+1)) / (1 - a)` tokens.

use super::decode::{div, price_layer, price_layers, push_steps};
use super::{decode_plan_with, OpKind, Plan, PlanOptions};
use crate::layout::Layout;
use crate::program::{embedding_step, handoff, head_steps, layer_pass_program};
use serde::Serialize;
use thiserror::Error;
use wafer_core::{Cycles, WaferSpec};
use wafer_models::config::ModelConfig;
use wafer_sim::program::Step;

/// The most draft tokens per verification step priced (as `--speculate` takes).
pub const MAX_SPECULATE_K: usize = 64;

#[derive(Debug, Error, PartialEq)]
pub enum SpeculateError {
    #[error("the acceptance rate must be a number from 0 to 1, found {0}")]
    Acceptance(f64),
    #[error("draft tokens per step must be from 1 to {MAX_SPECULATE_K}, found {0}")]
    DraftTokens(usize),
}

/// Expected tokens one verification step yields with `k` drafts each accepted
/// with probability `a` (i.i.d., up to the first rejection), counting the
/// target's own token after the accepted ones: `sum_{i=0..=k} a^i
/// = (1 - a^(k+1)) / (1 - a)`, `k + 1` at `a = 1`.
pub fn expected_tokens_per_verify(a: f64, k: usize) -> Result<f64, SpeculateError> {
    if !(0.0..=1.0).contains(&a) {
        return Err(SpeculateError::Acceptance(a));
    }
    if a == 1.0 {
        return Ok(k as f64 + 1.0);
    }
    Ok((1.0 - a.powi(k as i32 + 1)) / (1.0 - a))
}

/// One verification step: `tokens` (the last accepted token and the drafts,
/// at least 1) at positions `position..position + tokens`, each attending to
/// the whole `position + tokens` (the causal mask saves nothing, as in the
/// streamed prefill). With `tokens = 1` it is the decode step at KV length
/// `position + 1`.
pub fn verify_plan(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    position: usize,
    tokens: usize,
    opts: &PlanOptions,
) -> Plan {
    let n = tokens.max(1);
    let keys = position + n;
    let d = cfg.hidden_size;
    let embedding = embedding_step(spec, layout, d, n);
    let mut plan = Plan::default();
    push_steps(&mut plan, spec, &[embedding], None);
    price_layers(
        &mut plan,
        layout,
        |w, h| price_layer(spec, &layer_pass_program(spec, cfg, w, h, keys, n, opts)),
        |plan, l, site, next| {
            if let Some(t) = handoff(spec, site, next, (n * d) as u64) {
                let step = Step {
                    label: OpKind::Handoff,
                    work_per_pe: div(d, next.region.height()) * n as u64,
                    kernels: vec![],
                    collective: None,
                    transfer: Some(t),
                    cannon: None,
                };
                push_steps(plan, spec, &[step], Some(l as u32));
            }
        },
    );
    push_steps(
        &mut plan,
        spec,
        &head_steps(spec, cfg, layout, n, opts),
        None,
    );
    plan
}

/// Decode with and without speculation at one KV length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Speculation {
    /// Draft tokens per verification step.
    pub k: usize,
    pub acceptance: f64,
    /// One decode step at the KV length.
    pub decode_cycles: Cycles,
    /// One verification step of K + 1 tokens, the first at the KV length.
    pub verify_cycles: Cycles,
    /// Drafting K tokens (0 for prompt lookup).
    pub draft_cycles: Cycles,
    /// `verify_cycles / decode_cycles`: what K + 1 tokens cost in decode steps.
    pub verify_over_decode: f64,
    /// Expected tokens per verification step.
    pub tokens_per_verify: f64,
    pub decode_tokens_per_s: f64,
    pub speculative_tokens_per_s: f64,
    /// `speculative_tokens_per_s / decode_tokens_per_s`.
    pub speedup: f64,
}

/// Decode at KV length `context` (at least 1) with `k` drafts per step accepted
/// at rate `acceptance`, drafting costing `draft_cycles_per_token` cycles per
/// draft token (0 for prompt lookup; a draft model's decode step).
#[allow(clippy::too_many_arguments)]
pub fn speculation(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    context: usize,
    k: usize,
    acceptance: f64,
    draft_cycles_per_token: Cycles,
    opts: &PlanOptions,
) -> Result<Speculation, SpeculateError> {
    if k == 0 || k > MAX_SPECULATE_K {
        return Err(SpeculateError::DraftTokens(k));
    }
    let tokens_per_verify = expected_tokens_per_verify(acceptance, k)?;
    let context = context.max(1);
    let decode = decode_plan_with(spec, cfg, layout, context, opts).total();
    let verify = verify_plan(spec, cfg, layout, context - 1, k + 1, opts).total();
    let draft = Cycles(draft_cycles_per_token.get() * k as f64);
    let decode_tokens_per_s = spec.clock_hz / decode.get();
    let speculative_tokens_per_s = tokens_per_verify * spec.clock_hz / (verify + draft).get();
    Ok(Speculation {
        k,
        acceptance,
        decode_cycles: decode,
        verify_cycles: verify,
        draft_cycles: draft,
        verify_over_decode: verify.get() / decode.get(),
        tokens_per_verify,
        decode_tokens_per_s,
        speculative_tokens_per_s,
        speedup: speculative_tokens_per_s / decode_tokens_per_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimate::{placement_for, EstimateOptions};

    #[test]
    fn expected_tokens_per_step_by_hand() {
        let e = |a, k| expected_tokens_per_verify(a, k).unwrap();
        // 1 + a + ... + a^K, summed by hand.
        assert!((e(0.5, 2) - 1.75).abs() < 1e-12);
        assert!((e(0.5, 4) - 1.9375).abs() < 1e-12);
        assert!((e(0.8, 3) - (1.0 + 0.8 + 0.64 + 0.512)).abs() < 1e-12);
        // Nothing accepted: the target's own token only; everything: K + 1.
        assert_eq!(e(0.0, 8), 1.0);
        assert_eq!(e(1.0, 8), 9.0);
        assert!(e(0.999_999, 8) < 9.0 && e(0.999_999, 8) > 8.99);
        assert_eq!(
            expected_tokens_per_verify(1.5, 4),
            Err(SpeculateError::Acceptance(1.5))
        );
        assert!(expected_tokens_per_verify(f64::NAN, 4).is_err());
    }

    fn smollm2() -> (WaferSpec, ModelConfig, Layout) {
        let spec = wafer_core::spec::wse3();
        let cfg = wafer_models::presets::lookup("smollm2-135m").unwrap();
        let layout = placement_for(
            &spec,
            &cfg,
            &EstimateOptions {
                wafers: None,
                region: None,
                strategy: Default::default(),
                context: 2048,
                prompt_tokens: 0,
            },
        )
        .unwrap()
        .layout();
        (spec, cfg, layout)
    }

    #[test]
    fn a_one_token_verification_is_the_decode_step() {
        let (spec, cfg, layout) = smollm2();
        let opts = PlanOptions::default();
        for position in [0, 100, 1000] {
            let verify = verify_plan(&spec, &cfg, &layout, position, 1, &opts);
            let decode = decode_plan_with(&spec, &cfg, &layout, position + 1, &opts);
            assert_eq!(verify, decode, "at position {position}");
        }
    }

    #[test]
    fn verifying_k_plus_1_tokens_costs_less_than_k_plus_1_decode_steps() {
        let (spec, cfg, layout) = smollm2();
        let opts = PlanOptions::default();
        let decode = decode_plan_with(&spec, &cfg, &layout, 512, &opts).total();
        let mut last = decode;
        for k in [1, 2, 4, 8] {
            let v = verify_plan(&spec, &cfg, &layout, 511, k + 1, &opts).total();
            assert!(v > last, "K = {k}: more tokens never cost less");
            assert!(
                v.get() < (k + 1) as f64 * decode.get(),
                "K = {k}: {v:?} vs {} decode steps of {decode:?}",
                k + 1
            );
            last = v;
        }
        let s = speculation(&spec, &cfg, &layout, 512, 4, 0.0, Cycles::ZERO, &opts).unwrap();
        // Nothing accepted: one token per (dearer) step, slower than decode.
        assert!(s.speedup < 1.0 && s.tokens_per_verify == 1.0);
        let s = speculation(&spec, &cfg, &layout, 512, 4, 1.0, Cycles::ZERO, &opts).unwrap();
        assert!((s.speedup - 5.0 / s.verify_over_decode).abs() < 1e-9);
        assert_eq!(
            speculation(&spec, &cfg, &layout, 512, 0, 0.5, Cycles::ZERO, &opts),
            Err(SpeculateError::DraftTokens(0))
        );
    }
}
