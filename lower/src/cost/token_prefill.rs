//! Prefill as decode steps: the N prompt tokens run one at a time through the
//! decode lowering ([`super::decode_plan`]), step `t` (1-based) attending over a
//! KV length of `t`. Cheaper than the MeshGEMM prefill for short prompts, whose
//! Cannon schedule pays P shift steps per GEMM whatever N is.
//!
//! What each step costs, exactly:
//! - every step: the embedding lookup and its hand-off to layer 0, every layer
//!   at KV length `t`, and the hand-offs between layers' regions (the new K/V of
//!   position `t` must be in every layer's cache before step `t + 1`);
//! - the last step only: the last layer's hand-off to the LM head's region, the
//!   final norm, the LM head GEMV and the argmax. An intermediate prompt
//!   position's logits are never used (the next token is the prompt's), so its
//!   hidden state stops after the last layer;
//! - no step: the token's loop-back to the embedding. The prompt's token ids are
//!   known up front, and time-to-first-token ends at the argmax, as in the
//!   MeshGEMM plan.
//!
//! Steps run one after another (batch 1, no overlap of consecutive prompt tokens
//! across pipeline stages), the same accounting as the decode plan.
//!
//! The plan has the decode plan's shape: one operation per (layer, kind), whose
//! cost and `work_per_pe` are summed over the steps that run it (its `comm` is
//! the last step's), so the breakdowns add up to the total. It is computed
//! without N decode plans: a layer's cost depends on the KV length only through
//! the cached positions per PE, `ceil(t / h)` (module doc of `decode.rs`), so one
//! layer lowering per value of that per region shape suffices, weighted by how
//! many steps share it. And because the decode cost never falls as `t` grows,
//! `N x` (the step at `t = 1`) is a lower bound that is kept up to date as the
//! groups are evaluated; evaluation stops as soon as it reaches the caller's
//! limit (the MeshGEMM cost), so a long prompt costs one extra decode plan.

use super::decode::{assemble, decode_layer_with, decode_plan_with};
use super::{Op, OpKind, Plan, PlanOptions};
use crate::layout::Layout;
use wafer_core::{Cycles, WaferSpec};
use wafer_models::config::ModelConfig;
use wafer_sim::Cost;

/// The token-by-token prefill, as far as it was evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPrefill {
    /// The plan, when evaluation ran to the end.
    pub plan: Option<Plan>,
    /// The plan's total when `plan` is set; otherwise a lower bound on it that
    /// reached the limit.
    pub cycles: Cycles,
}

/// How many of the `n` steps run an operation outside the layers (see the
/// module doc); `last` is the index of the last layer.
fn steps_running(op: &Op, n: u64, last: Option<u32>) -> u64 {
    match op.kind {
        OpKind::Embedding => n,
        OpKind::Handoff if op.layer == last => 1,
        OpKind::Handoff => n,
        OpKind::FinalNorm | OpKind::LmHead | OpKind::Argmax => 1,
        OpKind::TokenLoopback => 0,
        // Layer operations are weighted per KV-length group, not here.
        _ => n,
    }
}

fn is_layer_op(op: &Op) -> bool {
    op.layer.is_some() && op.kind != OpKind::Handoff
}

/// Adds `count` steps of `step` (the same operation list) into `sum`.
fn accumulate(sum: &mut Plan, step: Plan, count: u64) {
    debug_assert_eq!(sum.ops.len(), step.ops.len());
    for (a, b) in sum.ops.iter_mut().zip(step.ops) {
        debug_assert_eq!(a.kind, b.kind);
        a.cost += b.cost * count as f64;
        a.work_per_pe += b.work_per_pe * count;
        a.comm = b.comm;
    }
}

/// The prefill of `tokens` prompt tokens (at least 1) as decode steps, evaluated
/// only while its lower bound stays below `limit` (pass infinity for the exact
/// plan whatever it costs).
pub fn token_prefill(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    tokens: usize,
    opts: &PlanOptions,
    limit: Cycles,
) -> TokenPrefill {
    let n = tokens.max(1) as u64;
    let last = layout.layers.len().checked_sub(1).map(|l| l as u32);

    // Operations outside the layers do not depend on the KV length.
    let first_step = decode_plan_with(spec, cfg, layout, 1, opts);
    let outside: f64 = first_step
        .ops
        .iter()
        .filter(|o| !is_layer_op(o))
        .map(|o| o.cost.total().get() * steps_running(o, n, last) as f64)
        .sum();

    // Distinct region shapes, how many layers each holds, and the lower bound
    // with every step priced at KV length 1.
    let mut shapes: Vec<((u32, u32), u64)> = Vec::new();
    for site in &layout.layers {
        let key = (site.region.width(), site.region.height());
        match shapes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, c)) => *c += 1,
            None => shapes.push((key, 1)),
        }
    }
    let mut bound = outside;
    let mut firsts = Vec::with_capacity(shapes.len());
    for &((w, h), layers) in &shapes {
        let l1 = decode_layer_with(spec, cfg, w, h, 1, opts);
        bound += (layers * n) as f64 * l1.total().get();
        firsts.push(l1);
    }
    if bound >= limit.get() {
        return TokenPrefill {
            plan: None,
            cycles: Cycles(bound),
        };
    }

    // Exact sums per shape, group by group of steps with the same ceil(t / h).
    // Raising group k's price from the previous group's to its own adds
    // (steps from group k on) x (the difference) to the bound, never less than 0.
    let mut sums: Vec<((u32, u32), Plan)> = Vec::with_capacity(shapes.len());
    for (&((w, h), layers), l1) in shapes.iter().zip(firsts) {
        let h = h.max(1) as u64;
        let mut prev = l1.total().get();
        let mut sum = l1.clone();
        for op in &mut sum.ops {
            op.cost = Cost::default();
            op.work_per_pe = 0;
        }
        accumulate(&mut sum, l1, h.min(n));
        for k in 2..=n.div_ceil(h) {
            let t = (k * h).min(n);
            let step = decode_layer_with(spec, cfg, w, h as u32, t as usize, opts);
            let cur = step.total().get();
            debug_assert!(cur >= prev, "decode cost fell as the KV length grew");
            let from_here = n - (k - 1) * h;
            bound += (layers * from_here) as f64 * (cur - prev);
            accumulate(&mut sum, step, t - (k - 1) * h);
            prev = cur;
            if bound >= limit.get() {
                return TokenPrefill {
                    plan: None,
                    cycles: Cycles(bound),
                };
            }
        }
        sums.push(((w, h as u32), sum));
    }

    let mut plan = assemble(spec, cfg, layout, opts, |w, h| {
        sums.iter()
            .find(|(k, _)| *k == (w, h))
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    });
    plan.ops.retain_mut(|op| {
        if is_layer_op(op) {
            return true;
        }
        let steps = steps_running(op, n, last);
        op.cost = op.cost * steps as f64;
        op.work_per_pe *= steps;
        steps > 0
    });
    TokenPrefill {
        cycles: plan.total(),
        plan: Some(plan),
    }
}
