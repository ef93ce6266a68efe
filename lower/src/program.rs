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
use crate::tiling::has_o_bias;
use crate::tiling::LayerTiling;
use serde::Serialize;
use wafer_core::WaferSpec;
use wafer_kernels::Kernel;
use wafer_models::config::ModelConfig;
use wafer_sim::collective::wavelets;
use wafer_sim::program::{
    Cannon, Collective, CollectiveKind, RegionProgram, Route, Step, Transfer,
};
use wafer_sim::tiling::{Axis, MatrixTiling, Orientation, Split, Tile, VectorTiling};
use wafer_sim::TreeShape;

/// The placed program of one decoder layer's decode step.
pub type LayerProgram = RegionProgram<OpKind>;

/// A collective of a layer program along `axis`, over lines of `line` PEs on
/// the tree the options pick for them.
fn in_layer(
    kind: CollectiveKind,
    axis: Axis,
    line: u32,
    opts: &PlanOptions,
    values_per_pe: u64,
    bytes_per_value: u64,
) -> Collective {
    Collective {
        kind,
        axis,
        tree: TreeShape::new(line, opts.tree(line)).expect("validated lowering options"),
        values_per_pe,
        bytes_per_value,
        in_layer: true,
    }
}

/// A step of local kernels, then at most one collective.
fn step(
    label: OpKind,
    work_per_pe: u64,
    kernels: Vec<Kernel>,
    collective: Option<Collective>,
) -> Step<OpKind> {
    handing_step(label, work_per_pe, kernels, collective, None)
}

/// A step that may end in a transfer to another region (no Cannon rounds).
fn handing_step(
    label: OpKind,
    work_per_pe: u64,
    kernels: Vec<Kernel>,
    collective: Option<Collective>,
    transfer: Option<Transfer>,
) -> Step<OpKind> {
    Step {
        label,
        work_per_pe,
        kernels,
        collective,
        transfer,
        cannon: None,
    }
}

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
    layer_pass_program(spec, cfg, w, h, context, 1, opts)
}

/// `tokens` consecutive positions through one layer at once on the decode
/// tiling, the last at KV length `context`: the decode step with every vector
/// `tokens` times longer, each GEMV a GEMM of `tokens` rows through the same
/// weight tile (weights stay where decode placed them), and `tokens` times the
/// values in every collective and buffer. The streamed prefill runs the prompt
/// through it in chunks; `tokens = 1` is the decode step. Every position is
/// charged the whole `context` (the causal mask saves nothing, as in Cannon).
pub fn layer_pass_program(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    w: u32,
    h: u32,
    context: usize,
    tokens: usize,
    opts: &PlanOptions,
) -> LayerProgram {
    let n = tokens.max(1) as u64;
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

    let allreduce = |axis: Axis, values: u64, bytes: u64| {
        let line = match axis {
            Axis::Column => h,
            Axis::Row => w,
        };
        Some(in_layer(
            CollectiveKind::Allreduce,
            axis,
            line,
            opts,
            values,
            bytes,
        ))
    };
    let segment = |values: u64, bytes: u64| {
        Some(in_layer(
            CollectiveKind::Allreduce,
            Axis::Row,
            seg,
            opts,
            values,
            bytes,
        ))
    };
    // A tile product for the pass: a GEMV for one token, a GEMM for several.
    let mm = |k: u64, cols: u64, dtype| {
        if n == 1 {
            Kernel::Gemv { k, n: cols, dtype }
        } else {
            Kernel::Gemm {
                m: n,
                k,
                n: cols,
                dtype,
            }
        }
    };
    let norm = || {
        step(
            OpKind::RmsNorm,
            n * xr,
            vec![
                Kernel::SumSquares { n: n * xr },
                Kernel::RmsScale { n: n * xr },
            ],
            allreduce(Axis::Column, n, 4),
        )
    };

    let residual = || {
        step(
            OpKind::Residual,
            n * xr,
            vec![Kernel::Add { n: n * xr }],
            None,
        )
    };

    let mut steps = vec![norm()];
    // Q, K and V in one pass: one tile of each per PE.
    let qkv_c = (t.q_proj.out.chunk + t.k_proj.out.chunk + t.v_proj.out.chunk) as u64;
    steps.push(step(
        OpKind::QkvProj,
        n * xr * qkv_c,
        vec![mm(xr, qkv_c, weight)],
        allreduce(Axis::Column, n * qkv_c, act),
    ));
    if cfg.qk_norm() {
        // Per-head RMSNorm of q and k: squares of the PE's dims, one f32 sum per
        // head it touches allreduced across the head's columns, then the scale.
        let e = n * (q_c + kv_c);
        steps.push(step(
            OpKind::QkNorm,
            e,
            vec![Kernel::SumSquares { n: e }, Kernel::RmsScale { n: e }],
            segment(n * (g + 1) * heads_c, 4),
        ));
    }
    steps.push(step(
        OpKind::Rope,
        n * (q_c + kv_c),
        vec![Kernel::Rope {
            n: n * (q_c + kv_c),
        }],
        None,
    ));
    // The PE in row (t mod h) keeps its replicated K and V chunks: a local copy.
    steps.push(step(
        OpKind::KvAppend,
        2 * n * kv_c,
        vec![Kernel::Scale { n: 2 * n * kv_c }],
        None,
    ));
    steps.push(step(
        OpKind::AttnScores,
        n * pos * q_c,
        vec![mm(kv_c, pos * g, kv_dtype)],
        segment(n * pos * g * heads_c, act),
    ));
    steps.push(step(
        OpKind::SoftmaxMax,
        n * scores_c,
        vec![Kernel::Max { n: n * scores_c }],
        allreduce(Axis::Column, n * g * heads_c, act),
    ));
    steps.push(step(
        OpKind::SoftmaxSum,
        n * scores_c,
        vec![Kernel::ExpSum { n: n * scores_c }],
        allreduce(Axis::Column, n * g * heads_c, 4),
    ));
    steps.push(step(
        OpKind::AttnValues,
        n * pos * q_c,
        vec![mm(pos, q_c, kv_dtype), Kernel::Normalize { n: n * q_c }],
        allreduce(Axis::Column, n * q_c, act),
    ));
    // O projection: input split over columns, reduce along rows (lines of w).
    let o_r = t.o_proj.out.chunk as u64;
    steps.push(step(
        OpKind::OProj,
        n * q_c * o_r,
        vec![mm(q_c, o_r, weight)],
        allreduce(Axis::Row, n * o_r, act),
    ));
    steps.push(residual());
    steps.push(norm());
    let gu_c = (t.gate_proj.out.chunk + t.up_proj.out.chunk) as u64;
    steps.push(step(
        OpKind::GateUpProj,
        n * xr * gu_c,
        vec![mm(xr, gu_c, weight)],
        allreduce(Axis::Column, n * gu_c, act),
    ));
    let f_c = t.f.chunk as u64;
    steps.push(step(
        OpKind::SiluMul,
        n * f_c,
        vec![Kernel::SiluMul { n: n * f_c }],
        None,
    ));
    steps.push(step(
        OpKind::DownProj,
        n * f_c * o_r,
        vec![mm(f_c, o_r, weight)],
        allreduce(Axis::Row, n * o_r, act),
    ));
    steps.push(residual());
    RegionProgram {
        width: w,
        height: h,
        kv_bytes_per_position: t.kv_bytes_per_position(),
        // Every position of the pass has its own activations and softmax state.
        buffer_bytes: n * t.buffer_bytes(cfg, act, acc),
        tiles: t.tiles,
        steps,
    }
}

/// One decoder layer's prefill of `n` prompt tokens attending to `keys`
/// positions (`n` for a whole prompt; a later chunk of a chunked prompt also
/// attends to the chunks before it) as a placed program on the `p x p` square
/// at its region's origin (the largest square inside it).
///
/// Every projection is a MeshGEMM (Cannon's schedule, [`Cannon`]): the
/// activations `X[n, d]` in `ceil(n/p) x ceil(d/p)` blocks, each weight in square
/// blocks with its output over the columns (Q/K/V fused into one `d x (q+2kv)`
/// matrix, gate and up into one `d x 2f`). Attention is two more MeshGEMMs over
/// all heads at once: scores `Q K^T` (inner dimension the query width, each PE
/// accumulating only the heads its dims belong to) and `P V` (inner dimension
/// n); the Cannon schedule visits masked blocks too, so the causal mask saves
/// nothing. Softmax max and sum and each RMSNorm's sum of squares are allreduced
/// along the rows of the square, `ceil(n/p)` values each.
///
/// These are the square's own tiles: on a square region they are the decode
/// tiling's blocks in another order (the Cannon skew, applied as the tiles are
/// loaded); on an elongated one the square's PEs hold more of each matrix than
/// the decode tiling puts on them, and [`prefill_fits`] says whether they can.
pub fn prefill_layer_program(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    w: u32,
    h: u32,
    n: usize,
    keys: usize,
    opts: &PlanOptions,
) -> LayerProgram {
    let p = w.min(h);
    let keys = keys.max(n);
    let act = spec.precision.activation_dtype.size_bytes();
    let weight = spec.precision.weight_dtype;
    let (d, q, kv, f) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.intermediate_size,
    );
    let div = |a: usize| (a as u64).div_ceil(p.max(1) as u64);
    let rows = div(n); // tokens per PE row-block
    let xt = rows * div(d); // X tile elements per PE
    let along_rows = |values: u64, bytes: u64| {
        Some(in_layer(
            CollectiveKind::Allreduce,
            Axis::Row,
            p,
            opts,
            values,
            bytes,
        ))
    };
    // An (m x k) . (k x nn) product as Cannon rounds over the square.
    let matmul = |label, m: usize, k: usize, nn: usize| {
        let (mt, kt, nt) = (div(m), div(k), div(nn));
        Step {
            label,
            work_per_pe: mt * kt * nt * p as u64,
            kernels: vec![Kernel::Gemm {
                m: mt,
                k: kt,
                n: nt,
                dtype: weight,
            }],
            collective: None,
            transfer: None,
            cannon: Some(Cannon {
                p,
                a_values: mt * kt,
                b_values: kt * nt,
                bytes_per_value: act,
                in_layer: true,
            }),
        }
    };
    let norm = || {
        step(
            OpKind::RmsNorm,
            xt,
            vec![Kernel::SumSquares { n: xt }, Kernel::RmsScale { n: xt }],
            along_rows(rows, 4),
        )
    };
    let residual = || step(OpKind::Residual, xt, vec![Kernel::Add { n: xt }], None);

    let mut steps = vec![norm(), matmul(OpKind::QkvProj, n, d, q + 2 * kv)];
    if cfg.qk_norm() {
        // Per-head RMSNorm of every row's q and k heads: the squares and the
        // scale as local work; the sums of heads split across PEs travel with
        // the GEMM's output (not charged: small beside the GEMMs).
        let work = rows * div(q + kv);
        steps.push(step(
            OpKind::QkNorm,
            work,
            vec![Kernel::SumSquares { n: work }, Kernel::RmsScale { n: work }],
            None,
        ));
    }
    let rope = rows * div(q + kv);
    steps.push(step(
        OpKind::Rope,
        rope,
        vec![Kernel::Rope { n: rope }],
        None,
    ));
    let kv_work = 2 * rows * div(kv);
    steps.push(step(
        OpKind::KvAppend,
        kv_work,
        vec![Kernel::Scale { n: kv_work }],
        None,
    ));
    steps.push(matmul(OpKind::AttnScores, n, q, keys));
    let s_tile = rows * div(keys);
    steps.push(step(
        OpKind::SoftmaxMax,
        s_tile,
        vec![Kernel::Max { n: s_tile }],
        along_rows(rows, act),
    ));
    steps.push(step(
        OpKind::SoftmaxSum,
        s_tile,
        vec![
            Kernel::ExpSum { n: s_tile },
            Kernel::Normalize { n: s_tile },
        ],
        along_rows(rows, 4),
    ));
    steps.push(matmul(OpKind::AttnValues, n, keys, q));
    steps.push(matmul(OpKind::OProj, n, q, d));
    steps.push(residual());
    steps.push(norm());
    steps.push(matmul(OpKind::GateUpProj, n, d, 2 * f));
    let silu = rows * div(f);
    steps.push(step(
        OpKind::SiluMul,
        silu,
        vec![Kernel::SiluMul { n: silu }],
        None,
    ));
    steps.push(matmul(OpKind::DownProj, n, f, d));
    steps.push(residual());

    // The square's tiles: every weight in p x p blocks, output over columns.
    let pu = p as usize;
    let block = |out: usize, inp: usize| MatrixTiling {
        out: Split::new(out, pu),
        inp: Split::new(inp, pu),
        orientation: Orientation::OutAlongColumns,
        dtype: weight,
    };
    let matrix = |name: &str, tiling| Tile::Matrix {
        name: name.into(),
        tiling,
    };
    // Gains and biases follow their activation's dims, split over the columns.
    let vector = |name: &str, len: usize| Tile::Vector {
        name: name.into(),
        tiling: VectorTiling {
            split: Split::new(len, pu),
            along: Axis::Row,
            dtype: weight,
        },
    };
    let mut tiles = vec![
        vector("input_layernorm.weight", d),
        matrix("self_attn.{q,k,v}_proj.weight", block(q + 2 * kv, d)),
        matrix("self_attn.o_proj.weight", block(d, q)),
        vector("post_attention_layernorm.weight", d),
        matrix("mlp.{gate,up}_proj.weight", block(2 * f, d)),
        matrix("mlp.down_proj.weight", block(d, f)),
    ];
    if cfg.qk_norm() {
        // Every PE holds the whole head_dim gains: its dims may sit anywhere in a head.
        for name in ["self_attn.q_norm.weight", "self_attn.k_norm.weight"] {
            tiles.push(Tile::Vector {
                name: name.into(),
                tiling: VectorTiling {
                    split: Split::new(cfg.head_dim, 1),
                    along: Axis::Row,
                    dtype: weight,
                },
            });
        }
    }
    if cfg.attention_bias {
        tiles.push(vector("self_attn.{q,k,v}_proj.bias", q + 2 * kv));
    }
    if has_o_bias(cfg) {
        tiles.push(vector("self_attn.o_proj.bias", d));
    }

    // Working buffers: the residual tile, plus the largest phase's live tiles
    // (a GEMM's A tile and C tile, one arriving A and B tile, and the B tile
    // itself when it is an activation rather than a weight).
    let wb = weight.size_bytes();
    let live = |m: usize, k: usize, nn: usize, b_is_weight: bool| {
        let (mt, kt, nt) = (div(m), div(k), div(nn));
        let b = if b_is_weight {
            kt * nt * wb
        } else {
            2 * kt * nt * act
        };
        (2 * mt * kt + mt * nt) * act + b
    };
    let qkv_tile = rows * div(q + 2 * kv) * act;
    let phases = [
        live(n, d, q + 2 * kv, true),
        qkv_tile + live(n, q, keys, false),
        qkv_tile + live(n, keys, q, false),
        live(n, q, d, true),
        live(n, d, 2 * f, true),
        rows * div(2 * f) * act + live(n, f, d, true),
    ];
    // The prompt's K and V are kept where decode reads them: the whole region's
    // decode tiling.
    let decode = LayerTiling::new(cfg, weight, spec.precision.kv_dtype, w as usize, h as usize);
    RegionProgram {
        width: p,
        height: p,
        tiles,
        kv_bytes_per_position: decode.kv_bytes_per_position(),
        buffer_bytes: xt * act + phases.into_iter().max().unwrap_or(0),
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
/// The embedding lookup of `tokens` positions: the PEs holding each token's
/// row (split over the first layer's region height) read it, and the rows go
/// to layer 0's region.
pub fn embedding_step(spec: &WaferSpec, layout: &Layout, d: usize, tokens: usize) -> Step<OpKind> {
    let first = layout.layers.first().copied().unwrap_or(layout.lm_head);
    let emb = (d as u64).div_ceil(first.region.height().max(1) as u64) * tokens as u64;
    Step {
        label: OpKind::Embedding,
        work_per_pe: emb,
        kernels: vec![Kernel::Scale { n: emb }],
        collective: None,
        transfer: handoff(spec, &layout.embedding, &first, (tokens * d) as u64),
        cannon: None,
    }
}

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

/// Moving a prefill's `tokens x d` activations from the square of `from` to
/// the square of `to`: every row of the source square sends its
/// `ceil(tokens / p) x d` values east along its own links; `None` on one region.
pub fn prefill_handoff(
    spec: &WaferSpec,
    from: &Site,
    to: &Site,
    tokens: usize,
    d: usize,
) -> Option<Transfer> {
    if from == to {
        return None;
    }
    let act = spec.precision.activation_dtype.size_bytes();
    let route = if from.wafer != to.wafer {
        Route::OffWafer {
            bytes: (tokens * d) as u64 * act,
        }
    } else {
        let p = from.region.width().min(from.region.height());
        Route::OnWafer {
            wavelets_per_line: wavelets(spec, (tokens as u64).div_ceil(p as u64) * d as u64, act),
            hops: from.region.origin.hops_to(to.region.origin) + from.region.width() as u64,
        }
    };
    Some(Transfer {
        route,
        replicate: None,
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
    let d = cfg.hidden_size;
    let div = |a: usize, b: u32| (a as u64).div_ceil(b.max(1) as u64);
    let step = handing_step;

    let embedding = vec![embedding_step(spec, layout, d, 1)];

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

    let head = head_steps(spec, cfg, layout, 1, opts);
    ModelSteps {
        embedding,
        after_layer,
        head,
    }
}

/// The final norm, the LM head (the vocabulary over the head region's
/// columns: a GEMV for one position, a GEMM for several), the argmax and the
/// token ids' loop-back to the embedding, for `n` positions at once: a decode
/// step's head (`n` = 1) or a verification step's.
pub fn head_steps(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    n: usize,
    opts: &PlanOptions,
) -> Vec<Step<OpKind>> {
    let act = spec.precision.activation_dtype.size_bytes();
    let n = n as u64;
    let div_ceil = |a: usize, b: u32| (a as u64).div_ceil(b.max(1) as u64);
    let (w, h) = (
        layout.lm_head.region.width(),
        layout.lm_head.region.height(),
    );
    let xr = div_ceil(cfg.hidden_size, h);
    let vocab_cols = div_ceil(cfg.vocab_size, w);
    let along = |axis: Axis, kind, values_per_pe, bytes_per_value| {
        let line = match axis {
            Axis::Column => h,
            Axis::Row => w,
        };
        Some(in_layer(
            kind,
            axis,
            line,
            opts,
            values_per_pe,
            bytes_per_value,
        ))
    };
    let step = handing_step;
    let dtype = spec.precision.weight_dtype;
    let head = if n == 1 {
        Kernel::Gemv {
            k: xr,
            n: vocab_cols,
            dtype,
        }
    } else {
        Kernel::Gemm {
            m: n,
            k: xr,
            n: vocab_cols,
            dtype,
        }
    };
    let (from, to) = (&layout.lm_head, &layout.embedding);
    let back = if from.wafer != to.wafer {
        Route::OffWafer { bytes: 4 * n }
    } else {
        Route::OnWafer {
            wavelets_per_line: n,
            hops: from.region.origin.hops_to(to.region.origin),
        }
    };
    vec![
        step(
            OpKind::FinalNorm,
            n * xr,
            vec![
                Kernel::SumSquares { n: n * xr },
                Kernel::RmsScale { n: n * xr },
            ],
            along(Axis::Column, CollectiveKind::Allreduce, n, 4),
            None,
        ),
        step(
            OpKind::LmHead,
            n * xr * vocab_cols,
            vec![head],
            along(Axis::Column, CollectiveKind::Allreduce, n * vocab_cols, act),
            None,
        ),
        step(
            OpKind::Argmax,
            n * vocab_cols,
            vec![Kernel::Max { n: n * vocab_cols }],
            along(Axis::Row, CollectiveKind::Reduce, 2 * n, 4),
            None,
        ),
        step(
            OpKind::TokenLoopback,
            n,
            vec![],
            None,
            Some(Transfer {
                route: back,
                replicate: None,
            }),
        ),
    ]
}
