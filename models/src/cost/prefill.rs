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

use super::decode::{allreduce, div};
use super::{OpKind, Plan};
use crate::config::ModelConfig;
use crate::layout::{Layout, Site};
use wafer_core::WaferSpec;
use wafer_kernels::vector;
use wafer_sim::collective::wavelets;
use wafer_sim::matrix::{mesh_gemm_cost, total};
use wafer_sim::transfer::{offwafer_cost, parallel_lines_cost};
use wafer_sim::Cost;

fn gemm(spec: &WaferSpec, p: u32, m: usize, k: usize, n: usize) -> Cost {
    total(&mesh_gemm_cost(spec, p, m as u64, k as u64, n as u64))
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

/// The prefill of `tokens` prompt tokens up to the first generated token.
pub fn prefill_plan(spec: &WaferSpec, cfg: &ModelConfig, layout: &Layout, tokens: usize) -> Plan {
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
                let lp = prefill_layer(spec, cfg, p, tokens);
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
    let tail = super::decode_plan(spec, cfg, layout, tokens.max(1));
    for op in tail.ops {
        if matches!(op.kind, OpKind::FinalNorm | OpKind::LmHead | OpKind::Argmax) {
            plan.ops.push(op);
        }
    }
    plan
}

/// One decoder layer's prefill of `n` tokens on a `p x p` square.
pub fn prefill_layer(spec: &WaferSpec, cfg: &ModelConfig, p: u32, n: usize) -> Plan {
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
    let macs = |m: usize, k: usize, nn: usize| div(m, p) * div(k, p) * div(nn, p) * p as u64;

    let norm = |pl: &mut Plan| {
        let (ar, comm) = allreduce(spec, p, rows, 4);
        pl.push(
            OpKind::RmsNorm,
            None,
            xt,
            comm,
            comp(vector::sum_squares_cycles(spec, xt) + vector::rms_scale_cycles(spec, xt)) + ar,
        );
    };
    norm(&mut pl);
    pl.push(
        OpKind::QkvProj,
        None,
        macs(n, d, q + 2 * kv),
        None,
        gemm(spec, p, n, d, q + 2 * kv),
    );
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
    pl.push(
        OpKind::AttnScores,
        None,
        macs(n, q, n),
        None,
        gemm(spec, p, n, q, n),
    );
    let s_tile = rows * div(n, p);
    let (ar, comm) = allreduce(spec, p, rows, act);
    pl.push(
        OpKind::SoftmaxMax,
        None,
        s_tile,
        comm,
        comp(vector::max_cycles(spec, s_tile)) + ar,
    );
    let (ar, comm) = allreduce(spec, p, rows, 4);
    pl.push(
        OpKind::SoftmaxSum,
        None,
        s_tile,
        comm,
        comp(vector::exp_sum_cycles(spec, s_tile) + vector::normalize_cycles(spec, s_tile)) + ar,
    );
    pl.push(
        OpKind::AttnValues,
        None,
        macs(n, n, q),
        None,
        gemm(spec, p, n, n, q),
    );
    pl.push(
        OpKind::OProj,
        None,
        macs(n, q, d),
        None,
        gemm(spec, p, n, q, d),
    );
    pl.push(
        OpKind::Residual,
        None,
        xt,
        None,
        comp(vector::add_cycles(spec, xt)),
    );
    norm(&mut pl);
    pl.push(
        OpKind::GateUpProj,
        None,
        macs(n, d, 2 * f),
        None,
        gemm(spec, p, n, d, 2 * f),
    );
    let silu_work = rows * div(f, p);
    pl.push(
        OpKind::SiluMul,
        None,
        silu_work,
        None,
        comp(vector::silu_mul_cycles(spec, silu_work)),
    );
    pl.push(
        OpKind::DownProj,
        None,
        macs(n, f, d),
        None,
        gemm(spec, p, n, f, d),
    );
    pl.push(
        OpKind::Residual,
        None,
        xt,
        None,
        comp(vector::add_cycles(spec, xt)),
    );
    pl
}
