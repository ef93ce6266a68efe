//! The price of one decode step (batch 1, KV length T) on the layout's regions:
//! each layer's placed program ([`crate::program`]) priced step by step,
//! and around the layers the embedding lookup, the hand-offs between regions and
//! wafers, the final norm, the LM head, the argmax and the token's loop-back.
//!
//! Every reduction is a K-tree run from both ends of its line toward the middle
//! PE: by default K = 2 with the number of groups that minimises its depth
//! ([`tree_for`]); [`PlanOptions`] picks another K. Rooting in the middle halves
//! the distance a partial sum travels; in steady state each phase's broadcast
//! leaves a V-shaped wavefront that the next reduction runs against for half a
//! line only.
//!
//! The KV length enters a layer's cost only as the cached positions per PE,
//! `ceil(T / h)`, and every term grows (weakly) with it: kernel cycles are
//! `max(ceil(n / simd), bytes / port) + n * loop` plus a constant, collective
//! cycles grow with the wavelets carried, and the spec rejects negative cost
//! fields. So a decode step never gets cheaper as T grows; the token-by-token
//! prefill ([`super::token_prefill`]) relies on both facts.

use super::{CommShape, OpKind, Plan, PlanOptions};
use crate::layout::{Layout, Site};
use crate::program::{decode_layer_program, LayerProgram};
use wafer_core::WaferSpec;
use wafer_kernels::{matrix, vector};
use wafer_models::config::ModelConfig;
use wafer_sim::collective::{wavelets, Algorithm, Line};
use wafer_sim::transfer::{offwafer_cost, parallel_lines_cost};
use wafer_sim::Cost;

/// The reduction decode uses on a line of `p` PEs: a K = 2 tree run from both
/// ends toward the middle, with the group count that minimises the depth of
/// each half-line (about sqrt(p / 2)).
pub fn tree_for(p: u32) -> Algorithm {
    let half = p - p.saturating_sub(1) / 2;
    let root = (half as f64).sqrt().round().max(1.0) as u32;
    let depth = |g: u32| half.div_ceil(g) + g;
    let best = (root.saturating_sub(2).max(1)..=root + 2)
        .min_by_key(|&g| depth(g))
        .unwrap_or(1);
    Algorithm::MidKTree {
        k: 2,
        groups: Some(best),
    }
}

pub(crate) fn div(a: usize, b: u32) -> u64 {
    (a as u64).div_ceil(b.max(1) as u64)
}

/// Allreduce of `values` values of `bytes` each along a line of `p` PEs, on the
/// reduction tree `opts` chooses.
pub(crate) fn allreduce(
    spec: &WaferSpec,
    opts: &PlanOptions,
    p: u32,
    values: u64,
    bytes: u64,
) -> (Cost, Option<CommShape>) {
    let w = wavelets(spec, values, bytes);
    // Two dependent phases (reduce, broadcast) inside a layer program.
    let sync = if p > 1 {
        Cost::sync(wafer_core::Cycles(2.0 * spec.cost.layer_phase_sync_cycles))
    } else {
        Cost::default()
    };
    (
        Line::new(p).allreduce_cost(spec, w, opts.tree(p)) + sync,
        Some(CommShape {
            line_pes: p,
            values_per_pe: values,
        }),
    )
}

/// Moving the `d`-vector (split over `h` rows) from one site to the next, then
/// replicating it along the rows of the new region.
pub(crate) fn handoff(spec: &WaferSpec, from: &Site, to: &Site, values: u64) -> Cost {
    if from == to {
        return Cost::default();
    }
    let act = spec.precision.activation_dtype.size_bytes();
    let rows = to.region.height().max(1);
    let per_row = wavelets(spec, values.div_ceil(rows as u64), act);
    let replicate = Line::new(to.region.width()).broadcast_cost(spec, per_row, 0);
    if from.wafer != to.wafer {
        offwafer_cost(spec, values * act) + replicate
    } else {
        let hops = from.region.origin.hops_to(to.region.origin) + from.region.width() as u64;
        parallel_lines_cost(spec, per_row, hops) + replicate
    }
}

/// One decode step at KV length `context` (the new token included), with the
/// default K = 2 reduction tree.
pub fn decode_plan(spec: &WaferSpec, cfg: &ModelConfig, layout: &Layout, context: usize) -> Plan {
    decode_plan_with(spec, cfg, layout, context, &PlanOptions::default())
}

/// [`decode_plan`] with explicit lowering options.
pub fn decode_plan_with(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    context: usize,
    opts: &PlanOptions,
) -> Plan {
    assemble(spec, cfg, layout, opts, |w, h| {
        decode_layer_with(spec, cfg, w, h, context, opts)
    })
}

/// A decode step around per-layer plans: the embedding, each layer's plan (from
/// `layer(width, height)`, called once per distinct region shape, with its layer
/// index set) and its hand-off, then the final norm, LM head, argmax and the
/// token's loop-back.
pub(crate) fn assemble(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    opts: &PlanOptions,
    mut layer: impl FnMut(u32, u32) -> Plan,
) -> Plan {
    let mut plan = Plan::default();
    let act = spec.precision.activation_dtype.size_bytes();
    let d = cfg.hidden_size;

    // Embedding: the PEs holding the token's row read it and send it to layer 0.
    let first = layout.layers.first().copied().unwrap_or(layout.lm_head);
    let emb_rows = first.region.height();
    plan.push(
        OpKind::Embedding,
        None,
        div(d, emb_rows),
        None,
        Cost::compute(vector::scale_cycles(spec, div(d, emb_rows)))
            + handoff(spec, &layout.embedding, &first, d as u64),
    );

    // Layers on the same region shape at the same context cost the same: lower
    // each distinct shape once (keeps the 400-layer estimate closed-form).
    let mut cache: Vec<((u32, u32), Plan)> = Vec::new();
    for (l, site) in layout.layers.iter().enumerate() {
        let key = (site.region.width(), site.region.height());
        let layer_plan = match cache.iter().find(|(k, _)| *k == key) {
            Some((_, p)) => p.clone(),
            None => {
                let p = layer(key.0, key.1);
                cache.push((key, p.clone()));
                p
            }
        };
        for mut op in layer_plan.ops {
            op.layer = Some(l as u32);
            plan.ops.push(op);
        }
        let next = layout.layers.get(l + 1).unwrap_or(&layout.lm_head);
        let h = handoff(spec, site, next, d as u64);
        if h.total().get() > 0.0 {
            plan.push(
                OpKind::Handoff,
                Some(l as u32),
                div(d, next.region.height()),
                None,
                h,
            );
        }
    }

    // Final norm, LM head GEMV and the argmax over the vocabulary.
    let (w, h) = (
        layout.lm_head.region.width(),
        layout.lm_head.region.height(),
    );
    let xr = div(d, h);
    let (ar, comm) = allreduce(spec, opts, h, 1, 4);
    plan.push(
        OpKind::FinalNorm,
        None,
        xr,
        comm,
        Cost::compute(vector::sum_squares_cycles(spec, xr) + vector::rms_scale_cycles(spec, xr))
            + ar,
    );
    let vocab_cols = div(cfg.vocab_size, w);
    let (ar, comm) = allreduce(spec, opts, h, vocab_cols, act);
    plan.push(
        OpKind::LmHead,
        None,
        xr * vocab_cols,
        comm,
        Cost::compute(matrix::gemv_tile_cycles(spec, xr, vocab_cols)) + ar,
    );
    // (value, index) pairs: two wavelets, reduced along the row toward column 0.
    let argmax = Line::new(w).reduce_cost(spec, 2, opts.tree(w));
    plan.push(
        OpKind::Argmax,
        None,
        vocab_cols,
        Some(CommShape {
            line_pes: w,
            values_per_pe: 1,
        }),
        Cost::compute(vector::max_cycles(spec, vocab_cols)) + argmax,
    );
    // The chosen token id goes back to the embedding's site for the next step.
    let back = if layout.lm_head.wafer != layout.embedding.wafer {
        offwafer_cost(spec, 4)
    } else {
        let hops = layout
            .lm_head
            .region
            .origin
            .hops_to(layout.embedding.region.origin);
        parallel_lines_cost(spec, 1, hops)
    };
    plan.push(OpKind::TokenLoopback, None, 1, None, back);
    plan
}

/// One decoder layer's decode step on a `w x h` region (layer index unset), priced. `context` enters only as
/// `ceil(context / h)` (see the module doc), and the list of operations is the
/// same for every context.
pub fn decode_layer_with(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    w: u32,
    h: u32,
    context: usize,
    opts: &PlanOptions,
) -> Plan {
    price_layer(spec, &decode_layer_program(spec, cfg, w, h, context, opts))
}

/// A layer program's steps as costed operations (layer index unset).
pub fn price_layer(spec: &WaferSpec, program: &LayerProgram) -> Plan {
    let mut p = Plan::default();
    for s in &program.steps {
        p.push(
            s.label,
            None,
            s.work_per_pe,
            s.collective.as_ref().map(|c| CommShape {
                line_pes: c.line_pes(),
                values_per_pe: c.values_per_pe,
            }),
            s.cost(spec),
        );
    }
    p
}
