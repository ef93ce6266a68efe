//! Shape presets of public models (no weights): enough to place and estimate them.
//!
//! Every value is copied from the model's public Hugging Face `config.json`; the
//! repository is named above each preset. Parameter counts are checked against the
//! published totals in the tests below.

use crate::config::{ModelConfig, RopeScaling};
use crate::family::Family;

/// Names of every preset, in the order `wafer models` lists them.
pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

/// The preset called `name` (case-insensitive), if there is one.
pub fn lookup(name: &str) -> Option<ModelConfig> {
    let name = name.to_ascii_lowercase();
    PRESETS.iter().find(|p| p.name == name).map(|p| p.config())
}

/// The Hugging Face repository a preset's shape was copied from.
pub fn source_repo(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    PRESETS.iter().find(|p| p.name == name).map(|p| p.repo)
}

struct Preset {
    name: &'static str,
    repo: &'static str,
    family: Family,
    vocab: usize,
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    /// `Some` only where `config.json` gives `head_dim` explicitly.
    head_dim: Option<usize>,
    max_pos: usize,
    eps: f64,
    theta: f64,
    scaling: Scaling,
    tie: bool,
    bias: bool,
    bos: Option<u32>,
    eos: &'static [u32],
}

#[derive(Clone, Copy)]
enum Scaling {
    None,
    /// Llama 3.1/3.2 `rope_type = "llama3"`: factor, low, high, original max positions.
    Llama3(f64, f64, f64, usize),
}

impl Preset {
    fn config(&self) -> ModelConfig {
        ModelConfig {
            model_type: self.family.spec().name.into(),
            family: self.family,
            vocab_size: self.vocab,
            hidden_size: self.hidden,
            intermediate_size: self.ffn,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: self.kv_heads,
            head_dim: self.head_dim.unwrap_or(self.hidden / self.heads),
            max_position_embeddings: self.max_pos,
            rms_norm_eps: self.eps,
            rope_theta: self.theta,
            rope_scaling: match self.scaling {
                Scaling::None => RopeScaling::Default,
                Scaling::Llama3(factor, low, high, orig) => RopeScaling::Llama3 {
                    factor,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: orig,
                },
            },
            tie_word_embeddings: self.tie,
            attention_bias: self.bias,
            bos_token_id: self.bos,
            eos_token_ids: self.eos.to_vec(),
        }
    }
}

const LLAMA31_EOS: &[u32] = &[128001, 128008, 128009];

const PRESETS: &[Preset] = &[
    // meta-llama/Llama-3.2-1B
    Preset {
        name: "llama-3.2-1b",
        repo: "meta-llama/Llama-3.2-1B",
        family: Family::Llama,
        vocab: 128256,
        hidden: 2048,
        ffn: 8192,
        layers: 16,
        heads: 32,
        kv_heads: 8,
        head_dim: Some(64),
        max_pos: 131072,
        eps: 1e-5,
        theta: 500000.0,
        scaling: Scaling::Llama3(32.0, 1.0, 4.0, 8192),
        tie: true,
        bias: false,
        bos: Some(128000),
        eos: &[128001],
    },
    // meta-llama/Llama-3.2-3B
    Preset {
        name: "llama-3.2-3b",
        repo: "meta-llama/Llama-3.2-3B",
        family: Family::Llama,
        vocab: 128256,
        hidden: 3072,
        ffn: 8192,
        layers: 28,
        heads: 24,
        kv_heads: 8,
        head_dim: Some(128),
        max_pos: 131072,
        eps: 1e-5,
        theta: 500000.0,
        scaling: Scaling::Llama3(32.0, 1.0, 4.0, 8192),
        tie: true,
        bias: false,
        bos: Some(128000),
        eos: &[128001],
    },
    // meta-llama/Meta-Llama-3-8B
    Preset {
        name: "llama-3-8b",
        repo: "meta-llama/Meta-Llama-3-8B",
        family: Family::Llama,
        vocab: 128256,
        hidden: 4096,
        ffn: 14336,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        head_dim: None,
        max_pos: 8192,
        eps: 1e-5,
        theta: 500000.0,
        scaling: Scaling::None,
        tie: false,
        bias: false,
        bos: Some(128000),
        eos: &[128001],
    },
    // meta-llama/Llama-3.1-8B
    Preset {
        name: "llama-3.1-8b",
        repo: "meta-llama/Llama-3.1-8B",
        family: Family::Llama,
        vocab: 128256,
        hidden: 4096,
        ffn: 14336,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        head_dim: None,
        max_pos: 131072,
        eps: 1e-5,
        theta: 500000.0,
        scaling: Scaling::Llama3(8.0, 1.0, 4.0, 8192),
        tie: false,
        bias: false,
        bos: Some(128000),
        eos: LLAMA31_EOS,
    },
    // meta-llama/Llama-3.1-70B
    Preset {
        name: "llama-3.1-70b",
        repo: "meta-llama/Llama-3.1-70B",
        family: Family::Llama,
        vocab: 128256,
        hidden: 8192,
        ffn: 28672,
        layers: 80,
        heads: 64,
        kv_heads: 8,
        head_dim: None,
        max_pos: 131072,
        eps: 1e-5,
        theta: 500000.0,
        scaling: Scaling::Llama3(8.0, 1.0, 4.0, 8192),
        tie: false,
        bias: false,
        bos: Some(128000),
        eos: LLAMA31_EOS,
    },
    // meta-llama/Llama-3.1-405B
    Preset {
        name: "llama-3.1-405b",
        repo: "meta-llama/Llama-3.1-405B",
        family: Family::Llama,
        vocab: 128256,
        hidden: 16384,
        ffn: 53248,
        layers: 126,
        heads: 128,
        kv_heads: 8,
        head_dim: None,
        max_pos: 131072,
        eps: 1e-5,
        theta: 500000.0,
        scaling: Scaling::Llama3(8.0, 1.0, 4.0, 8192),
        tie: false,
        bias: false,
        bos: Some(128000),
        eos: LLAMA31_EOS,
    },
    // meta-llama/Llama-2-13b-hf
    Preset {
        name: "llama-2-13b",
        repo: "meta-llama/Llama-2-13b-hf",
        family: Family::Llama,
        vocab: 32000,
        hidden: 5120,
        ffn: 13824,
        layers: 40,
        heads: 40,
        kv_heads: 40,
        head_dim: None,
        max_pos: 4096,
        eps: 1e-5,
        theta: 10000.0,
        scaling: Scaling::None,
        tie: false,
        bias: false,
        bos: Some(1),
        eos: &[2],
    },
    // codellama/CodeLlama-34b-hf
    Preset {
        name: "codellama-34b",
        repo: "codellama/CodeLlama-34b-hf",
        family: Family::Llama,
        vocab: 32000,
        hidden: 8192,
        ffn: 22016,
        layers: 48,
        heads: 64,
        kv_heads: 8,
        head_dim: None,
        max_pos: 16384,
        eps: 1e-5,
        theta: 1_000_000.0,
        scaling: Scaling::None,
        tie: false,
        bias: false,
        bos: Some(1),
        eos: &[2],
    },
    // Qwen/Qwen2-72B-Instruct (Qwen2 has q/k/v biases; the config does not list them)
    Preset {
        name: "qwen2-72b",
        repo: "Qwen/Qwen2-72B-Instruct",
        family: Family::Qwen2,
        vocab: 152064,
        hidden: 8192,
        ffn: 29568,
        layers: 80,
        heads: 64,
        kv_heads: 8,
        head_dim: None,
        max_pos: 32768,
        eps: 1e-6,
        theta: 1_000_000.0,
        scaling: Scaling::None,
        tie: false,
        bias: true,
        bos: Some(151643),
        eos: &[151645],
    },
    // Qwen/Qwen3-32B (per-head q_norm/k_norm, 2 x 128 per layer, come from the family table)
    Preset {
        name: "qwen3-32b",
        repo: "Qwen/Qwen3-32B",
        family: Family::Qwen3,
        vocab: 151936,
        hidden: 5120,
        ffn: 25600,
        layers: 64,
        heads: 64,
        kv_heads: 8,
        head_dim: Some(128),
        max_pos: 40960,
        eps: 1e-6,
        theta: 1_000_000.0,
        scaling: Scaling::None,
        tie: false,
        bias: false,
        bos: Some(151643),
        eos: &[151645],
    },
    // HuggingFaceTB/SmolLM2-135M
    Preset {
        name: "smollm2-135m",
        repo: "HuggingFaceTB/SmolLM2-135M",
        family: Family::Llama,
        vocab: 49152,
        hidden: 576,
        ffn: 1536,
        layers: 30,
        heads: 9,
        kv_heads: 3,
        head_dim: None,
        max_pos: 8192,
        eps: 1e-5,
        theta: 100000.0,
        scaling: Scaling::None,
        tie: true,
        bias: false,
        bos: Some(1),
        eos: &[2],
    },
    // HuggingFaceTB/SmolLM2-1.7B
    Preset {
        name: "smollm2-1.7b",
        repo: "HuggingFaceTB/SmolLM2-1.7B",
        family: Family::Llama,
        vocab: 49152,
        hidden: 2048,
        ffn: 8192,
        layers: 24,
        heads: 32,
        kv_heads: 32,
        head_dim: None,
        max_pos: 8192,
        eps: 1e-5,
        theta: 130000.0,
        scaling: Scaling::None,
        tie: true,
        bias: false,
        bos: Some(1),
        eos: &[2],
    },
    // mistralai/Mistral-7B-v0.3 (v0.3 has no sliding window, so the full KV cache is kept)
    Preset {
        name: "mistral-7b",
        repo: "mistralai/Mistral-7B-v0.3",
        family: Family::Mistral,
        vocab: 32768,
        hidden: 4096,
        ffn: 14336,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        head_dim: None,
        max_pos: 32768,
        eps: 1e-5,
        theta: 1_000_000.0,
        scaling: Scaling::None,
        tie: false,
        bias: false,
        bos: Some(1),
        eos: &[2],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Published parameter totals (model cards / safetensors index totals / 2 bytes).
    #[test]
    fn parameter_counts_match_the_published_totals() {
        let check = |name: &str, expected: u64| {
            let c = lookup(name).unwrap_or_else(|| panic!("no preset {name}"));
            c.validate().unwrap();
            assert_eq!(c.param_count(), expected, "{name}");
        };
        check("llama-3.1-8b", 8_030_261_248);
        check("llama-3-8b", 8_030_261_248);
        check("llama-3.1-70b", 70_553_706_496);
        check("llama-3.1-405b", 405_853_388_800);
        check("llama-3.2-1b", 1_235_814_400);
        check("llama-3.2-3b", 3_212_749_824);
        check("llama-2-13b", 13_015_864_320);
        check("codellama-34b", 33_743_970_304);
        check("qwen2-72b", 72_706_203_648);
        check("qwen3-32b", 32_762_123_264);
        check("smollm2-135m", 134_515_008);
        check("smollm2-1.7b", 1_711_376_384);
        check("mistral-7b", 7_248_023_552);
    }

    #[test]
    fn every_listed_name_resolves_and_unknown_names_do_not() {
        assert_eq!(names().len(), 13);
        for n in names() {
            assert!(lookup(n).is_some(), "{n}");
            assert!(source_repo(n).is_some(), "{n}");
        }
        assert_eq!(lookup("LLAMA-3.1-8B").unwrap().num_hidden_layers, 32);
        assert!(lookup("llama-9").is_none());
    }
}
