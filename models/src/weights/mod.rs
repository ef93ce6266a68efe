//! Model weights: memory-mapped safetensors files (single or sharded), the
//! matrix storage the CPU engines compute from (dense or ggml-quantized), and the one place that knows the
//! Hugging Face Llama tensor names.

pub mod llama;
pub mod matrix;
pub mod quant;
pub mod safetensors_files;

pub use llama::{LayerWeights, LlamaWeights};
pub use matrix::Matrix;
pub use quant::{QuantData, QuantType, SharedBytes};
pub use safetensors_files::{SafetensorsFiles, TensorView};
