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

use super::{CommShape, Op, OpKind, Plan, PlanOptions};
use crate::layout::{Layout, Site};
use crate::program::{decode_layer_program, model_steps, LayerProgram};
use wafer_core::WaferSpec;
use wafer_models::config::ModelConfig;
use wafer_sim::collective::Algorithm;
use wafer_sim::program::Step;

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

/// A decode step around per-layer plans: the steps around the layers
/// ([`model_steps`]: the embedding, each hand-off, the final norm, LM head,
/// argmax and the token's loop-back) priced, and each layer's plan (from
/// `layer(width, height)`, called once per distinct region shape, with its layer
/// index set) in its place.
pub(crate) fn assemble(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    opts: &PlanOptions,
    mut layer: impl FnMut(u32, u32) -> Plan,
) -> Plan {
    let around = model_steps(spec, cfg, layout, opts);
    let mut plan = Plan::default();
    push_steps(&mut plan, spec, &around.embedding, None);
    price_layers(&mut plan, layout, &mut layer, |plan, l, _, _| {
        push_steps(plan, spec, &around.after_layer[l], Some(l as u32))
    });
    push_steps(&mut plan, spec, &around.head, None);
    plan
}

/// Every layer of `layout` in order: its plan (`layer(width, height)`, lowered
/// once per distinct region shape — layers on one shape at one context cost the
/// same, which keeps a 400-layer plan closed-form) with its layer index set,
/// then what `after(plan, layer, site, next site)` adds (its hand-off).
pub(crate) fn price_layers(
    plan: &mut Plan,
    layout: &Layout,
    mut layer: impl FnMut(u32, u32) -> Plan,
    mut after: impl FnMut(&mut Plan, usize, &Site, &Site),
) {
    let mut cache: Vec<((u32, u32), Plan)> = Vec::new();
    for (l, site) in layout.layers.iter().enumerate() {
        let key = (site.region.width(), site.region.height());
        let layer_plan = match cache.iter().find(|(k, _)| *k == key) {
            Some((_, p)) => p,
            None => {
                cache.push((key, layer(key.0, key.1)));
                &cache[cache.len() - 1].1
            }
        };
        plan.ops.extend(layer_plan.ops.iter().map(|op| Op {
            layer: Some(l as u32),
            ..op.clone()
        }));
        let next = layout.layers.get(l + 1).unwrap_or(&layout.lm_head);
        after(plan, l, site, next);
    }
}

/// Program steps as costed operations of `layer` (or of none).
pub(crate) fn push_steps(
    plan: &mut Plan,
    spec: &WaferSpec,
    steps: &[Step<OpKind>],
    layer: Option<u32>,
) {
    for s in steps {
        plan.push(
            s.label,
            layer,
            s.work_per_pe,
            s.collective.as_ref().map(|c| CommShape {
                line_pes: c.line_pes(),
                values_per_pe: c.values_per_pe,
            }),
            s.cost(spec),
        );
    }
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
    push_steps(&mut p, spec, &program.steps, None);
    p
}
