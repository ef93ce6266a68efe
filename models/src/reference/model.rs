//! The reference model: Hugging Face `LlamaForCausalLM` semantics (RMSNorm,
//! RoPE with scaling, grouped-query attention with a KV cache, SwiGLU MLP, tied
//! or untied LM head), plus what the other families add (Qwen2's q/k/v biases,
//! Qwen3's per-head q/k RMSNorm before RoPE), f32 arithmetic at any weight
//! precision.
//!
//! Prefill runs the whole prompt as one batch (GEMMs); decode runs one token
//! (GEMVs) against the cache. Only the last position's logits are computed,
//! since generation needs nothing else.

use super::team::{self, Shared};
use super::{ops, rope};
use crate::config::ModelConfig;
use crate::engine::Engine;
use crate::weights::{LayerWeights, LlamaWeights, Matrix};
use anyhow::{bail, Result};
use ndarray::{s, Array2, ArrayView2, ShapeBuilder};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Query rows per attention block: bounds the score matrix at `block x context`.
const ATTN_QUERY_BLOCK: usize = 128;

/// Keys (after RoPE) and values of every position so far, one pair per layer,
/// each row-major `[position, kv_dim]`.
#[derive(Debug, Default, Clone)]
struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// Buffers the one-token decode step reuses, so a step allocates nothing but
/// the logits it returns (and the cache's amortised growth).
#[derive(Debug, Default)]
struct Scratch {
    h: Vec<f32>,
    /// Each thread's normed input (`threads x hidden`).
    x: Vec<f32>,
    /// Q, K and V of the token, concatenated (one fused GEMV).
    qkv: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    /// Gate and up, concatenated (one fused GEMV).
    gate_up: Vec<f32>,
    down: Vec<f32>,
    scores: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// Each thread's per-head norm scratch (`threads x head_dim`).
    normed: Vec<f32>,
    /// Each layer's key and value cache, shared with the team for one step.
    caches: Vec<(Shared, Shared)>,
    /// The step's operations, as chunks per operation (`team::run_ops`).
    op_chunks: Vec<usize>,
    /// Which normalisation each thread's `x` holds (see `decode_one`).
    normed_for: Vec<AtomicUsize>,
}

pub struct ReferenceModel {
    config: ModelConfig,
    weights: LlamaWeights,
    inv_freq: Vec<f32>,
    cache: KvCache,
    /// Positions already in the cache.
    position: usize,
    scratch: Scratch,
    /// Decode steps left to run on one thread (see [`SOLO_TOKENS`]).
    solo_tokens: u32,
}

impl ReferenceModel {
    pub fn new(config: ModelConfig, weights: LlamaWeights) -> ReferenceModel {
        let inv_freq = rope::inv_freq(&config);
        let layers = config.num_hidden_layers;
        ReferenceModel {
            config,
            weights,
            inv_freq,
            cache: KvCache {
                k: vec![Vec::new(); layers],
                v: vec![Vec::new(); layers],
            },
            position: 0,
            scratch: Scratch::default(),
            solo_tokens: 0,
        }
    }

    pub fn weights(&self) -> &LlamaWeights {
        &self.weights
    }

    pub fn position(&self) -> usize {
        self.position
    }

    /// Forgets the cache.
    pub fn reset(&mut self) {
        self.cache.k.iter_mut().for_each(Vec::clear);
        self.cache.v.iter_mut().for_each(Vec::clear);
        self.position = 0;
    }

    /// Keeps the first `len` cached positions (a length change: no copy).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.position {
            bail!(
                "cannot roll the cache back to {len} positions: it holds {}",
                self.position
            );
        }
        let kv_dim = self.config.kv_dim();
        for cache in self.cache.k.iter_mut().chain(self.cache.v.iter_mut()) {
            cache.truncate(len * kv_dim);
        }
        self.position = len;
        Ok(())
    }

    /// Runs `tokens` at the next positions, appending to the cache, and returns
    /// the logits of the last one.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let c = &self.config;
        if tokens.is_empty() {
            bail!("forward: no tokens to run");
        }
        let end = self.position + tokens.len();
        if end > c.max_position_embeddings {
            bail!(
                "{} tokens at position {} exceed the model's context of {} tokens (max_position_embeddings)",
                tokens.len(),
                self.position,
                c.max_position_embeddings
            );
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            bail!(
                "token id {t} is outside the vocabulary (vocab_size {})",
                c.vocab_size
            );
        }
        // Weights built by hand (not by the loader) may disagree with the family.
        for (l, layer) in self.weights.layers.iter().enumerate() {
            if (layer.q_norm.is_some() && layer.k_norm.is_some()) != c.qk_norm()
                || layer.q_norm.is_some() != layer.k_norm.is_some()
            {
                bail!(
                    "layer {l}: a {} model {} per-head q/k norm weights, but this layer has q_norm {} and k_norm {}",
                    c.family.spec().name,
                    if c.qk_norm() { "needs" } else { "has no" },
                    if layer.q_norm.is_some() { "present" } else { "absent" },
                    if layer.k_norm.is_some() { "present" } else { "absent" },
                );
            }
        }
        if let [token] = tokens {
            return Ok(self.decode_one(*token));
        }
        let (n, d) = (tokens.len(), c.hidden_size);
        let mut h = Array2::<f32>::zeros((n, d));
        for (mut row, &t) in h.rows_mut().into_iter().zip(tokens) {
            let dst = row.as_slice_mut().expect("contiguous row");
            self.weights
                .embed_tokens
                .rows_to_f32(t as usize, t as usize + 1, dst);
        }
        for (l, layer) in self.weights.layers.iter().enumerate() {
            let (k_cache, v_cache) = (&mut self.cache.k[l], &mut self.cache.v[l]);
            layer_forward(
                c,
                layer,
                &self.inv_freq,
                self.position,
                &mut h,
                k_cache,
                v_cache,
            );
        }
        self.position = end;
        let last = h.row(n - 1);
        let mut normed = vec![0.0; d];
        ops::rms_norm(
            last.as_slice().expect("contiguous"),
            &self.weights.norm,
            c.rms_norm_eps,
            &mut normed,
        );
        let head = self.weights.lm_head();
        let mut logits = vec![0.0; head.rows];
        ops::gemv(head, &normed, &mut logits);
        Ok(logits)
    }
}

/// The operations of one decoder layer in a decode step, in order.
const LAYER_OPS: usize = 5;
/// Tokens a decode runs on one thread after a step in which the team's
/// caller spent more than half its time waiting for the other threads (a
/// loaded machine took them away; see `team`).
const SOLO_TOKENS: u32 = 16;

impl ReferenceModel {
    /// One token at the next position (checked by `forward`): the same
    /// operations as the batched path, on reused buffers, run by a [`team`]
    /// of threads. Per layer five operations, each cut into one contiguous
    /// part per thread: Q/K/V by heads (each head's RoPE and cache row done
    /// with it), attention by query heads, the output projection, gate/up
    /// (with SiLU·mul) and down by output rows (the residual added with
    /// them); then the LM head by rows. (Finer chunks cost more than they
    /// balance: each claim moves cache lines between the cores.) A thread normalises the residual stream itself when
    /// it first needs it. Every value is computed by the same kernel whatever
    /// the number of threads.
    fn decode_one(&mut self, token: u32) -> Vec<f32> {
        let c = &self.config;
        let s = &mut self.scratch;
        let n = if self.solo_tokens > 0 {
            self.solo_tokens -= 1;
            1
        } else {
            rayon::current_num_threads().max(1)
        };
        let started = std::time::Instant::now();
        let (d, hd, pos) = (c.hidden_size, c.head_dim, self.position);
        let (q_dim, kv_dim, ffn) = (c.q_dim(), c.kv_dim(), c.intermediate_size);
        let (heads, kv_heads) = (c.num_attention_heads, c.num_key_value_heads);
        let (eps, group) = (c.rms_norm_eps, c.group_size());
        let positions = pos + 1;
        s.h.resize(d, 0.0);
        s.x.resize(n * d, 0.0);
        s.qkv.resize(q_dim + 2 * kv_dim, 0.0);
        s.attn.resize(q_dim, 0.0);
        s.o.resize(d, 0.0);
        s.gate_up.resize(2 * ffn, 0.0);
        s.down.resize(d, 0.0);
        s.cos.resize(hd / 2, 0.0);
        s.sin.resize(hd / 2, 0.0);
        s.normed.resize(n * hd, 0.0);
        s.scores.resize(heads * positions, 0.0);
        let t = token as usize;
        self.weights.embed_tokens.rows_to_f32(t, t + 1, &mut s.h);
        rope::cos_sin(&self.inv_freq, pos, &mut s.cos, &mut s.sin);
        // The cache grows by this position's row, which the Q/K/V chunks fill.
        s.caches.clear();
        s.caches.extend(
            self.cache
                .k
                .iter_mut()
                .zip(self.cache.v.iter_mut())
                .map(|(k, v)| {
                    k.resize(positions * kv_dim, 0.0);
                    v.resize(positions * kv_dim, 0.0);
                    (Shared::new(k), Shared::new(v))
                }),
        );
        let head = self.weights.lm_head();
        let mut logits = vec![0.0; head.rows];
        let [h, x, qkv, attn, o, gate_up, down, normed, scores, out] = [
            &mut s.h,
            &mut s.x,
            &mut s.qkv,
            &mut s.attn,
            &mut s.o,
            &mut s.gate_up,
            &mut s.down,
            &mut s.normed,
            &mut s.scores,
            &mut logits,
        ]
        .map(|b| Shared::new(b));
        let (cos, sin) = (&s.cos[..], &s.sin[..]);
        let weights = &self.weights;
        let layers = weights.layers.len();
        s.op_chunks.clear();
        s.op_chunks.resize(layers * LAYER_OPS + 1, n);
        // Which normalisation each thread's `x` holds: 2l (layer l's input
        // norm), 2l + 1 (its post-attention norm), 2L (the final norm).
        s.normed_for.resize_with(n, || AtomicUsize::new(0));
        s.normed_for
            .iter()
            .for_each(|a| a.store(usize::MAX, Ordering::Relaxed));
        let (caches, op_chunks, normed_for) = (&s.caches, &s.op_chunks, &s.normed_for);
        let add = |out: &mut [f32], b: Option<&[f32]>| {
            if let Some(b) = b {
                out.iter_mut().zip(b).for_each(|(o, b)| *o += b);
            }
        };
        // SAFETY (every `part`, `get` and `all` below): a chunk writes only its
        // own rows or heads of a buffer (and its thread's own slices of `x`
        // and `normed`), and reads what the operations before it wrote and
        // no chunk of its own operation writes (the residual `h` is written
        // only by the output and down projections, which read `attn` and
        // `gate_up`, and read only in the norms, which run in other operations).
        let waited = team::run_ops(n, op_chunks, |tid, k, ci| unsafe {
            let x = x.part(tid * d..(tid + 1) * d);
            let norm = |which: usize, gain: &[f32], x: &mut [f32]| {
                if normed_for[tid].swap(which, Ordering::Relaxed) != which {
                    ops::rms_norm(h.all(), gain, eps, x);
                }
            };
            let (l, op) = (k / LAYER_OPS, k % LAYER_OPS);
            if l == layers {
                norm(2 * layers, &weights.norm, x);
                let r = team::share(head.rows, ci, n);
                return ops::rows_dot(head, r.start, x, out.part(r));
            }
            let w = &weights.layers[l];
            let (k_cache, v_cache) = caches[l];
            if op == 0 {
                norm(2 * l, &w.input_layernorm, x);
            }
            match op {
                // Q/K/V, a head of one of them at a time.
                0 => team::share(heads + 2 * kv_heads, ci, n).for_each(|ci| {
                    let (m, bias, gain, i) = if ci < heads {
                        (&w.q_proj, &w.q_bias, &w.q_norm, ci)
                    } else if ci < heads + kv_heads {
                        (&w.k_proj, &w.k_bias, &w.k_norm, ci - heads)
                    } else {
                        (&w.v_proj, &w.v_bias, &None, ci - heads - kv_heads)
                    };
                    let row = qkv.part(ci * hd..(ci + 1) * hd);
                    ops::rows_dot(m, i * hd, x, row);
                    add(row, bias.as_deref().map(|b| &b[i * hd..(i + 1) * hd]));
                    if ci < heads + kv_heads {
                        if let Some(g) = gain {
                            let normed = normed.part(tid * hd..(tid + 1) * hd);
                            ops::rms_norm(row, g, eps, normed);
                            row.copy_from_slice(normed);
                        }
                        rope::apply(row, cos, sin);
                    }
                    let cache_row = pos * kv_dim + i * hd..pos * kv_dim + (i + 1) * hd;
                    if ci >= heads + kv_heads {
                        v_cache.part(cache_row).copy_from_slice(row);
                    } else if ci >= heads {
                        k_cache.part(cache_row).copy_from_slice(row);
                    }
                }),
                1 => team::share(heads, ci, n).for_each(|head| {
                    ops::attend_head(
                        head,
                        qkv.get(0..q_dim),
                        k_cache.all(),
                        v_cache.all(),
                        hd,
                        kv_dim,
                        group,
                        scores.part(head * positions..(head + 1) * positions),
                        attn.part(head * hd..(head + 1) * hd),
                    )
                }),
                2 => {
                    let r = team::share(d, ci, n);
                    let o = o.part(r.clone());
                    ops::rows_dot(&w.o_proj, r.start, attn.all(), o);
                    add(o, w.o_bias.as_deref().map(|b| &b[r.clone()]));
                    h.part(r).iter_mut().zip(&*o).for_each(|(h, o)| *h += o);
                }
                3 => {
                    norm(2 * l + 1, &w.post_attention_layernorm, x);
                    let r = team::share(ffn, ci, n);
                    let gate = gate_up.part(r.clone());
                    let up = gate_up.part(ffn + r.start..ffn + r.end);
                    ops::rows_dot(&w.gate_proj, r.start, x, gate);
                    ops::rows_dot(&w.up_proj, r.start, x, up);
                    ops::silu_mul(gate, up);
                }
                _ => {
                    let r = team::share(d, ci, n);
                    let down = down.part(r.clone());
                    ops::rows_dot(&w.down_proj, r.start, gate_up.get(0..ffn), down);
                    h.part(r).iter_mut().zip(&*down).for_each(|(h, o)| *h += o);
                }
            }
        });
        // The cache's rows may move when it next grows: keep no pointer to them.
        self.scratch.caches.clear();
        if n > 1 && waited > started.elapsed() / 2 {
            self.solo_tokens = SOLO_TOKENS;
        }
        self.position = positions;
        logits
    }
}

/// `out = x · wᵀ (+ bias)`: a GEMV for one row, a GEMM for a batch.
fn linear(w: &Matrix, bias: Option<&[f32]>, x: ArrayView2<f32>) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((x.nrows(), w.rows));
    if x.nrows() == 1 {
        let xs = x.as_slice().expect("contiguous input");
        ops::gemv(w, xs, out.as_slice_mut().expect("contiguous output"));
    } else {
        ops::gemm(w, x, out.view_mut());
    }
    if let Some(b) = bias {
        for mut row in out.rows_mut() {
            row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
        }
    }
    out
}

fn rms_norm_rows(x: &Array2<f32>, weight: &[f32], eps: f64) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros(x.raw_dim());
    out.as_slice_mut()
        .expect("contiguous")
        .par_chunks_mut(x.ncols())
        .zip(x.as_slice().expect("contiguous").par_chunks(x.ncols()))
        .for_each(|(o, r)| ops::rms_norm(r, weight, eps, o));
    out
}

/// One decoder layer over the `n` rows of `h` at positions `start..start + n`.
fn layer_forward(
    c: &ModelConfig,
    w: &LayerWeights,
    inv_freq: &[f32],
    start: usize,
    h: &mut Array2<f32>,
    k_cache: &mut Vec<f32>,
    v_cache: &mut Vec<f32>,
) {
    let hd = c.head_dim;
    let x = rms_norm_rows(h, &w.input_layernorm, c.rms_norm_eps);
    let mut q = linear(&w.q_proj, w.q_bias.as_deref(), x.view());
    let mut k = linear(&w.k_proj, w.k_bias.as_deref(), x.view());
    let v = linear(&w.v_proj, w.v_bias.as_deref(), x.view());

    // Qwen3: per-head RMSNorm of q and k (one gain of head_dim values shared by
    // every head), then RoPE on every query and key head of every row.
    let (q_norm, k_norm) = (w.q_norm.as_deref(), w.k_norm.as_deref());
    q.as_slice_mut()
        .expect("contiguous")
        .par_chunks_mut(c.q_dim())
        .zip(
            k.as_slice_mut()
                .expect("contiguous")
                .par_chunks_mut(c.kv_dim()),
        )
        .enumerate()
        .for_each(|(t, (qr, kr))| {
            let mut cos = vec![0.0; hd / 2];
            let mut sin = vec![0.0; hd / 2];
            rope::cos_sin(inv_freq, start + t, &mut cos, &mut sin);
            let mut normed = vec![0.0; hd];
            for (row, gain) in [(qr, q_norm), (kr, k_norm)] {
                for head in row.chunks_mut(hd) {
                    if let Some(g) = gain {
                        ops::rms_norm(head, g, c.rms_norm_eps, &mut normed);
                        head.copy_from_slice(&normed);
                    }
                    rope::apply(head, &cos, &sin);
                }
            }
        });
    k_cache.extend_from_slice(k.as_slice().expect("contiguous"));
    v_cache.extend_from_slice(v.as_slice().expect("contiguous"));

    let attn = attention(c, q.view(), k_cache, v_cache, start);
    let o = linear(&w.o_proj, w.o_bias.as_deref(), attn.view());
    *h += &o;

    let x = rms_norm_rows(h, &w.post_attention_layernorm, c.rms_norm_eps);
    let mut gate = linear(&w.gate_proj, None, x.view());
    let up = linear(&w.up_proj, None, x.view());
    gate.as_slice_mut()
        .expect("contiguous")
        .par_chunks_mut(c.intermediate_size)
        .zip(
            up.as_slice()
                .expect("contiguous")
                .par_chunks(c.intermediate_size),
        )
        .for_each(|(g, u)| ops::silu_mul(g, u));
    let down = linear(&w.down_proj, None, gate.view());
    *h += &down;
}

/// Causal grouped-query attention of `n` query rows (positions `start..start+n`)
/// over the `start + n` cached positions. Returns `[n, q_dim]`.
pub fn attention(
    c: &ModelConfig,
    q: ArrayView2<f32>,
    k_cache: &[f32],
    v_cache: &[f32],
    start: usize,
) -> Array2<f32> {
    let (n, hd, kv_dim) = (q.nrows(), c.head_dim, c.kv_dim());
    let total = start + n;
    let scale = 1.0 / (hd as f32).sqrt();
    let heads: Vec<Array2<f32>> = (0..c.num_attention_heads)
        .into_par_iter()
        .map(|head| {
            let g = head / c.group_size();
            // Keys and values of KV head g: `[total, hd]` views with row stride kv_dim.
            let keys = ArrayView2::from_shape((total, hd).strides((kv_dim, 1)), &k_cache[g * hd..])
                .expect("key view");
            let values =
                ArrayView2::from_shape((total, hd).strides((kv_dim, 1)), &v_cache[g * hd..])
                    .expect("value view");
            let qh = q.slice(s![.., head * hd..(head + 1) * hd]);
            let mut out = Array2::<f32>::zeros((n, hd));
            for b0 in (0..n).step_by(ATTN_QUERY_BLOCK) {
                let b1 = (b0 + ATTN_QUERY_BLOCK).min(n);
                // The last row of the block sees positions 0..start + b1.
                let visible = start + b1;
                let mut scores = qh
                    .slice(s![b0..b1, ..])
                    .dot(&keys.slice(s![..visible, ..]).t());
                for (i, mut row) in scores.rows_mut().into_iter().enumerate() {
                    let limit = start + b0 + i + 1;
                    let r = row.as_slice_mut().expect("contiguous scores");
                    r[..limit].iter_mut().for_each(|x| *x *= scale);
                    r[limit..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
                    ops::softmax(r);
                }
                let o = scores.dot(&values.slice(s![..visible, ..]));
                out.slice_mut(s![b0..b1, ..]).assign(&o);
            }
            out
        })
        .collect();
    let mut out = Array2::<f32>::zeros((n, c.q_dim()));
    for (head, o) in heads.iter().enumerate() {
        out.slice_mut(s![.., head * hd..(head + 1) * hd]).assign(o);
    }
    out
}

/// One sequence's cache and position, kept aside while another sequence runs
/// on the same weights (`crate::batch`).
#[derive(Debug, Default)]
pub struct SavedSequence {
    cache: KvCache,
    position: usize,
}

impl crate::batch::SequenceSwap for ReferenceModel {
    type Saved = SavedSequence;

    fn empty_sequence(&self) -> SavedSequence {
        let layers = self.config.num_hidden_layers;
        SavedSequence {
            cache: KvCache {
                k: vec![Vec::new(); layers],
                v: vec![Vec::new(); layers],
            },
            position: 0,
        }
    }

    fn swap_sequence(&mut self, saved: &mut SavedSequence) {
        std::mem::swap(&mut self.cache, &mut saved.cache);
        std::mem::swap(&mut self.position, &mut saved.position);
    }
}

impl Engine for ReferenceModel {
    fn name(&self) -> &str {
        "reference"
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.reset();
        self.forward(tokens)
    }

    fn decode(&mut self, token: u32) -> Result<Vec<f32>> {
        self.forward(&[token])
    }

    fn position(&self) -> usize {
        self.position
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        ReferenceModel::truncate(self, len)
    }
}
