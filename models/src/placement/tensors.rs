//! Which tensors each placed item holds, and how one tensor is tiled over a region.
//!
//! Tiling rule (after WaferLLM's MeshGEMV): a matrix `y = W x` puts its input axis
//! along the region's columns and its output axis along the rows. With a region of
//! `W` columns and `H` rows, every PE stores a tile of `ceil(in/W) x ceil(out/H)`
//! elements; where a size does not divide, the last tiles are padded with zeros so
//! every PE runs the same code on the same tile shape. The embedding table is tiled
//! like the LM head (hidden size along columns, vocabulary along rows), so a tied
//! head reads the same tiles. Norm gains (a vector along the hidden size) are
//! stored once, on the region's row 0; biases (along a matrix's output) once, on
//! its column 0 — so every weight element sits on exactly one PE.

use crate::config::ModelConfig;
use serde::Serialize;

/// A piece of the model placed as a unit of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    Embedding,
    Layer(usize),
    /// The final norm and (unless tied to the embedding) the output projection.
    LmHead,
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Embedding => f.write_str("embedding"),
            Item::Layer(i) => write!(f, "layer {i}"),
            Item::LmHead => f.write_str("lm_head"),
        }
    }
}

/// How a tensor lies on a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorShape {
    /// `col_dim` along the region's columns (x), `row_dim` along its rows (y).
    Matrix { col_dim: u64, row_dim: u64 },
    /// A vector along the columns, stored on row 0 only (norm gains).
    ColVector(u64),
    /// A vector along the rows, stored on column 0 only (biases).
    RowVector(u64),
}

impl TensorShape {
    pub fn elements(self) -> u64 {
        match self {
            TensorShape::Matrix { col_dim, row_dim } => col_dim * row_dim,
            TensorShape::ColVector(n) | TensorShape::RowVector(n) => n,
        }
    }

    /// Elements PE `(x, y)` of a `w x h` region stores, padding included.
    pub fn stored_at(self, w: u64, h: u64, x: u64, y: u64) -> u64 {
        match self {
            TensorShape::Matrix { col_dim, row_dim } => col_dim.div_ceil(w) * row_dim.div_ceil(h),
            TensorShape::ColVector(n) => {
                if y == 0 {
                    n.div_ceil(w)
                } else {
                    0
                }
            }
            TensorShape::RowVector(n) => {
                if x == 0 {
                    n.div_ceil(h)
                } else {
                    0
                }
            }
        }
    }

    /// Real (unpadded) elements PE `(x, y)` of a `w x h` region holds.
    pub fn real_at(self, w: u64, h: u64, x: u64, y: u64) -> u64 {
        match self {
            TensorShape::Matrix { col_dim, row_dim } => {
                span(col_dim, w, x) * span(row_dim, h, y)
            }
            TensorShape::ColVector(n) => {
                if y == 0 {
                    span(n, w, x)
                } else {
                    0
                }
            }
            TensorShape::RowVector(n) => {
                if x == 0 {
                    span(n, h, y)
                } else {
                    0
                }
            }
        }
    }

    /// The half-open index ranges `(cols, rows)` of the tensor PE `(x, y)` holds;
    /// a vector's unused axis is `0..1`. Empty ranges mean the PE holds none of it.
    pub fn block_at(self, w: u64, h: u64, x: u64, y: u64) -> (Span, Span) {
        match self {
            TensorShape::Matrix { col_dim, row_dim } => {
                (block(col_dim, w, x), block(row_dim, h, y))
            }
            TensorShape::ColVector(n) => {
                if y == 0 {
                    (block(n, w, x), 0..1)
                } else {
                    (0..0, 0..0)
                }
            }
            TensorShape::RowVector(n) => {
                if x == 0 {
                    (0..1, block(n, h, y))
                } else {
                    (0..0, 0..0)
                }
            }
        }
    }
}

pub type Span = std::ops::Range<u64>;

/// Part `i` of `n` elements cut into `parts` blocks of `ceil(n/parts)`.
fn block(n: u64, parts: u64, i: u64) -> Span {
    let size = n.div_ceil(parts);
    let start = (i * size).min(n);
    start..((i + 1) * size).min(n)
}

fn span(n: u64, parts: u64, i: u64) -> u64 {
    let b = block(n, parts, i);
    b.end - b.start
}

/// One named weight tensor of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDesc {
    /// The Hugging Face name of the tensor.
    pub name: String,
    pub shape: TensorShape,
}

/// The weight tensors `item` stores. A tied LM head stores only the final norm: its
/// matrix is the embedding table, placed with the embedding on the same region.
pub fn item_tensors(model: &ModelConfig, item: Item) -> Vec<TensorDesc> {
    let mut v = Vec::new();
    visit_tensors(model, item, |name, shape| {
        let name = match item {
            Item::Layer(i) => format!("model.layers.{i}.{name}"),
            _ => name.to_string(),
        };
        v.push(TensorDesc { name, shape });
    });
    v
}

/// Calls `f` with the name (relative to the layer for layers) and shape of every
/// tensor `item` stores, without allocating: the budget search calls this often.
pub fn visit_tensors(model: &ModelConfig, item: Item, mut f: impl FnMut(&'static str, TensorShape)) {
    let d = model.hidden_size as u64;
    let q = model.q_dim() as u64;
    let kv = model.kv_dim() as u64;
    let ffn = model.intermediate_size as u64;
    let vocab = model.vocab_size as u64;
    let m = |col_dim, row_dim| TensorShape::Matrix { col_dim, row_dim };
    match item {
        Item::Embedding => f("model.embed_tokens.weight", m(d, vocab)),
        Item::LmHead => {
            f("model.norm.weight", TensorShape::ColVector(d));
            if !model.tie_word_embeddings {
                f("lm_head.weight", m(d, vocab));
            }
        }
        Item::Layer(_) => {
            f("input_layernorm.weight", TensorShape::ColVector(d));
            f("self_attn.q_proj.weight", m(d, q));
            f("self_attn.k_proj.weight", m(d, kv));
            f("self_attn.v_proj.weight", m(d, kv));
            f("self_attn.o_proj.weight", m(q, d));
            f("post_attention_layernorm.weight", TensorShape::ColVector(d));
            f("mlp.gate_proj.weight", m(d, ffn));
            f("mlp.up_proj.weight", m(d, ffn));
            f("mlp.down_proj.weight", m(ffn, d));
            if model.attention_bias {
                f("self_attn.q_proj.bias", TensorShape::RowVector(q));
                f("self_attn.k_proj.bias", TensorShape::RowVector(kv));
                f("self_attn.v_proj.bias", TensorShape::RowVector(kv));
            }
        }
    }
}

/// Every item of the model in pipeline order.
pub fn all_items(model: &ModelConfig) -> Vec<Item> {
    let mut v = Vec::with_capacity(model.num_hidden_layers + 2);
    v.push(Item::Embedding);
    v.extend((0..model.num_hidden_layers).map(Item::Layer));
    v.push(Item::LmHead);
    v
}
