//! Transformer models as data and as the ground truth: the model families
//! (`family`: which tensors and ops each has), configs and shape presets, weight
//! files (memory-mapped safetensors), the tokenizer and chat template, sampling,
//! the generation loop shared by every engine (`Engine`), its batch of several
//! sequences over one model (`batch`) and its speculative
//! variant (`speculate`: drafts and greedy acceptance), and the dense reference
//! forward pass every other engine is tested against.
//!
//! Invariants: a config or checkpoint that no family describes is refused naming
//! the field or tensor; this crate knows nothing of the wafer (placement, lowering
//! and the mesh live in `wafer-lower` and `wafer-mesh`).

pub mod batch;
pub mod config;
pub mod engine;
pub mod family;
pub mod generate;
pub mod presets;
pub mod reference;
pub mod sampling;
pub mod speculate;
pub mod tokenizer;
pub mod weights;

pub use config::{ModelConfig, RopeScaling};
pub use family::Family;
