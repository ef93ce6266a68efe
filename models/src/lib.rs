//! Transformer models for the wafer simulator: configs and shape presets, weight
//! files (safetensors, GGUF import), the tokenizer, the dense reference forward
//! pass, placement of a model onto the mesh, and its lowering to mesh programs.
//!
//! Architecture invariant: this crate and the CLI are the only places that read
//! files or the network; `core`, `kernels` and `sim` stay pure.

pub mod config;
pub mod convert;
pub mod draw;
pub mod engine;
pub mod family;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod layout;
pub mod lower;
pub mod mesh;
pub mod placement;
pub mod presets;
pub mod reference;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use config::{ModelConfig, RopeScaling};
pub use family::Family;
pub mod cost;
pub mod estimate;
