//! Bringing models in: the GGUF reader and dequantization (`gguf`), the GGUF to
//! Hugging Face converter (`convert`: `config.json`, `model.safetensors`,
//! `tokenizer.json`), and fetching the default model on first use (`fetch`).
//!
//! Invariants: every count and length read from a file is bounded before it is
//! allocated or multiplied; the converter writes only what a model family of
//! `wafer_models::family` describes, and refuses the rest naming the tensor or key;
//! an output directory is written whole or not at all.

pub mod convert;
pub mod fetch;
pub mod gguf;
