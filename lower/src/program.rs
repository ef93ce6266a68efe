//! One decoder layer's decode step (batch 1, KV length T) as a placed program
//! on its `w x h` region: the layer's tiles, then its steps in execution order,
//! each with the PE kernels and the collective it runs.
//!
//! Data layout: see [`crate::tiling`]. Attention: each PE dots its query dims
//! with its `ceil(T/h)` cached keys; the partial scores are summed across the
//! columns that share a head (a segment of `head_dim / kv_chunk` columns);
//! softmax max and exp-sum are allreduced along columns; the
//! probability-weighted V sum is allreduced along columns and then divided by
//! the softmax sum. Every reduction is the tree the lowering options pick for
//! its line ([`PlanOptions::tree`]).
//!
//! The KV length enters only as the cached positions per PE, `ceil(T / h)`; the
//! list of steps is the same for every T.

use crate::cost::{OpKind, PlanOptions};
use crate::layout::{Layout, Site};
use crate::tiling::LayerTiling;
use serde::Serialize;
use wafer_core::WaferSpec;
use wafer_kernels::Kernel;
use wafer_models::config::ModelConfig;
use wafer_sim::collective::wavelets;
use wafer_sim::program::{Collective, CollectiveKind, RegionProgram, Route, Step, Transfer};
use wafer_sim::tiling::Axis;
use wafer_sim::TreeShape;

/// The placed program of one decoder layer's decode step.
pub type LayerProgram = RegionProgram<OpKind>;

/// The decode step of one layer of `cfg` on a `w x h` region at KV length
/// `context` (the new token included).
pub fn decode_layer_program(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    w: u32,
    h: u32,
    context: usize,
    opts: &PlanOptions,
) -> LayerProgram {
    let act = spec.precision.activation_dtype.size_bytes();
    let acc = spec.precision.accumulate_dtype.size_bytes();
    let (weight, kv_dtype) = (spec.precision.weight_dtype, spec.precision.kv_dtype);
    let t = LayerTiling::new(cfg, weight, kv_dtype, w as usize, h as usize);
    let g = cfg.group_size() as u64;
    let xr = t.x.chunk as u64; // residual chunk per PE (split over rows)
    let kv_c = t.kv.chunk as u64; // KV dims per column
    let q_c = t.q.chunk as u64; // query dims per column (its KV dims' g heads)
    let pos = (context as u64).div_ceil(h.max(1) as u64); // cached positions per PE
                                                          // Heads whose dims a column touches, and the columns that share one head.
    let heads_c = kv_c.div_ceil(cfg.head_dim as u64).max(1);
    let seg = ((cfg.head_dim as u64).div_ceil(kv_c).min(w as u64)) as u32;
    let scores_c = pos * g * heads_c; // partial scores per PE

    let tree = |p: u32| TreeShape::new(p, opts.tree(p)).expect("validated lowering options");
    let allreduce = |axis: Axis, values: u64, bytes: u64| {
        let line = match axis {
            Axis::Column => h,
            Axis::Row => w,
        };
        Some(Collective {
            kind: CollectiveKind::Allreduce,
            axis,
            tree: tree(line),
            values_per_pe: values,
            bytes_per_value: bytes,
            in_layer: true,
        })
    };
    let segment = |values: u64, bytes: u64| {
        Some(Collective {
            kind: CollectiveKind::Allreduce,
            axis: Axis::Row,
            tree: tree(seg),
            values_per_pe: values,
            bytes_per_value: bytes,
            in_layer: true,
        })
    };
    let step = |label, work_per_pe, kernels: Vec<Kernel>, collective| Step {
        label,
        work_per_pe,
        kernels,
        collective,
        transfer: None,
    };
    let gemv = |k: u64, n: u64| Kernel::Gemv {
        k,
        n,
        dtype: weight,
    };
    let norm = || {
        step(
            OpKind::RmsNorm,
            xr,
            vec![Kernel::SumSquares { n: xr }, Kernel::RmsScale { n: xr }],
            allreduce(Axis::Column, 1, 4),
        )
    };

    let residual = || step(OpKind::Residual, xr, vec![Kernel::Add { n: xr }], None);

    let mut steps = vec![norm()];
    // Q, K and V in one pass: one tile of each per PE.
    let qkv_c = (t.q_proj.out.chunk + t.k_proj.out.chunk + t.v_proj.out.chunk) as u64;
    steps.push(step(
        OpKind::QkvProj,
        xr * qkv_c,
        vec![gemv(xr, qkv_c)],
        allreduce(Axis::Column, qkv_c, act),
    ));
    if cfg.qk_norm() {
        // Per-head RMSNorm of q and k: squares of the PE's dims, one f32 sum per
        // head it touches allreduced across the head's columns, then the scale.
        let n = q_c + kv_c;
        steps.push(step(
            OpKind::QkNorm,
            n,
            vec![Kernel::SumSquares { n }, Kernel::RmsScale { n }],
            segment((g + 1) * heads_c, 4),
        ));
    }
    steps.push(step(
        OpKind::Rope,
        q_c + kv_c,
        vec![Kernel::Rope { n: q_c + kv_c }],
        None,
    ));
    // The PE in row (t mod h) keeps its replicated K and V chunks: a local copy.
    steps.push(step(
        OpKind::KvAppend,
        2 * kv_c,
        vec![Kernel::Scale { n: 2 * kv_c }],
        None,
    ));
    steps.push(step(
        OpKind::AttnScores,
        pos * q_c,
        vec![Kernel::Gemv {
            k: kv_c,
            n: pos * g,
            dtype: kv_dtype,
        }],
        segment(pos * g * heads_c, act),
    ));
    steps.push(step(
        OpKind::SoftmaxMax,
        scores_c,
        vec![Kernel::Max { n: scores_c }],
        allreduce(Axis::Column, g * heads_c, act),
    ));
    steps.push(step(
        OpKind::SoftmaxSum,
        scores_c,
        vec![Kernel::ExpSum { n: scores_c }],
        allreduce(Axis::Column, g * heads_c, 4),
    ));
    steps.push(step(
        OpKind::AttnValues,
        pos * q_c,
        vec![
            Kernel::Gemv {
                k: pos,
                n: q_c,
                dtype: kv_dtype,
            },
            Kernel::Normalize { n: q_c },
        ],
        allreduce(Axis::Column, q_c, act),
    ));
    // O projection: input split over columns, reduce along rows (lines of w).
    let o_r = t.o_proj.out.chunk as u64;
    steps.push(step(
        OpKind::OProj,
        q_c * o_r,
        vec![gemv(q_c, o_r)],
        allreduce(Axis::Row, o_r, act),
    ));
    steps.push(residual());
    steps.push(norm());
    let gu_c = (t.gate_proj.out.chunk + t.up_proj.out.chunk) as u64;
    steps.push(step(
        OpKind::GateUpProj,
        xr * gu_c,
        vec![gemv(xr, gu_c)],
        allreduce(Axis::Column, gu_c, act),
    ));
    let f_c = t.f.chunk as u64;
    steps.push(step(
        OpKind::SiluMul,
        f_c,
        vec![Kernel::SiluMul { n: f_c }],
        None,
    ));
    steps.push(step(
        OpKind::DownProj,
        f_c * o_r,
        vec![gemv(f_c, o_r)],
        allreduce(Axis::Row, o_r, act),
    ));
    steps.push(residual());
    RegionProgram {
        width: w,
        height: h,
        kv_bytes_per_position: t.kv_bytes_per_position(),
        buffer_bytes: t.buffer_bytes(cfg, act, acc),
        tiles: t.tiles,
        steps,
    }
}

/// The parts of a decode step around the layers, as placed-program steps: the
/// embedding lookup on its region and the send to the first layer, the hand-off
/// after each layer whose successor lies elsewhere, and on the LM head's region
/// the final norm, the LM-head GEMV, the argmax and the token's way back to the
/// embedding. The layers' own programs come from [`decode_layer_program`], one
/// per region shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSteps {
    pub embedding: Vec<Step<OpKind>>,
    /// After layer `l`: its hand-off (empty when the next stage shares the region).
    pub after_layer: Vec<Vec<Step<OpKind>>>,
    pub head: Vec<Step<OpKind>>,
}

/// Moving the `values`-long residual (split over the rows of `from`) to `to`,
/// then replicating each row's part along the rows of `to`; `None` on one region.
pub fn handoff(spec: &WaferSpec, from: &Site, to: &Site, values: u64) -> Option<Transfer> {
    if from == to {
        return None;
    }
    let act = spec.precision.activation_dtype.size_bytes();
    let rows = to.region.height().max(1);
    let per_row = wavelets(spec, values.div_ceil(rows as u64), act);
    let route = if from.wafer != to.wafer {
        Route::OffWafer {
            bytes: values * act,
        }
    } else {
        Route::OnWafer {
            wavelets_per_line: per_row,
            hops: from.region.origin.hops_to(to.region.origin) + from.region.width() as u64,
        }
    };
    Some(Transfer {
        route,
        replicate: Some((to.region.width(), per_row)),
    })
}

/// The steps around the layers of `cfg` on `layout` (they do not depend on the
/// KV length).
pub fn model_steps(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    opts: &PlanOptions,
) -> ModelSteps {
    let act = spec.precision.activation_dtype.size_bytes();
    let d = cfg.hidden_size;
    let div = |a: usize, b: u32| (a as u64).div_ceil(b.max(1) as u64);
    let tree = |p: u32| TreeShape::new(p, opts.tree(p)).expect("validated lowering options");
    let step = |label, work_per_pe, kernels, collective, transfer| Step {
        label,
        work_per_pe,
        kernels,
        collective,
        transfer,
    };

    // The PEs holding the token's row read it and send it to layer 0.
    let first = layout.layers.first().copied().unwrap_or(layout.lm_head);
    let emb = div(d, first.region.height());
    let embedding = vec![step(
        OpKind::Embedding,
        emb,
        vec![Kernel::Scale { n: emb }],
        None,
        handoff(spec, &layout.embedding, &first, d as u64),
    )];

    let after_layer = layout
        .layers
        .iter()
        .enumerate()
        .map(|(l, site)| {
            let next = layout.layers.get(l + 1).unwrap_or(&layout.lm_head);
            handoff(spec, site, next, d as u64)
                .map(|t| {
                    step(
                        OpKind::Handoff,
                        div(d, next.region.height()),
                        vec![],
                        None,
                        Some(t),
                    )
                })
                .into_iter()
                .collect()
        })
        .collect();

    // Final norm, LM-head GEMV (vocabulary over columns) and the argmax.
    let (w, h) = (
        layout.lm_head.region.width(),
        layout.lm_head.region.height(),
    );
    let xr = div(d, h);
    let vocab_cols = div(cfg.vocab_size, w);
    let along = |axis: Axis, kind, values, bytes_per_value| {
        let line = match axis {
            Axis::Column => h,
            Axis::Row => w,
        };
        Some(Collective {
            kind,
            axis,
            tree: tree(line),
            values_per_pe: values,
            bytes_per_value,
            in_layer: true,
        })
    };
    // The chosen token id goes back to the embedding's site for the next step.
    let (from, to) = (&layout.lm_head, &layout.embedding);
    let back = if from.wafer != to.wafer {
        Route::OffWafer { bytes: 4 }
    } else {
        Route::OnWafer {
            wavelets_per_line: 1,
            hops: from.region.origin.hops_to(to.region.origin),
        }
    };
    let head = vec![
        step(
            OpKind::FinalNorm,
            xr,
            vec![Kernel::SumSquares { n: xr }, Kernel::RmsScale { n: xr }],
            along(Axis::Column, CollectiveKind::Allreduce, 1, 4),
            None,
        ),
        step(
            OpKind::LmHead,
            xr * vocab_cols,
            vec![Kernel::Gemv {
                k: xr,
                n: vocab_cols,
                dtype: spec.precision.weight_dtype,
            }],
            along(Axis::Column, CollectiveKind::Allreduce, vocab_cols, act),
            None,
        ),
        // (value, index) pairs, reduced along the row toward its root.
        step(
            OpKind::Argmax,
            vocab_cols,
            vec![Kernel::Max { n: vocab_cols }],
            along(Axis::Row, CollectiveKind::Reduce, 2, 4),
            None,
        ),
        step(
            OpKind::TokenLoopback,
            1,
            vec![],
            None,
            Some(Transfer {
                route: back,
                replicate: None,
            }),
        ),
    ];
    ModelSteps {
        embedding,
        after_layer,
        head,
    }
}
