//! The mesh engine proper: builds every region's tiles from the weights and runs
//! one token through the placed program (embedding lookup, every layer on its
//! region, final norm, LM head and argmax), functionally.
//!
//! Data layout per layer region of `w x h` PEs (the cost plan's, `models::cost`):
//! the residual is split over the rows; Q/K/V and gate/up take their input over
//! rows and reduce along columns (lines of `h` PEs), leaving outputs split over
//! columns; O and down take their input over columns and reduce along rows (lines
//! of `w`), leaving the residual split over rows again. Every reduction runs the
//! schedule of the tree the plan charges for its line (`PlanOptions::tree`:
//! mid-rooted K-trees, K = 2 unless `--k` says otherwise). RMSNorm's sum of
//! squares is reduced along a column. Every precision field is honoured
//! ([`Numerics`]): activations are stored and sent as `activation_dtype` (the
//! bytes the program charges), reductions sum in `accumulate_dtype`, KV values
//! are rounded to `kv_dtype` when appended; weights are f16 tiles (another
//! `weight_dtype` is refused). A PE's own tile arithmetic is f32.
//!
//! Prefill runs the prompt token by token through the same decode program (the
//! functional result of a batched pass is the same numbers); its cycles are the
//! price of exactly that scheme (`cost::token_prefill`), which `wafer estimate`
//! reports beside the MeshGEMM and streamed prefills. Attention's per-PE math is
//! `wafer_kernels::attention`; the tile GEMV is `wafer_kernels::matrix`.

use crate::attention::{attend, AttnGeometry, AttnScratch, KvCache};
use crate::gemv::{tiled_gemv, tiled_gemvs};
use crate::heads::HeadOrder;
use crate::tiling::{MatrixTiling, Split, TiledMatrix};
use crate::weights::{ModelSource, RowSource};
use anyhow::{bail, Context, Result};
use half::f16;
use wafer_core::{DType, WaferSpec};
use wafer_kernels::format::{round_slice, Formats};
use wafer_kernels::vector;
use wafer_lower::cost::{OpKind, PlanOptions};
use wafer_lower::layout::{Layout, Site};
use wafer_lower::program::{decode_layer_program, model_steps, LayerProgram, ModelSteps};
use wafer_lower::tiling::{table_tiling, LayerTiling};
use wafer_models::config::ModelConfig;
use wafer_sim::program::Step;
use wafer_sim::Schedule;

/// One decoder layer on its region.
pub(crate) struct MeshLayer {
    site: Site,
    /// The tiling its tiles were cut by.
    pub(crate) tiling: LayerTiling,
    /// The decode step it runs: the steps the cost plan prices, in order.
    pub(crate) program: LayerProgram,
    /// The residual split over the region's rows.
    x_split: Split,
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    q: TiledMatrix,
    k: TiledMatrix,
    v: TiledMatrix,
    /// Biases in stored order (Qwen2-style models).
    q_bias: Option<Vec<f32>>,
    k_bias: Option<Vec<f32>>,
    v_bias: Option<Vec<f32>>,
    /// Output-projection bias (added where the O reduction lands, on the rows).
    o_bias: Option<Vec<f32>>,
    /// Per-head RMSNorm gains of q and k (`head_dim` values; Qwen3).
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    o: TiledMatrix,
    gate: TiledMatrix,
    up: TiledMatrix,
    down: TiledMatrix,
    /// Along a column (lines of `h` PEs) and along a row (lines of `w`).
    pub(crate) along_column: Schedule,
    pub(crate) along_row: Schedule,
    pub(crate) attn: AttnGeometry,
    kv: KvCache,
}

/// The final norm and the LM head on their region.
struct MeshHead {
    x_split: Split,
    norm: Vec<f32>,
    /// Vocabulary over columns, hidden over rows.
    matrix: TiledMatrix,
    along_column: Schedule,
    along_row: Schedule,
}

/// Per-step buffers, reused so decode does not allocate per element.
#[derive(Default)]
struct Buffers {
    h: Vec<f32>,
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    parts: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    scratch: AttnScratch,
}

/// The number formats of the spec's precision block, as the mesh applies them:
/// activations are stored and sent as `act` (every value a step leaves on a PE
/// and every value a GEMV or attention reduction moves), the sums of squares
/// and softmax sums travel as f32, and every running sum of a reduction is kept
/// as `accumulate_dtype`. A PE's own tile arithmetic is f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numerics {
    /// Activations, stored and sent.
    pub act: DType,
    /// Every running sum of a reduction.
    pub acc: DType,
}

impl Numerics {
    /// Everything f32: an f32 host's arithmetic.
    pub const F32: Numerics = Numerics {
        act: DType::F32,
        acc: DType::F32,
    };

    pub fn of(spec: &WaferSpec) -> Numerics {
        Numerics {
            act: spec.precision.activation_dtype,
            acc: spec.precision.accumulate_dtype,
        }
    }

    /// Reductions of activations (GEMV partials, scores, maxima, weighted values).
    pub fn acts(self) -> Formats {
        Formats {
            wire: self.act,
            acc: self.acc,
        }
    }

    /// Reductions of f32 sums (sums of squares, softmax sums).
    pub fn sums(self) -> Formats {
        Formats {
            wire: DType::F32,
            acc: self.acc,
        }
    }
}

/// One sequence's KV caches (one per layer) and position, kept aside while
/// another sequence runs on the same program ([`MeshProgram::swap_sequence`]).
pub struct SequenceKv {
    kv: Vec<KvCache>,
    position: usize,
}

/// A model placed and tiled on the simulated mesh.
pub struct MeshProgram {
    pub config: ModelConfig,
    pub spec: WaferSpec,
    pub layout: Layout,
    heads: HeadOrder,
    pub(crate) layers: Vec<MeshLayer>,
    /// The steps around the layers (embedding, hand-offs, head), as priced.
    around: ModelSteps,
    /// The embedding table, unless it is the (tied) LM head's.
    embed: Option<TiledMatrix>,
    head: MeshHead,
    inv_freq: Vec<f32>,
    numerics: Numerics,
    position: usize,
    buf: Buffers,
    /// The token the mesh's argmax reduction chose at the last step.
    pub last_argmax: Option<u32>,
}

fn check_shape(name: &str, m: &dyn RowSource, rows: usize, cols: usize) -> Result<()> {
    let (r, c) = m.shape();
    if (r, c) != (rows, cols) {
        bail!("{name}: expected a {rows} x {cols} matrix for this config, found {r} x {c}");
    }
    Ok(())
}

/// Qwen3's per-head RMSNorm of a stored-order q or k vector (`order`: stored
/// position -> original index; `per_kv` heads per KV head). Each column squares
/// the dims of each head it holds; a head's partial sums meet across the
/// segment of columns holding its KV head (attention's segment schedules);
/// every PE then scales its dims by the head's factor and the gain of their
/// position in the head.
#[allow(clippy::too_many_arguments)]
fn head_rms_norm(
    x: &mut [f32],
    order: &[usize],
    attn: &AttnGeometry,
    per_kv: usize,
    gain: &[f32],
    eps: f64,
    nums: Numerics,
    parts: &mut Vec<f32>,
) {
    let hd = gain.len();
    let col_chunk = attn.kv_split.chunk * per_kv;
    let heads = x.len() / hd;
    let mut inv = vec![0.0f32; heads];
    for (head, inv) in inv.iter_mut().enumerate() {
        let (c0, seg) = &attn.segments[head / per_kv];
        parts.clear();
        parts.resize(seg.len() as usize, 0.0);
        for (p, (&v, &orig)) in x.iter().zip(order).enumerate() {
            if orig / hd == head {
                parts[p / col_chunk - c0] += v * v;
            }
        }
        let sum = seg.sum_in(parts, 1, seg.len() as usize, nums.sums())[0];
        *inv = 1.0 / (sum / hd as f32 + eps as f32).sqrt();
    }
    for (v, &orig) in x.iter_mut().zip(order) {
        *v = gain[orig % hd] * (*v * inv[orig / hd]);
    }
    round_slice(nums.act, x);
}

/// Every collective of the layer's program is charged for the tree the mesh
/// executes for it: along a column or a row, exactly the same tree; across a
/// head's segment of columns, the same kind of tree over the charged segment
/// length or one column more (a head whose dims start mid-column spans one
/// column more than the representative segment the plan charges).
fn check_trees(
    steps: &[Step<OpKind>],
    along_column: &Schedule,
    along_row: &Schedule,
    attn: Option<&AttnGeometry>,
) -> Result<()> {
    use wafer_sim::tiling::Axis;
    let kind = |a: wafer_sim::Algorithm| match a {
        wafer_sim::Algorithm::MidKTree { k, .. } | wafer_sim::Algorithm::KTree { k, .. } => k,
        _ => 0,
    };
    for step in steps {
        let Some(c) = &step.collective else { continue };
        let mismatch = match step.label {
            OpKind::AttnScores | OpKind::QkNorm => {
                attn.iter().flat_map(|a| &a.segments).find(|(_, s)| {
                    !(s.len() == c.tree.len() || s.len() == c.tree.len() + 1)
                        || kind(s.shape().algorithm()) != kind(c.tree.algorithm())
                })
            }
            _ => None,
        }
        .map(|(_, s)| s)
        .or(match (step.label, c.axis) {
            (OpKind::AttnScores | OpKind::QkNorm, _) => None,
            (_, Axis::Column) => Some(along_column).filter(|s| s.shape() != &c.tree),
            (_, Axis::Row) => Some(along_row).filter(|s| s.shape() != &c.tree),
        });
        if let Some(s) = mismatch {
            bail!(
                "{}: the program charges {:?} over {} PEs, the mesh runs {:?} over {}",
                step.label.name(),
                c.tree.algorithm(),
                c.tree.len(),
                s.shape().algorithm(),
                s.len()
            );
        }
    }
    Ok(())
}

/// The reduction `opts` charges for a line of `pes` PEs.
fn line_schedule(pes: usize, opts: &PlanOptions) -> Result<Schedule> {
    Schedule::reduce(pes as u32, opts.tree(pes as u32)).with_context(|| {
        format!("the mesh engine cannot run the reductions along a line of {pes} PEs")
    })
}

fn check_len(name: &str, v: &[f32], len: usize) -> Result<()> {
    if v.len() != len {
        bail!("{name}: expected {len} values, found {}", v.len());
    }
    Ok(())
}

impl MeshProgram {
    /// Tiles `weights` onto the regions of `layout`, with room in every layer's KV
    /// cache for `context` positions, and checks that no PE exceeds its SRAM.
    pub fn new(
        config: ModelConfig,
        spec: WaferSpec,
        layout: Layout,
        weights: &ModelSource,
        inv_freq: Vec<f32>,
        context: usize,
        opts: &PlanOptions,
    ) -> Result<MeshProgram> {
        let c = &config;
        let (d, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        if layout.layers.len() != c.num_hidden_layers || weights.layers.len() != c.num_hidden_layers
        {
            bail!(
                "the layout places {} layers and the weights hold {}, but the config has {}",
                layout.layers.len(),
                weights.layers.len(),
                c.num_hidden_layers
            );
        }
        let p = &spec.precision;
        if p.weight_dtype != DType::F16 {
            bail!(
                "the mesh engine holds weights as f16 tiles, but hardware spec `{}` sets precision.weight_dtype = {}",
                spec.name,
                p.weight_dtype
            );
        }
        if context == 0 {
            bail!("the mesh needs room for at least one position");
        }
        let heads = HeadOrder::new(c.head_dim, c.num_key_value_heads, c.group_size());
        let identity_d: Vec<usize> = (0..d).collect();
        let layers = weights
            .layers
            .iter()
            .zip(&layout.layers)
            .enumerate()
            .map(|(l, (src, site))| {
                let name = |t: &str| format!("layer {l} {t}");
                for (t, m, r, cc) in [
                    ("q_proj", src.q_proj, qd, d),
                    ("k_proj", src.k_proj, kvd, d),
                    ("v_proj", src.v_proj, kvd, d),
                    ("o_proj", src.o_proj, d, qd),
                    ("gate_proj", src.gate_proj, f, d),
                    ("up_proj", src.up_proj, f, d),
                    ("down_proj", src.down_proj, d, f),
                ] {
                    check_shape(&name(t), m, r, cc)?;
                }
                check_len(&name("input_layernorm"), src.input_layernorm, d)?;
                check_len(
                    &name("post_attention_layernorm"),
                    src.post_attention_layernorm,
                    d,
                )?;
                let (w, h) = (site.region.width() as usize, site.region.height() as usize);
                // The one tiling placement and the cost plan read too.
                let tiling = LayerTiling::new(
                    c,
                    spec.precision.weight_dtype,
                    spec.precision.kv_dtype,
                    w,
                    h,
                );
                let x_split = tiling.x;
                let permuted = |m: &dyn RowSource, order: &[usize], t: &MatrixTiling| {
                    TiledMatrix::from_tiling(t, |o, row| m.row_f16(order[o], row))
                };
                let q = permuted(src.q_proj, &heads.q, &tiling.q_proj);
                let k = permuted(src.k_proj, &heads.kv, &tiling.k_proj);
                let v = permuted(src.v_proj, &heads.kv, &tiling.v_proj);
                let q_order = &heads.q;
                let o = TiledMatrix::from_tiling(&tiling.o_proj, |r, row| {
                    let mut orig = vec![f16::ZERO; qd];
                    src.o_proj.row_f16(r, &mut orig);
                    for (dst, &i) in row.iter_mut().zip(q_order) {
                        *dst = orig[i];
                    }
                });
                let plain = |m: &dyn RowSource, t: &MatrixTiling| {
                    TiledMatrix::from_tiling(t, |o, row| m.row_f16(o, row))
                };
                let gate = plain(src.gate_proj, &tiling.gate_proj);
                let up = plain(src.up_proj, &tiling.up_proj);
                let down = plain(src.down_proj, &tiling.down_proj);
                if (src.q_norm.is_some(), src.k_norm.is_some()) != (c.qk_norm(), c.qk_norm()) {
                    bail!(
                        "layer {l}: the config {} per-head q/k norms, but the weights have q_norm {} and k_norm {}",
                        if c.qk_norm() { "needs" } else { "has no" },
                        if src.q_norm.is_some() { "present" } else { "absent" },
                        if src.k_norm.is_some() { "present" } else { "absent" },
                    );
                }
                let head_gain = |g: Option<&[f32]>, t: &str| -> Result<Option<Vec<f32>>> {
                    match g {
                        None => Ok(None),
                        Some(g) => {
                            check_len(&name(t), g, c.head_dim)?;
                            Ok(Some(g.to_vec()))
                        }
                    }
                };
                let bias = |b: Option<&[f32]>,
                            order: &[usize],
                            len: usize,
                            t: &str|
                 -> Result<Option<Vec<f32>>> {
                    match b {
                        None => Ok(None),
                        Some(b) => {
                            check_len(&name(t), b, len)?;
                            Ok(Some(order.iter().map(|&i| b[i]).collect()))
                        }
                    }
                };
                let program = decode_layer_program(&spec, c, w as u32, h as u32, 1, opts);
                let along_column = line_schedule(h, opts)?;
                let along_row = line_schedule(w, opts)?;
                let attn = AttnGeometry::new(w, h, &heads, opts)?;
                check_trees(&program.steps, &along_column, &along_row, Some(&attn))
                    .with_context(|| format!("layer {l}"))?;
                Ok(MeshLayer {
                    site: *site,
                    tiling,
                    program,
                    x_split,
                    input_norm: src.input_layernorm.to_vec(),
                    post_norm: src.post_attention_layernorm.to_vec(),
                    q,
                    k,
                    v,
                    q_bias: bias(src.q_bias, &heads.q, qd, "q_proj.bias")?,
                    k_bias: bias(src.k_bias, &heads.kv, kvd, "k_proj.bias")?,
                    v_bias: bias(src.v_bias, &heads.kv, kvd, "v_proj.bias")?,
                    o_bias: bias(src.o_bias, &identity_d, d, "o_proj.bias")?,
                    q_norm: head_gain(src.q_norm, "q_norm")?,
                    k_norm: head_gain(src.k_norm, "k_norm")?,
                    o,
                    gate,
                    up,
                    down,
                    along_column,
                    along_row,
                    attn,
                    kv: KvCache::new(kvd, context, spec.precision.kv_dtype),
                })
            })
            .collect::<Result<Vec<_>>>()?;

        check_shape("embed_tokens", weights.embed_tokens, c.vocab_size, d)?;
        check_shape("lm_head", weights.lm_head, c.vocab_size, d)?;
        check_len("norm", weights.norm, d)?;
        let wd = spec.precision.weight_dtype;
        let hr = layout.lm_head.region;
        let (hw, hh) = (hr.width() as usize, hr.height() as usize);
        let head = MeshHead {
            x_split: Split::new(d, hh),
            norm: weights.norm.to_vec(),
            matrix: TiledMatrix::from_tiling(&table_tiling(c, wd, hw, hh), |o, row| {
                weights.lm_head.row_f16(o, row)
            }),
            along_column: line_schedule(hh, opts)?,
            along_row: line_schedule(hw, opts)?,
        };
        // A tied head is the embedding table on the same region: one set of tiles.
        let embed = if c.tie_word_embeddings && layout.embedding == layout.lm_head {
            None
        } else {
            let er = layout.embedding.region;
            let tiling = table_tiling(c, wd, er.width() as usize, er.height() as usize);
            Some(TiledMatrix::from_tiling(&tiling, |o, row| {
                weights.embed_tokens.row_f16(o, row)
            }))
        };
        let around = model_steps(&spec, c, &layout, opts);
        check_trees(&around.head, &head.along_column, &head.along_row, None)
            .context("the LM head's region")?;
        let numerics = Numerics::of(&spec);
        let program = MeshProgram {
            around,
            heads,
            layers,
            embed,
            head,
            inv_freq,
            numerics,
            position: 0,
            buf: Buffers::default(),
            last_argmax: None,
            config,
            spec,
            layout,
        };
        program.check_sram(context)?;
        Ok(program)
    }

    /// Positions held in the KV caches.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Keeps the first `len` positions of every layer's KV cache.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.position {
            bail!(
                "cannot roll the mesh's KV caches back to {len} positions: they hold {}",
                self.position
            );
        }
        for l in &mut self.layers {
            l.kv.truncate(len)?;
        }
        self.position = len;
        Ok(())
    }

    /// Empty KV caches shaped like this program's (the same room per layer),
    /// for another sequence on the same tiles.
    pub fn empty_sequence(&self) -> SequenceKv {
        SequenceKv {
            kv: self
                .layers
                .iter()
                .map(|l| KvCache::new(l.kv.kv_dim, l.kv.capacity, l.kv.dtype))
                .collect(),
            position: 0,
        }
    }

    /// Exchanges the program's KV caches and position with `saved`'s (one
    /// sequence out, another in; the weight tiles stay).
    pub fn swap_sequence(&mut self, saved: &mut SequenceKv) {
        for (layer, kv) in self.layers.iter_mut().zip(&mut saved.kv) {
            std::mem::swap(&mut layer.kv, kv);
        }
        std::mem::swap(&mut self.position, &mut saved.position);
    }

    /// Forgets every layer's KV cache.
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| l.kv.clear());
        self.position = 0;
    }

    /// Weight bytes every PE of layer `l`'s region holds, from the tiles as
    /// stored: each matrix's padded tile, each norm gain's and bias's chunk.
    pub fn layer_weight_bytes_per_pe(&self, l: usize) -> u64 {
        let layer = &self.layers[l];
        let wb = self.spec.precision.weight_dtype.size_bytes();
        let chunk = |s: Split| s.chunk as u64 * wb;
        let matrices: u64 = [
            &layer.q,
            &layer.k,
            &layer.v,
            &layer.o,
            &layer.gate,
            &layer.up,
            &layer.down,
        ]
        .iter()
        .map(|m| m.bytes_per_pe())
        .sum();
        let mut gains = 2 * chunk(layer.x_split);
        if layer.q_norm.is_some() {
            // Each column holds the gains of its KV dims' head positions.
            let per_column = layer.attn.kv_split.chunk.min(self.config.head_dim) as u64;
            gains += 2 * per_column * wb;
        }
        let q_split = layer.q.out_split;
        let kv_split = layer.k.out_split;
        let biases = [
            (layer.q_bias.is_some(), q_split),
            (layer.k_bias.is_some(), kv_split),
            (layer.v_bias.is_some(), kv_split),
            (layer.o_bias.is_some(), layer.x_split),
        ]
        .iter()
        .filter(|(present, _)| *present)
        .map(|&(_, s)| chunk(s))
        .sum::<u64>();
        matrices + gains + biases
    }

    /// Multiply-accumulates each PE performs in each GEMV step of layer `l`: the
    /// padded tiles the step's GEMV pass multiplies.
    pub fn layer_gemv_macs_per_pe(&self, l: usize) -> Vec<(OpKind, u64)> {
        let layer = &self.layers[l];
        let macs = |ms: &[&TiledMatrix]| ms.iter().map(|m| m.tile_len() as u64).sum::<u64>();
        vec![
            (OpKind::QkvProj, macs(&[&layer.q, &layer.k, &layer.v])),
            (OpKind::OProj, macs(&[&layer.o])),
            (OpKind::GateUpProj, macs(&[&layer.gate, &layer.up])),
            (OpKind::DownProj, macs(&[&layer.down])),
        ]
    }

    /// KV bytes every PE of layer `l`'s region holds per position cached on its
    /// row (its column's padded chunk of keys and values).
    pub fn layer_kv_bytes_per_position(&self, l: usize) -> u64 {
        let layer = &self.layers[l];
        2 * layer.attn.kv_split.chunk as u64 * layer.kv.dtype.size_bytes()
    }

    /// No PE may exceed its data SRAM: the layers sharing a region hold their
    /// weight tiles and their KV slices at `context` positions (row 0 holds the
    /// most), their largest working buffers and the runtime reserve. The same
    /// sum placement makes from the same tiling.
    fn check_sram(&self, context: usize) -> Result<()> {
        let p = &self.spec.precision;
        let (act, acc) = (
            p.activation_dtype.size_bytes(),
            p.accumulate_dtype.size_bytes(),
        );
        let mut sites: Vec<(Site, Vec<usize>)> = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            match sites.iter_mut().find(|(s, _)| *s == layer.site) {
                Some((_, ls)) => ls.push(l),
                None => sites.push((layer.site, vec![l])),
            }
        }
        for (site, ls) in sites {
            let h = site.region.height() as u64;
            let row0_positions = (context as u64).div_ceil(h);
            let mut weights = 0u64;
            let mut kv = 0u64;
            let mut buffers = 0u64;
            for &l in &ls {
                weights += self.layer_weight_bytes_per_pe(l);
                kv += row0_positions * self.layer_kv_bytes_per_position(l);
                buffers = buffers.max(self.layers[l].tiling.buffer_bytes(&self.config, act, acc));
            }
            let reserve = self.spec.pe.reserve_bytes;
            let total = weights + kv + buffers + reserve;
            if total > self.spec.pe.sram_bytes {
                bail!(
                    "layer {} at {context} positions: PE {} of its {} region needs {} bytes (weights {weights}, KV {kv}, buffers {buffers}, reserve {reserve}) but has {} of SRAM",
                    ls[0],
                    site.region.origin,
                    site.region.shape,
                    total,
                    self.spec.pe.sram_bytes
                );
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn rms_norm(
        x_split: Split,
        along_column: &Schedule,
        nums: Numerics,
        eps: f64,
        h: &[f32],
        w: &[f32],
        out: &mut [f32],
        parts: &mut Vec<f32>,
    ) {
        // Every row's PEs square their chunk; the sums meet along a column.
        let used = x_split.used();
        parts.clear();
        parts.extend((0..used).map(|r| vector::sum_squares(&h[x_split.range(r)])));
        parts.resize(along_column.lines_needed(used), 0.0);
        let sum = along_column.sum_in(parts, 1, used, nums.sums())[0];
        // Every PE scales its copy of its row's chunk.
        out.copy_from_slice(h);
        vector::rms_scale(out, w, sum, h.len(), eps as f32);
        round_slice(nums.act, out);
    }

    /// Runs one token at the next position and returns the next-token logits.
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        // On a rayon worker, so the step's many short parallel passes fork and
        // join inside the pool instead of each crossing in from this thread.
        rayon::scope(|_| self.step_on_worker(token))
    }

    fn step_on_worker(&mut self, token: u32) -> Result<Vec<f32>> {
        let c = &self.config;
        if token as usize >= c.vocab_size {
            bail!(
                "token id {token} is outside the vocabulary (vocab_size {})",
                c.vocab_size
            );
        }
        let pos = self.position;
        let (d, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let eps = c.rms_norm_eps;
        let nums = self.numerics;
        let b = &mut self.buf;
        b.h.resize(d, 0.0);
        b.x.resize(d, 0.0);
        b.o.resize(d, 0.0);
        b.q.resize(qd, 0.0);
        b.attn.resize(qd, 0.0);
        b.k.resize(kvd, 0.0);
        b.v.resize(kvd, 0.0);
        b.gate.resize(f, 0.0);
        b.up.resize(f, 0.0);
        b.cos.resize(c.head_dim / 2, 0.0);
        b.sin.resize(c.head_dim / 2, 0.0);

        // The steps around the layers run by their labels too (`run_around`).
        let table = self.embed.as_ref().unwrap_or(&self.head.matrix);
        let mut logits = Vec::new();
        let mut best = None;
        let mut around = |label: OpKind, b: &mut Buffers, logits: &mut Vec<f32>| {
            run_around(
                label, token, table, &self.head, eps, nums, b, logits, &mut best,
            )
        };
        for step in &self.around.embedding {
            around(step.label, b, &mut logits)?;
        }
        wafer_models::reference::rope::cos_sin(&self.inv_freq, pos, &mut b.cos, &mut b.sin);

        let heads = &self.heads;
        for (layer, after) in self.layers.iter_mut().zip(&self.around.after_layer) {
            // The layer's placed program, step by step: every step the pricer
            // charges is executed here, in its order, or the step is refused.
            let mut norms = [&layer.input_norm, &layer.post_norm].into_iter();
            for step in &layer.program.steps {
                match step.label {
                    OpKind::RmsNorm => {
                        let gain = norms.next().context("a third rmsnorm step in a layer")?;
                        Self::rms_norm(
                            layer.x_split,
                            &layer.along_column,
                            nums,
                            eps,
                            &b.h,
                            gain,
                            &mut b.x,
                            &mut b.parts,
                        );
                    }
                    OpKind::QkvProj => {
                        tiled_gemvs(
                            &[&layer.q, &layer.k, &layer.v],
                            &b.x,
                            &mut [&mut b.q, &mut b.k, &mut b.v],
                            &layer.along_column,
                            nums.acts(),
                        );
                        for (out, bias) in [
                            (&mut b.q, &layer.q_bias),
                            (&mut b.k, &layer.k_bias),
                            (&mut b.v, &layer.v_bias),
                        ] {
                            if let Some(bias) = bias {
                                out.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
                                round_slice(nums.act, out);
                            }
                        }
                    }
                    OpKind::QkNorm => {
                        let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) else {
                            bail!(
                                "the program norms q and k, but the layer holds no q/k norm gains"
                            );
                        };
                        let g = heads.group;
                        let at = &layer.attn;
                        head_rms_norm(&mut b.q, &heads.q, at, g, qn, eps, nums, &mut b.parts);
                        head_rms_norm(&mut b.k, &heads.kv, at, 1, kn, eps, nums, &mut b.parts);
                    }
                    OpKind::Rope => {
                        heads.rope_q(&mut b.q, &b.cos, &b.sin);
                        heads.rope_k(&mut b.k, &b.cos, &b.sin);
                        round_slice(nums.act, &mut b.q);
                        round_slice(nums.act, &mut b.k);
                    }
                    OpKind::KvAppend => layer.kv.append(&b.k, &b.v)?,
                    // Scores, softmax max and exp-sum, and the weighted values run
                    // as one attention pass over the cache (the same reductions,
                    // in the program's order).
                    OpKind::AttnScores => attend(
                        &layer.attn,
                        heads,
                        &layer.kv,
                        &b.q,
                        &mut b.attn,
                        &mut b.scratch,
                        nums,
                    ),
                    OpKind::SoftmaxMax | OpKind::SoftmaxSum | OpKind::AttnValues => {}
                    OpKind::OProj => {
                        tiled_gemv(&layer.o, &b.attn, &mut b.o, &layer.along_row, nums.acts());
                        if let Some(bias) = &layer.o_bias {
                            b.o.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
                            round_slice(nums.act, &mut b.o);
                        }
                    }
                    OpKind::Residual => {
                        vector::add_into(&b.o, &mut b.h);
                        round_slice(nums.act, &mut b.h);
                    }
                    OpKind::GateUpProj => tiled_gemvs(
                        &[&layer.gate, &layer.up],
                        &b.x,
                        &mut [&mut b.gate, &mut b.up],
                        &layer.along_column,
                        nums.acts(),
                    ),
                    OpKind::SiluMul => {
                        vector::silu_mul(&mut b.gate, &b.up);
                        round_slice(nums.act, &mut b.gate);
                    }
                    OpKind::DownProj => tiled_gemv(
                        &layer.down,
                        &b.gate,
                        &mut b.o,
                        &layer.along_row,
                        nums.acts(),
                    ),
                    // Not steps of a layer: listed so that a new kind of step
                    // fails to compile here until the executor handles it.
                    OpKind::Embedding
                    | OpKind::Handoff
                    | OpKind::FinalNorm
                    | OpKind::LmHead
                    | OpKind::Argmax
                    | OpKind::TokenLoopback => {
                        bail!("`{}` is not a step of a layer program", step.label.name())
                    }
                }
            }
            for step in after {
                around(step.label, b, &mut logits)?;
            }
        }
        self.position += 1;
        for step in &self.around.head {
            around(step.label, b, &mut logits)?;
        }
        self.last_argmax = best;
        Ok(logits)
    }
}

/// Runs one step around the layers: the embedding lookup, a hand-off, the final
/// norm, the LM head, the argmax or the token's loop-back. Hand-offs and the
/// loop-back move values between regions; here the values are host memory
/// already, so they move nothing (their cycles are the program's).
#[allow(clippy::too_many_arguments)]
fn run_around(
    label: OpKind,
    token: u32,
    table: &TiledMatrix,
    head: &MeshHead,
    eps: f64,
    nums: Numerics,
    b: &mut Buffers,
    logits: &mut Vec<f32>,
    best: &mut Option<u32>,
) -> Result<()> {
    match label {
        OpKind::Embedding => {
            // The PEs holding the token's row (a column of the table) send its
            // chunks, one per row of the region.
            let (ob, r) = (
                token as usize / table.out_split.chunk,
                token as usize % table.out_split.chunk,
            );
            for ib in 0..table.in_split.used() {
                for (c, i) in table.in_split.range(ib).enumerate() {
                    b.h[i] = table.tile_element(ob, ib, r, c).to_f32();
                }
            }
            round_slice(nums.act, &mut b.h);
        }
        OpKind::Handoff | OpKind::TokenLoopback => {}
        OpKind::FinalNorm => MeshProgram::rms_norm(
            head.x_split,
            &head.along_column,
            nums,
            eps,
            &b.h,
            &head.norm,
            &mut b.x,
            &mut b.parts,
        ),
        OpKind::LmHead => {
            logits.clear();
            logits.resize(head.matrix.out_dim(), 0.0);
            tiled_gemv(&head.matrix, &b.x, logits, &head.along_column, nums.acts());
        }
        OpKind::Argmax => {
            // Each column's local best, then (value, index) pairs reduced along
            // the row toward its root.
            let vs = head.matrix.out_split;
            let lines = head.along_row.lines_needed(vs.used());
            let mut vals: Vec<f32> = vec![f32::NEG_INFINITY; lines];
            let mut idx: Vec<u32> = vec![u32::MAX; lines];
            for col in 0..vs.used() {
                let range = vs.range(col);
                let (i, v) = logits[range.clone()].iter().enumerate().fold(
                    (0, f32::NEG_INFINITY),
                    |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                );
                vals[col] = v;
                idx[col] = (range.start + i) as u32;
            }
            *best = Some(head.along_row.argmax(&mut vals, &mut idx, vs.used()).1);
        }
        // Steps of a layer's own program: listed so that a new kind of step
        // fails to compile here until it is placed.
        OpKind::RmsNorm
        | OpKind::QkvProj
        | OpKind::QkNorm
        | OpKind::Rope
        | OpKind::KvAppend
        | OpKind::AttnScores
        | OpKind::SoftmaxMax
        | OpKind::SoftmaxSum
        | OpKind::AttnValues
        | OpKind::OProj
        | OpKind::Residual
        | OpKind::GateUpProj
        | OpKind::SiluMul
        | OpKind::DownProj => bail!(
            "`{}` is a step of a layer, not around the layers",
            label.name()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_models::presets::lookup;

    /// A program charged for one tree and a mesh running another is refused.
    #[test]
    fn a_charged_tree_other_than_the_executed_one_is_refused() {
        let cfg = lookup("smollm2-135m").unwrap();
        let spec = wafer_core::spec::wse3();
        let (w, h) = (40usize, 30usize);
        let k2 = PlanOptions::default();
        let k1 = PlanOptions::with_reduce_k(1).unwrap();
        let program = decode_layer_program(&spec, &cfg, w as u32, h as u32, 64, &k2);
        let heads = HeadOrder::new(cfg.head_dim, cfg.num_key_value_heads, cfg.group_size());
        let attn = AttnGeometry::new(w, h, &heads, &k2).unwrap();
        let (col2, row2) = (
            line_schedule(h, &k2).unwrap(),
            line_schedule(w, &k2).unwrap(),
        );
        check_trees(&program.steps, &col2, &row2, Some(&attn)).unwrap();
        let col1 = line_schedule(h, &k1).unwrap();
        let err = check_trees(&program.steps, &col1, &row2, Some(&attn))
            .unwrap_err()
            .to_string();
        assert!(err.contains("the mesh runs"), "{err}");
        let attn1 = AttnGeometry::new(w, h, &heads, &k1).unwrap();
        assert!(check_trees(&program.steps, &col2, &row2, Some(&attn1)).is_err());
    }
}
