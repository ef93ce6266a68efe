//! The prefill of an N-token prompt lowered onto the layout's regions, giving
//! time-to-first-token.
//!
//! Every projection is a MeshGEMM (Cannon's algorithm with an interleaved ring,
//! each shift at most 2 hops) over the largest square `P x P` inside the layer's
//! region, with the activations `X[N, d]` tiled `N/P x d/P` per PE. Attention is
//! two more MeshGEMMs over all heads at once: scores `Q K^T` (inner dimension the
//! query width, each PE accumulating only the heads its dims belong to) and
//! `P V` (inner dimension N); the Cannon schedule visits masked blocks too, so
//! the causal mask saves nothing. Softmax max and sum are allreduced along rows
//! of `P` PEs with `N/P` values each; RMSNorm likewise. The hand-off moves each
//! PE's `N/P x d/P` tile to the next region, all tiles of a row sharing that row's
//! links. After the last layer, the last position goes through the final norm,
//! the LM head and the argmax exactly as in decode.
//!
//! The Cannon schedule costs P shift steps per GEMM whatever N is, so for a
//! short prompt running the tokens one at a time through the decode lowering
//! ([`super::token_prefill`]) is cheaper. Time-to-first-token is the cheaper of
//! the two ([`prefill`]); the MeshGEMM plan is kept on a tie.

use super::decode::{div, price_layer, price_layers, push_steps};
use super::token_prefill::token_prefill;
use super::{Op, OpKind, Plan, PlanOptions};
use crate::layout::{Layout, Site};
use crate::placement::{Footprint, Item, Sizes};
use crate::program::{
    embedding_step, handoff, layer_pass_program, prefill_handoff, prefill_layer_program,
};
use anyhow::{bail, Result};
use serde::Serialize;
use wafer_core::Cycles;
use wafer_core::WaferSpec;
use wafer_kernels::Kernel;
use wafer_models::config::ModelConfig;
use wafer_sim::program::Step;
use wafer_sim::Cost;

/// How a prompt is run up to its first generated token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefillScheme {
    /// The whole prompt at once (or in chunks that fit): MeshGEMMs over each
    /// layer's largest square.
    Gemm,
    /// The prompt in chunks through each layer's decode tiling, every weight
    /// tile multiplying a chunk of tokens at once (weights stay put).
    Stream,
    /// One decode step per prompt token, the LM head only for the last.
    TokenByToken,
}

impl PrefillScheme {
    /// The JSON / CSV value: `gemm` or `token_by_token`.
    pub fn name(self) -> &'static str {
        match self {
            PrefillScheme::Gemm => "gemm",
            PrefillScheme::Stream => "stream",
            PrefillScheme::TokenByToken => "token_by_token",
        }
    }
}

/// How the MeshGEMM prefill passes the prompt through the layers: `chunks`
/// passes of `chunk_tokens` tokens (the last may be shorter), chunk `j`
/// attending to the `j + 1` chunks so far. One pass when the whole prompt's
/// tiles fit; otherwise the largest chunk (a multiple of the square's side, as
/// a smaller one frees nothing more) whose tiles fit every region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Chunking {
    pub chunks: usize,
    pub chunk_tokens: usize,
}

/// Time-to-first-token: the cheaper scheme's plan and what the other would cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Prefill {
    pub scheme: PrefillScheme,
    /// The chosen scheme's plan; its total is the time-to-first-token.
    pub plan: Plan,
    /// Total of the MeshGEMM plan; `None` when no chunk of the prompt fits.
    pub gemm_cycles: Option<Cycles>,
    /// How the MeshGEMM plan splits the prompt (when it fits at all).
    pub gemm_chunking: Option<Chunking>,
    /// Total of the streamed plan and its chunks; `None` when not even one
    /// token's buffers fit (never, on a layout that holds a decode step).
    pub stream_cycles: Option<Cycles>,
    pub stream_chunking: Option<Chunking>,
    /// Total of the token-by-token plan when `token_by_token_exact`; otherwise a
    /// lower bound that already reached `gemm_cycles` (evaluation stopped there).
    pub token_by_token_cycles: Cycles,
    pub token_by_token_exact: bool,
}

/// The three schemes for a `tokens`-token prompt (at least 1): the cheapest is
/// chosen (the MeshGEMM plan on a tie, then the streamed one); the
/// token-by-token one is evaluated only as far as it can still win. With a
/// scheme set in `opts` only that one is costed beside the token-by-token one
/// (which always fits), and it is an error if it does not fit the layout.
pub fn prefill(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    tokens: usize,
    opts: &PlanOptions,
) -> Result<Prefill> {
    // A scheme the options rule out is not costed (its figures are `None`).
    let costed = |s| opts.prefill_scheme().is_none_or(|only| only == s);
    let gemm = costed(PrefillScheme::Gemm)
        .then(|| gemm_prefill_plan(spec, cfg, layout, tokens, opts))
        .flatten();
    let stream = costed(PrefillScheme::Stream)
        .then(|| stream_prefill_plan(spec, cfg, layout, tokens, opts))
        .flatten();
    let gemm_cycles = gemm.as_ref().map(|(p, _)| p.total());
    let stream_cycles = stream.as_ref().map(|(p, _)| p.total());
    let inf = Cycles(f64::INFINITY);
    let limit = Cycles(
        gemm_cycles
            .unwrap_or(inf)
            .get()
            .min(stream_cycles.unwrap_or(inf).get()),
    );
    // With neither plan the limit is infinite and the token-by-token plan is
    // evaluated to the end.
    let tbt = token_prefill(spec, cfg, layout, tokens, opts, limit);
    let tbt_wins = tbt.plan.is_some() && tbt.cycles < limit;
    let tbt_exact = tbt.plan.is_some();
    let gemm_chunking = gemm.as_ref().map(|(_, c)| *c);
    let stream_chunking = stream.as_ref().map(|(_, c)| *c);
    let (scheme, plan) = match (gemm, stream) {
        _ if tbt_wins => (PrefillScheme::TokenByToken, tbt.plan.unwrap_or_default()),
        (Some((g, _)), Some((s, _))) if s.total() < g.total() => (PrefillScheme::Stream, s),
        (Some((g, _)), _) => (PrefillScheme::Gemm, g),
        (None, Some((s, _))) => (PrefillScheme::Stream, s),
        (None, None) => (PrefillScheme::TokenByToken, tbt.plan.unwrap_or_default()),
    };
    match opts.prefill_scheme() {
        Some(PrefillScheme::Gemm) if gemm_cycles.is_none() => bail!(
            "the MeshGEMM prefill does not fit this layout: a layer region's square cannot hold the layer's tiles with even one row of tokens"
        ),
        Some(PrefillScheme::Stream) if stream_cycles.is_none() => bail!(
            "the streamed prefill does not fit this layout: not even one token's buffers fit beside the prompt's cache"
        ),
        _ => {}
    }
    Ok(Prefill {
        scheme,
        plan,
        gemm_cycles,
        gemm_chunking,
        stream_cycles,
        stream_chunking,
        token_by_token_cycles: tbt.cycles,
        token_by_token_exact: tbt_exact,
    })
}

/// Distinct layer-region shapes of `layout` and the most layers a region of
/// that shape holds.
fn layer_shapes(layout: &Layout) -> Vec<((u32, u32), usize)> {
    let mut shapes: Vec<((u32, u32), usize)> = Vec::new();
    for site in &layout.layers {
        let key = (site.region.width(), site.region.height());
        let sharing = layout.layers.iter().filter(|s| *s == site).count();
        match shapes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, m)) => *m = (*m).max(sharing),
            None => shapes.push((key, sharing)),
        }
    }
    shapes
}

/// The streamed prefill of `tokens` prompt tokens: chunks of as many tokens as
/// the PEs' free memory holds buffers for ([`layer_pass_program`]: a chunk's
/// buffers are its token count times one token's), each chunk through every
/// layer's decode tiling, attending to the chunks so far; then the last
/// position's final norm, LM head and argmax. `None` when not even one token's
/// buffers fit beside the prompt's cache.
pub fn stream_prefill_plan(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    tokens: usize,
    opts: &PlanOptions,
) -> Option<(Plan, Chunking)> {
    let tokens = tokens.max(1);
    let shapes = layer_shapes(layout);
    let mut chunk = tokens as u64;
    for &((w, h), layers) in &shapes {
        // The region at the whole prompt's cache, as placement counts it, with
        // one token's decode buffers.
        let (sizes, one) = layer_footprint(spec, cfg, (w, h));
        let at = one.times(layers as u64).max(&sizes, tokens as u64);
        let held = at.weights.saturating_add(at.kv).saturating_add(at.reserve);
        chunk = chunk.min(sizes.sram.saturating_sub(held) / at.buffers.max(1));
    }
    if chunk == 0 {
        return None;
    }
    let chunk = chunk as usize;
    let chunking = Chunking {
        chunks: tokens.div_ceil(chunk),
        chunk_tokens: chunk,
    };
    // A chunk's cost depends on its KV length only through the cached
    // positions per PE of each shape: price each distinct pass once.
    let mut passes: Vec<((usize, Vec<u64>), usize, f64)> = Vec::new();
    for j in 0..chunking.chunks {
        let start = j * chunk;
        let n = chunk.min(tokens - start);
        let keys = start + n;
        let groups = shapes
            .iter()
            .map(|((_, h), _)| (keys as u64).div_ceil(*h as u64))
            .collect();
        let key = (n, groups);
        match passes.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, count)) => *count += 1.0,
            None => passes.push((key, keys, 1.0)),
        }
    }
    let d = cfg.hidden_size;
    let mut plan: Option<Plan> = None;
    for ((n, _), keys, count) in passes {
        let embedding = embedding_step(spec, layout, d, n);
        let pass = price_pass(
            spec,
            layout,
            embedding,
            |w, h| layer_pass_program(spec, cfg, w, h, keys, n, opts),
            |site, next| {
                handoff(spec, site, next, (n * d) as u64).map(|t| Step {
                    label: OpKind::Handoff,
                    work_per_pe: div(d, next.region.height()) * n as u64,
                    kernels: vec![],
                    collective: None,
                    transfer: Some(t),
                    cannon: None,
                })
            },
        );
        let sum = plan.get_or_insert_with(|| zeroed(&pass));
        add_scaled(sum, pass, count);
    }
    let mut plan = plan?;
    push_tail(&mut plan, spec, cfg, layout, tokens, opts);
    Some((plan, chunking))
}

/// One pass through the layout: the `embedding` step, then every layer's
/// program (`layer(w, h)`, lowered once per region shape), each followed by its
/// hand-off to the next stage (`after(site, next)`).
fn price_pass(
    spec: &WaferSpec,
    layout: &Layout,
    embedding: Step<OpKind>,
    layer: impl Fn(u32, u32) -> crate::LayerProgram,
    after: impl Fn(&Site, &Site) -> Option<Step<OpKind>>,
) -> Plan {
    let mut plan = Plan::default();
    push_steps(&mut plan, spec, &[embedding], None);
    price_layers(
        &mut plan,
        layout,
        |w, h| price_layer(spec, &layer(w, h)),
        |plan, l, site, next| {
            if let Some(h) = after(site, next) {
                push_steps(plan, spec, &[h], Some(l as u32));
            }
        },
    );
    plan
}

/// `pass`'s operations with no cost and no work: what sums of passes start from.
fn zeroed(pass: &Plan) -> Plan {
    Plan {
        ops: pass
            .ops
            .iter()
            .map(|o| Op {
                work_per_pe: 0,
                cost: Cost::default(),
                ..o.clone()
            })
            .collect(),
    }
}

/// Adds `count` times `pass` into `sum`, operation by operation (every pass
/// lists the same operations in the same order).
fn add_scaled(sum: &mut Plan, pass: Plan, count: f64) {
    for (s, op) in sum.ops.iter_mut().zip(pass.ops) {
        debug_assert_eq!((s.kind, s.layer), (op.kind, op.layer));
        s.work_per_pe += (op.work_per_pe as f64 * count) as u64;
        s.cost += op.cost * count;
        s.comm = op.comm;
    }
}

/// The last position's logits and the first token: the tail of decode.
fn push_tail(
    plan: &mut Plan,
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    tokens: usize,
    opts: &PlanOptions,
) {
    let tail = super::decode_plan_with(spec, cfg, layout, tokens, opts);
    for op in tail.ops {
        if matches!(op.kind, OpKind::FinalNorm | OpKind::LmHead | OpKind::Argmax) {
            plan.ops.push(op);
        }
    }
}

/// Bytes a PE of the square holds while one layer of a region shared by
/// `layers` layers runs a prefill pass that has cached `keys` positions: the
/// pass's program (its square tiles, its buffers), the other layers' decode
/// tiles, every layer's cache of the `keys` positions, and the reserve.
pub fn prefill_bytes_per_pe(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    program: &crate::LayerProgram,
    (w, h): (u32, u32),
    layers: usize,
    keys: usize,
) -> u64 {
    // The region's layers as placement counts them: the others' decode tiles,
    // and every layer's cache of the positions so far.
    let (sizes, one) = layer_footprint(spec, cfg, (w, h));
    let others = one.times(layers.saturating_sub(1) as u64).weight_per_pe;
    let kv = one.times(layers as u64).max(&sizes, keys as u64).kv;
    program
        .weight_bytes_per_pe()
        .saturating_add(others)
        .saturating_add(kv)
        .saturating_add(program.buffer_bytes)
        .saturating_add(sizes.reserve)
}

/// One decoder layer's footprint on a `w x h` region, from placement's budget.
fn layer_footprint(spec: &WaferSpec, cfg: &ModelConfig, (w, h): (u32, u32)) -> (Sizes, Footprint) {
    let sizes = Sizes::from_spec(spec);
    let one = Footprint::of(cfg, &sizes, Item::Layer(0), w as u64, h as u64);
    (sizes, one)
}

/// The chunking of a `tokens`-token prompt whose passes fit every layer region
/// of `layout`, or `None` when not even a one-row chunk does.
pub fn prefill_chunking(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    tokens: usize,
    opts: &PlanOptions,
) -> Option<Chunking> {
    let tokens = tokens.max(1);
    let shapes = layer_shapes(layout);
    // The last chunk caches the whole prompt: the largest footprint of a pass.
    let fits = |chunk: usize| {
        shapes.iter().all(|&((w, h), layers)| {
            let program = prefill_layer_program(spec, cfg, w, h, chunk, tokens, opts);
            prefill_bytes_per_pe(spec, cfg, &program, (w, h), layers, tokens) <= spec.pe.sram_bytes
        })
    };
    if fits(tokens) {
        return Some(Chunking {
            chunks: 1,
            chunk_tokens: tokens,
        });
    }
    // Chunks of `r` rows of the smallest square: the footprint grows with r.
    let side = shapes.iter().map(|((w, h), _)| (*w).min(*h)).min()? as usize;
    let rows_max = tokens.div_ceil(side.max(1));
    let (mut lo, mut hi) = (0usize, rows_max); // fits(lo * side) (0: nothing yet); !fits(hi * side)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid * side) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo > 0).then(|| Chunking {
        chunks: tokens.div_ceil(lo * side),
        chunk_tokens: lo * side,
    })
}

/// The MeshGEMM prefill of `tokens` prompt tokens up to the first generated
/// token, in the chunks that fit ([`prefill_chunking`]); `None` when none does.
/// A layer's operations are summed over the chunks (one operation per layer and
/// kind, as in the token-by-token plan).
pub fn gemm_prefill_plan(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    tokens: usize,
    opts: &PlanOptions,
) -> Option<(Plan, Chunking)> {
    let tokens = tokens.max(1);
    let chunking = prefill_chunking(spec, cfg, layout, tokens, opts)?;
    let d = cfg.hidden_size;
    let first = layout.layers.first().copied().unwrap_or(layout.lm_head);
    let step = |label, work_per_pe, kernels, transfer| Step {
        label,
        work_per_pe,
        kernels,
        collective: None,
        transfer,
        cannon: None,
    };
    // One pass of `n` tokens that has cached `keys` positions.
    let pass = |n: usize, keys: usize| {
        let p0 = first.region.width().min(first.region.height());
        let emb_work = div(n, p0) * div(d, p0);
        let embedding = step(
            OpKind::Embedding,
            emb_work,
            vec![Kernel::Scale { n: emb_work }],
            prefill_handoff(spec, &layout.embedding, &first, n, d),
        );
        price_pass(
            spec,
            layout,
            embedding,
            |w, h| prefill_layer_program(spec, cfg, w, h, n, keys, opts),
            |site, next| {
                prefill_handoff(spec, site, next, n, d).map(|t| {
                    let p = site.region.width().min(site.region.height());
                    step(OpKind::Handoff, div(n, p) * div(d, p), vec![], Some(t))
                })
            },
        )
    };
    let mut plan = pass(
        chunking.chunk_tokens.min(tokens),
        chunking.chunk_tokens.min(tokens),
    );
    for j in 1..chunking.chunks {
        let start = j * chunking.chunk_tokens;
        let n = chunking.chunk_tokens.min(tokens - start);
        add_scaled(&mut plan, pass(n, start + n), 1.0);
    }
    push_tail(&mut plan, spec, cfg, layout, tokens, opts);
    Some((plan, chunking))
}

/// One decoder layer's prefill of `n` tokens on a `w x h` region (its largest
/// square), priced ([`prefill_layer_program`]).
pub fn prefill_layer_with(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    w: u32,
    h: u32,
    n: usize,
    opts: &PlanOptions,
) -> Plan {
    price_layer(spec, &prefill_layer_program(spec, cfg, w, h, n, n, opts))
}
