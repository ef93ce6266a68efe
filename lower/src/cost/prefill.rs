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

use super::decode::{allreduce, div};
use super::token_prefill::token_prefill;
use super::{OpKind, Plan, PlanOptions};
use crate::layout::{Layout, Site};
use serde::Serialize;
use wafer_core::Cycles;
use wafer_core::WaferSpec;
use wafer_kernels::vector;
use wafer_models::config::ModelConfig;
use wafer_sim::collective::wavelets;
use wafer_sim::matrix::{mesh_gemm_cost, total};
use wafer_sim::transfer::{offwafer_cost, parallel_lines_cost};
use wafer_sim::Cost;

/// A MeshGEMM as one phase of the layer program.
fn gemm(spec: &WaferSpec, p: u32, m: usize, k: usize, n: usize) -> Cost {
    total(&mesh_gemm_cost(spec, p, m as u64, k as u64, n as u64))
        + Cost::sync(wafer_core::Cycles(spec.cost.layer_phase_sync_cycles))
}

fn tile_handoff(spec: &WaferSpec, from: &Site, to: &Site, tokens: usize, d: usize) -> Cost {
    if from == to {
        return Cost::default();
    }
    let act = spec.precision.activation_dtype.size_bytes();
    if from.wafer != to.wafer {
        return offwafer_cost(spec, (tokens * d) as u64 * act);
    }
    let p = from.region.width().min(from.region.height());
    // A row of P PEs sends its N/P x d tiles east over the same row links.
    let per_row = wavelets(spec, div(tokens, p) * d as u64, act);
    let hops = from.region.origin.hops_to(to.region.origin) + from.region.width() as u64;
    parallel_lines_cost(spec, per_row, hops)
}

/// How a prompt is run up to its first generated token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefillScheme {
    /// The whole prompt at once: MeshGEMMs over each layer's region.
    Gemm,
    /// One decode step per prompt token, the LM head only for the last.
    TokenByToken,
}

impl PrefillScheme {
    /// The JSON / CSV value: `gemm` or `token_by_token`.
    pub fn name(self) -> &'static str {
        match self {
            PrefillScheme::Gemm => "gemm",
            PrefillScheme::TokenByToken => "token_by_token",
        }
    }
}

/// Time-to-first-token: the cheaper scheme's plan and what the other would cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Prefill {
    pub scheme: PrefillScheme,
    /// The chosen scheme's plan; its total is the time-to-first-token.
    pub plan: Plan,
    /// Total of the MeshGEMM plan.
    pub gemm_cycles: Cycles,
    /// Total of the token-by-token plan when `token_by_token_exact`; otherwise a
    /// lower bound that already reached `gemm_cycles` (evaluation stopped there).
    pub token_by_token_cycles: Cycles,
    pub token_by_token_exact: bool,
}

/// Both schemes for a `tokens`-token prompt (at least 1): the token-by-token one
/// is evaluated only as far as it can still beat the MeshGEMM plan.
pub fn prefill(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    tokens: usize,
    opts: &PlanOptions,
) -> Prefill {
    let gemm = gemm_prefill_plan(spec, cfg, layout, tokens, opts);
    let gemm_cycles = gemm.total();
    let tbt = token_prefill(spec, cfg, layout, tokens, opts, gemm_cycles);
    match tbt.plan {
        Some(plan) if tbt.cycles < gemm_cycles => Prefill {
            scheme: PrefillScheme::TokenByToken,
            plan,
            gemm_cycles,
            token_by_token_cycles: tbt.cycles,
            token_by_token_exact: true,
        },
        exact => Prefill {
            scheme: PrefillScheme::Gemm,
            plan: gemm,
            gemm_cycles,
            token_by_token_cycles: tbt.cycles,
            token_by_token_exact: exact.is_some(),
        },
    }
}

/// The MeshGEMM prefill of `tokens` prompt tokens up to the first generated token.
pub fn gemm_prefill_plan(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    tokens: usize,
    opts: &PlanOptions,
) -> Plan {
    let tokens = tokens.max(1);
    let mut plan = Plan::default();
    let d = cfg.hidden_size;
    let first = layout.layers.first().copied().unwrap_or(layout.lm_head);
    let p0 = first.region.width().min(first.region.height());
    let emb_work = div(tokens, p0) * div(d, p0);
    plan.push(
        OpKind::Embedding,
        None,
        emb_work,
        None,
        Cost::compute(vector::scale_cycles(spec, emb_work))
            + tile_handoff(spec, &layout.embedding, &first, tokens, d),
    );
    let mut cache: Vec<(u32, Plan)> = Vec::new();
    for (l, site) in layout.layers.iter().enumerate() {
        let p = site.region.width().min(site.region.height());
        let layer_plan = match cache.iter().find(|(k, _)| *k == p) {
            Some((_, lp)) => lp.clone(),
            None => {
                let lp = prefill_layer_with(spec, cfg, p, tokens, opts);
                cache.push((p, lp.clone()));
                lp
            }
        };
        for mut op in layer_plan.ops {
            op.layer = Some(l as u32);
            plan.ops.push(op);
        }
        let next = layout.layers.get(l + 1).unwrap_or(&layout.lm_head);
        let h = tile_handoff(spec, site, next, tokens, d);
        if h.total().get() > 0.0 {
            plan.push(
                OpKind::Handoff,
                Some(l as u32),
                div(tokens, p) * div(d, p),
                None,
                h,
            );
        }
    }
    // The last position's logits and the first token: the tail of decode.
    let tail = super::decode_plan_with(spec, cfg, layout, tokens, opts);
    for op in tail.ops {
        if matches!(op.kind, OpKind::FinalNorm | OpKind::LmHead | OpKind::Argmax) {
            plan.ops.push(op);
        }
    }
    plan
}

/// One decoder layer's prefill of `n` tokens on a `p x p` square.
pub fn prefill_layer_with(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    p: u32,
    n: usize,
    opts: &PlanOptions,
) -> Plan {
    let mut pl = Plan::default();
    let act = spec.precision.activation_dtype.size_bytes();
    let (d, q, kv, f) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.intermediate_size,
    );
    let rows = div(n, p); // tokens per PE row-block
    let xt = rows * div(d, p); // X tile elements per PE
    let comp = Cost::compute;
    // A (m x k) . (k x nn) product as a Cannon MeshGEMM over the square.
    let matmul = |pl: &mut Plan, kind: OpKind, m: usize, k: usize, nn: usize| {
        let macs = div(m, p) * div(k, p) * div(nn, p) * p as u64;
        pl.push(kind, None, macs, None, gemm(spec, p, m, k, nn));
    };

    let norm = |pl: &mut Plan| {
        let (ar, comm) = allreduce(spec, opts, p, rows, 4);
        pl.push(
            OpKind::RmsNorm,
            None,
            xt,
            comm,
            comp(vector::sum_squares_cycles(spec, xt) + vector::rms_scale_cycles(spec, xt)) + ar,
        );
    };
    norm(&mut pl);
    matmul(&mut pl, OpKind::QkvProj, n, d, q + 2 * kv);
    if cfg.qk_norm() {
        // Per-head RMSNorm of every row's q and k heads: the squares and the
        // scale as local work; the sums of heads split across PEs travel with
        // the GEMM's output (not charged: small beside the GEMMs).
        let work = rows * div(q + kv, p);
        pl.push(
            OpKind::QkNorm,
            None,
            work,
            None,
            comp(vector::sum_squares_cycles(spec, work) + vector::rms_scale_cycles(spec, work)),
        );
    }
    let rope_work = rows * div(q + kv, p);
    pl.push(
        OpKind::Rope,
        None,
        rope_work,
        None,
        comp(vector::rope_cycles(spec, rope_work)),
    );
    let kv_work = 2 * rows * div(kv, p);
    pl.push(
        OpKind::KvAppend,
        None,
        kv_work,
        None,
        comp(vector::scale_cycles(spec, kv_work)),
    );
    matmul(&mut pl, OpKind::AttnScores, n, q, n);
    let s_tile = rows * div(n, p);
    let (ar, comm) = allreduce(spec, opts, p, rows, act);
    pl.push(
        OpKind::SoftmaxMax,
        None,
        s_tile,
        comm,
        comp(vector::max_cycles(spec, s_tile)) + ar,
    );
    let (ar, comm) = allreduce(spec, opts, p, rows, 4);
    pl.push(
        OpKind::SoftmaxSum,
        None,
        s_tile,
        comm,
        comp(vector::exp_sum_cycles(spec, s_tile) + vector::normalize_cycles(spec, s_tile)) + ar,
    );
    matmul(&mut pl, OpKind::AttnValues, n, n, q);
    matmul(&mut pl, OpKind::OProj, n, q, d);
    pl.push(
        OpKind::Residual,
        None,
        xt,
        None,
        comp(vector::add_cycles(spec, xt)),
    );
    norm(&mut pl);
    matmul(&mut pl, OpKind::GateUpProj, n, d, 2 * f);
    let silu_work = rows * div(f, p);
    pl.push(
        OpKind::SiluMul,
        None,
        silu_work,
        None,
        comp(vector::silu_mul_cycles(spec, silu_work)),
    );
    matmul(&mut pl, OpKind::DownProj, n, f, d);
    pl.push(
        OpKind::Residual,
        None,
        xt,
        None,
        comp(vector::add_cycles(spec, xt)),
    );
    pl
}
