//! The units placement deals with (the embedding, each layer, the LM head) and
//! the tensors each holds. How a tensor lies on a region is the model's one
//! tiling ([`crate`]), not decided here.

use super::budget::Sizes;
use crate::tiling::{final_norm_tiling, table_tiling, LayerTiling};
use serde::Serialize;
use wafer_models::config::ModelConfig;
use wafer_sim::tiling::Tile;

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

/// Every tensor `item` stores on a `w x h` region, and how it lies there (the
/// model's one tiling, [`crate`]). A tied LM head stores only the final
/// norm: its matrix is the embedding table, placed with the embedding.
pub fn item_tiles(model: &ModelConfig, sizes: &Sizes, item: Item, w: usize, h: usize) -> Vec<Tile> {
    let table = |name: &str| Tile::Matrix {
        name: name.into(),
        tiling: table_tiling(model, sizes.weight_dtype, w, h),
    };
    match item {
        Item::Embedding => vec![table("model.embed_tokens.weight")],
        Item::LmHead => {
            let mut v = vec![Tile::Vector {
                name: "model.norm.weight".into(),
                tiling: final_norm_tiling(model, sizes.weight_dtype, h),
            }];
            if !model.tie_word_embeddings {
                v.push(table("lm_head.weight"));
            }
            v
        }
        Item::Layer(i) => LayerTiling::new(model, sizes.weight_dtype, sizes.kv_dtype, w, h)
            .tiles
            .into_iter()
            .map(|t| match t {
                Tile::Matrix { name, tiling } => Tile::Matrix {
                    name: format!("model.layers.{i}.{name}"),
                    tiling,
                },
                Tile::Vector { name, tiling } => Tile::Vector {
                    name: format!("model.layers.{i}.{name}"),
                    tiling,
                },
            })
            .collect(),
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
