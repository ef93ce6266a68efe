//! Model families as data: one table per supported family (Llama, Mistral,
//! Qwen2, Qwen3) naming the `config.json` identities it accepts, the GGUF
//! architecture it maps to, every tensor of a decoder layer (Hugging Face name,
//! GGUF name, shape as a function of the config, role, when it is present) and
//! the forward-pass differences (biases, per-head q/k RMSNorm).
//!
//! The config reader resolves a family here, the safetensors loader and the GGUF
//! converter read their tensor lists from here, and placement or a lowering can
//! iterate the same list through [`layer_tensors`] and [`model_tensors`]. SmolLM2
//! is a Llama (its files say `model_type: "llama"`).

use crate::config::ModelConfig;
use serde::{Deserialize, Serialize};

/// A supported model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Llama 2/3.x (incl. Llama 3.1 RoPE scaling), SmolLM2, CodeLlama.
    #[default]
    Llama,
    /// Mistral: Llama layers, no biases, optional sliding-window attention.
    Mistral,
    /// Qwen2/Qwen2.5: always q/k/v biases (no o_proj bias).
    Qwen2,
    /// Qwen3: per-head RMSNorm on q and k before RoPE, optional biases.
    Qwen3,
}

/// One of the sizes a tensor's shape is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// `hidden_size`.
    Hidden,
    /// `num_attention_heads * head_dim`.
    QDim,
    /// `num_key_value_heads * head_dim`.
    KvDim,
    /// `intermediate_size`.
    Ffn,
    /// `head_dim`.
    HeadDim,
    /// `vocab_size`.
    Vocab,
}

impl Dim {
    pub fn size(self, c: &ModelConfig) -> usize {
        match self {
            Dim::Hidden => c.hidden_size,
            Dim::QDim => c.q_dim(),
            Dim::KvDim => c.kv_dim(),
            Dim::Ffn => c.intermediate_size,
            Dim::HeadDim => c.head_dim,
            Dim::Vocab => c.vocab_size,
        }
    }
}

/// A tensor's shape in Hugging Face (row-major, `[out_features, in_features]`) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Vector(Dim),
    /// `[rows, cols]`.
    Matrix(Dim, Dim),
}

impl Shape {
    pub fn dims(self, c: &ModelConfig) -> Vec<usize> {
        match self {
            Shape::Vector(d) => vec![d.size(c)],
            Shape::Matrix(r, k) => vec![r.size(c), k.size(c)],
        }
    }

    pub fn elements(self, c: &ModelConfig) -> u64 {
        self.dims(c).iter().map(|&d| d as u64).product()
    }
}

/// What a tensor is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A linear layer's weight (or the embedding / LM head).
    Matrix,
    /// An RMSNorm gain over the hidden dimension.
    NormGain,
    /// An RMSNorm gain of `head_dim` values shared by every head (Qwen3 q/k norm).
    HeadNormGain,
    /// A linear layer's bias.
    Bias,
}

/// When a tensor is part of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Always required.
    Always,
    /// Required when the config's `attention_bias` is true.
    AttentionBias,
    /// Allowed (and used) when `attention_bias` is true, but not required:
    /// Llama's o_proj bias, which converted checkpoints often lack.
    AttentionBiasOptional,
    /// Required when the LM head is not tied to the embedding.
    Untied,
}

impl Presence {
    /// Whether the tensor must be present for `c`.
    pub fn required(self, c: &ModelConfig) -> bool {
        match self {
            Presence::Always => true,
            Presence::AttentionBias => c.attention_bias,
            Presence::AttentionBiasOptional => false,
            Presence::Untied => !c.tie_word_embeddings,
        }
    }

    /// Whether the tensor may be present (and is then used) for `c`.
    pub fn allowed(self, c: &ModelConfig) -> bool {
        match self {
            Presence::AttentionBiasOptional => c.attention_bias,
            other => other.required(c),
        }
    }
}

/// Whose heads a Q/K tensor's rows are grouped into (llama.cpp permutes the rows
/// within each head of Q and K for the `llama` GGUF architecture).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heads {
    Query,
    KeyValue,
}

/// Which per-layer tensor a [`TensorSpec`] is: the loader fills the matching
/// field of `LayerWeights`, a lowering can dispatch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    InputNorm,
    QProj,
    KProj,
    VProj,
    OProj,
    QBias,
    KBias,
    VBias,
    OBias,
    QNorm,
    KNorm,
    PostAttentionNorm,
    GateProj,
    UpProj,
    DownProj,
    /// Model-level: token embedding.
    Embedding,
    /// Model-level: final RMSNorm.
    FinalNorm,
    /// Model-level: untied LM head.
    LmHead,
}

/// One tensor of the family's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorSpec {
    pub slot: Slot,
    /// Hugging Face name; per-layer names are relative to `model.layers.{i}.`.
    pub hf: &'static str,
    /// GGUF (llama.cpp) name; per-layer names are relative to `blk.{i}.`.
    pub gguf: &'static str,
    pub shape: Shape,
    pub role: Role,
    pub presence: Presence,
    /// `Some` for the Q/K weights and biases whose rows are grouped by head.
    pub heads: Option<Heads>,
}

impl TensorSpec {
    /// The full Hugging Face name in layer `layer` (model-level tensors ignore it).
    pub fn hf_name(&self, layer: usize) -> String {
        if is_layer_slot(self.slot) {
            format!("model.layers.{layer}.{}", self.hf)
        } else {
            self.hf.to_string()
        }
    }

    /// The full GGUF name in layer `layer` (model-level tensors ignore it).
    pub fn gguf_name(&self, layer: usize) -> String {
        if is_layer_slot(self.slot) {
            format!("blk.{layer}.{}", self.gguf)
        } else {
            self.gguf.to_string()
        }
    }
}

fn is_layer_slot(s: Slot) -> bool {
    !matches!(s, Slot::Embedding | Slot::FinalNorm | Slot::LmHead)
}

/// How a family treats `config.json`'s `attention_bias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasRule {
    /// Read from `attention_bias` (default false): Llama, Qwen3.
    FromConfig,
    /// q/k/v always have biases; `attention_bias: false` contradicts the family (Qwen2).
    Always,
    /// Never any bias; `attention_bias: true` contradicts the family (Mistral).
    Never,
}

/// How a family decides whether `sliding_window` is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowRule {
    /// The family has no sliding window: the field is not read (Llama).
    None,
    /// A numeric `sliding_window` applies (Mistral).
    Field,
    /// `sliding_window` applies only with `use_sliding_window: true`, to layers
    /// from `max_window_layers` on (Qwen2, Qwen3).
    FieldIfEnabled,
}

/// Everything that distinguishes one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilySpec {
    pub family: Family,
    /// The `model_type` written by `ModelConfig` for this family.
    pub name: &'static str,
    /// `config.json` `model_type` values that select this family.
    pub model_types: &'static [&'static str],
    /// `config.json` `architectures` entries allowed for this family.
    pub architectures: &'static [&'static str],
    /// `general.architecture` values of GGUF files in this family's layout
    /// (llama.cpp writes Mistral as `llama`, so Mistral has none of its own).
    pub gguf_architectures: &'static [&'static str],
    /// llama.cpp permuted the rows of each Q/K head to interleaved RoPE pairs.
    pub gguf_permutes_qk: bool,
    pub attention_bias: BiasRule,
    pub sliding_window: WindowRule,
    /// Per-head RMSNorm of q and k after the projection, before RoPE.
    pub qk_norm: bool,
    /// Every per-layer tensor.
    pub layer_tensors: &'static [TensorSpec],
}

const fn t(
    slot: Slot,
    hf: &'static str,
    gguf: &'static str,
    shape: Shape,
    role: Role,
    presence: Presence,
    heads: Option<Heads>,
) -> TensorSpec {
    TensorSpec {
        slot,
        hf,
        gguf,
        shape,
        role,
        presence,
        heads,
    }
}

use Dim::{Ffn, Hidden, KvDim, QDim, Vocab};
use Presence::{Always, AttentionBias, AttentionBiasOptional};

const INPUT_NORM: TensorSpec = t(
    Slot::InputNorm,
    "input_layernorm.weight",
    "attn_norm.weight",
    Shape::Vector(Hidden),
    Role::NormGain,
    Always,
    None,
);
const Q_PROJ: TensorSpec = t(
    Slot::QProj,
    "self_attn.q_proj.weight",
    "attn_q.weight",
    Shape::Matrix(QDim, Hidden),
    Role::Matrix,
    Always,
    Some(Heads::Query),
);
const K_PROJ: TensorSpec = t(
    Slot::KProj,
    "self_attn.k_proj.weight",
    "attn_k.weight",
    Shape::Matrix(KvDim, Hidden),
    Role::Matrix,
    Always,
    Some(Heads::KeyValue),
);
const V_PROJ: TensorSpec = t(
    Slot::VProj,
    "self_attn.v_proj.weight",
    "attn_v.weight",
    Shape::Matrix(KvDim, Hidden),
    Role::Matrix,
    Always,
    None,
);
const O_PROJ: TensorSpec = t(
    Slot::OProj,
    "self_attn.o_proj.weight",
    "attn_output.weight",
    Shape::Matrix(Hidden, QDim),
    Role::Matrix,
    Always,
    None,
);
const Q_BIAS: TensorSpec = t(
    Slot::QBias,
    "self_attn.q_proj.bias",
    "attn_q.bias",
    Shape::Vector(QDim),
    Role::Bias,
    AttentionBias,
    Some(Heads::Query),
);
const K_BIAS: TensorSpec = t(
    Slot::KBias,
    "self_attn.k_proj.bias",
    "attn_k.bias",
    Shape::Vector(KvDim),
    Role::Bias,
    AttentionBias,
    Some(Heads::KeyValue),
);
const V_BIAS: TensorSpec = t(
    Slot::VBias,
    "self_attn.v_proj.bias",
    "attn_v.bias",
    Shape::Vector(KvDim),
    Role::Bias,
    AttentionBias,
    None,
);
const O_BIAS: TensorSpec = t(
    Slot::OBias,
    "self_attn.o_proj.bias",
    "attn_output.bias",
    Shape::Vector(Hidden),
    Role::Bias,
    AttentionBiasOptional,
    None,
);
const Q_NORM: TensorSpec = t(
    Slot::QNorm,
    "self_attn.q_norm.weight",
    "attn_q_norm.weight",
    Shape::Vector(Dim::HeadDim),
    Role::HeadNormGain,
    Always,
    None,
);
const K_NORM: TensorSpec = t(
    Slot::KNorm,
    "self_attn.k_norm.weight",
    "attn_k_norm.weight",
    Shape::Vector(Dim::HeadDim),
    Role::HeadNormGain,
    Always,
    None,
);
const POST_NORM: TensorSpec = t(
    Slot::PostAttentionNorm,
    "post_attention_layernorm.weight",
    "ffn_norm.weight",
    Shape::Vector(Hidden),
    Role::NormGain,
    Always,
    None,
);
const GATE: TensorSpec = t(
    Slot::GateProj,
    "mlp.gate_proj.weight",
    "ffn_gate.weight",
    Shape::Matrix(Ffn, Hidden),
    Role::Matrix,
    Always,
    None,
);
const UP: TensorSpec = t(
    Slot::UpProj,
    "mlp.up_proj.weight",
    "ffn_up.weight",
    Shape::Matrix(Ffn, Hidden),
    Role::Matrix,
    Always,
    None,
);
const DOWN: TensorSpec = t(
    Slot::DownProj,
    "mlp.down_proj.weight",
    "ffn_down.weight",
    Shape::Matrix(Hidden, Ffn),
    Role::Matrix,
    Always,
    None,
);

/// Llama layers: attention_bias adds q/k/v biases (and allows an o_proj bias).
const LLAMA_LAYER: &[TensorSpec] = &[
    INPUT_NORM, Q_PROJ, K_PROJ, V_PROJ, O_PROJ, Q_BIAS, K_BIAS, V_BIAS, O_BIAS, POST_NORM, GATE,
    UP, DOWN,
];
/// Mistral layers: no biases at all.
const MISTRAL_LAYER: &[TensorSpec] = &[
    INPUT_NORM, Q_PROJ, K_PROJ, V_PROJ, O_PROJ, POST_NORM, GATE, UP, DOWN,
];
/// Qwen2 layers: q/k/v biases (the config always has `attention_bias`), no o_proj bias.
const QWEN2_LAYER: &[TensorSpec] = &[
    INPUT_NORM, Q_PROJ, K_PROJ, V_PROJ, O_PROJ, Q_BIAS, K_BIAS, V_BIAS, POST_NORM, GATE, UP, DOWN,
];
/// Qwen3 layers: Llama's plus per-head q/k RMSNorm gains.
const QWEN3_LAYER: &[TensorSpec] = &[
    INPUT_NORM, Q_PROJ, K_PROJ, V_PROJ, O_PROJ, Q_BIAS, K_BIAS, V_BIAS, O_BIAS, Q_NORM, K_NORM,
    POST_NORM, GATE, UP, DOWN,
];

/// Tensors outside the layers, the same for every family.
pub const MODEL_TENSORS: &[TensorSpec] = &[
    t(
        Slot::Embedding,
        "model.embed_tokens.weight",
        "token_embd.weight",
        Shape::Matrix(Vocab, Hidden),
        Role::Matrix,
        Always,
        None,
    ),
    t(
        Slot::FinalNorm,
        "model.norm.weight",
        "output_norm.weight",
        Shape::Vector(Hidden),
        Role::NormGain,
        Always,
        None,
    ),
    t(
        Slot::LmHead,
        "lm_head.weight",
        "output.weight",
        Shape::Matrix(Vocab, Hidden),
        Role::Matrix,
        Presence::Untied,
        None,
    ),
];

/// Per-layer buffers some checkpoints carry that hold nothing the config does
/// not already say (older Llama exports store RoPE's inverse frequencies).
pub const IGNORED_LAYER_TENSORS: &[&str] = &["self_attn.rotary_emb.inv_freq"];

/// The family table.
pub const FAMILIES: &[FamilySpec] = &[
    FamilySpec {
        family: Family::Llama,
        name: "llama",
        model_types: &["llama"],
        architectures: &["LlamaForCausalLM"],
        gguf_architectures: &["llama"],
        gguf_permutes_qk: true,
        attention_bias: BiasRule::FromConfig,
        sliding_window: WindowRule::None,
        qk_norm: false,
        layer_tensors: LLAMA_LAYER,
    },
    FamilySpec {
        family: Family::Mistral,
        name: "mistral",
        model_types: &["mistral"],
        architectures: &["MistralForCausalLM"],
        gguf_architectures: &[],
        gguf_permutes_qk: true,
        attention_bias: BiasRule::Never,
        sliding_window: WindowRule::Field,
        qk_norm: false,
        layer_tensors: MISTRAL_LAYER,
    },
    FamilySpec {
        family: Family::Qwen2,
        name: "qwen2",
        model_types: &["qwen2"],
        architectures: &["Qwen2ForCausalLM"],
        gguf_architectures: &["qwen2"],
        gguf_permutes_qk: false,
        attention_bias: BiasRule::Always,
        sliding_window: WindowRule::FieldIfEnabled,
        qk_norm: false,
        layer_tensors: QWEN2_LAYER,
    },
    FamilySpec {
        family: Family::Qwen3,
        name: "qwen3",
        model_types: &["qwen3"],
        architectures: &["Qwen3ForCausalLM"],
        gguf_architectures: &["qwen3"],
        gguf_permutes_qk: false,
        attention_bias: BiasRule::FromConfig,
        sliding_window: WindowRule::FieldIfEnabled,
        qk_norm: true,
        layer_tensors: QWEN3_LAYER,
    },
];

impl Family {
    /// This family's row of the table.
    pub fn spec(self) -> &'static FamilySpec {
        FAMILIES
            .iter()
            .find(|f| f.family == self)
            .unwrap_or(&FAMILIES[0])
    }

    /// The family whose `model_types` include `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        FAMILIES
            .iter()
            .find(|f| f.model_types.contains(&model_type))
            .map(|f| f.family)
    }

    /// The family whose `architectures` include `arch`.
    pub fn from_architecture(arch: &str) -> Option<Family> {
        FAMILIES
            .iter()
            .find(|f| f.architectures.contains(&arch))
            .map(|f| f.family)
    }

    /// The family a GGUF `general.architecture` value stands for.
    pub fn from_gguf_architecture(arch: &str) -> Option<Family> {
        FAMILIES
            .iter()
            .find(|f| f.gguf_architectures.contains(&arch))
            .map(|f| f.family)
    }
}

/// Every accepted `model_type`, for error messages.
pub fn known_model_types() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect()
}

/// Every accepted `architectures` entry, for error messages.
pub fn known_architectures() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.architectures.iter().copied())
        .collect()
}

/// Every supported GGUF `general.architecture`, for error messages.
pub fn known_gguf_architectures() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.gguf_architectures.iter().copied())
        .collect()
}

/// The per-layer tensors `c`'s checkpoint may hold (required and optional),
/// in the table's order. Use [`Presence::required`] to tell them apart.
pub fn layer_tensors(c: &ModelConfig) -> impl Iterator<Item = &'static TensorSpec> + '_ {
    c.family
        .spec()
        .layer_tensors
        .iter()
        .filter(move |t| t.presence.allowed(c))
}

/// The model-level tensors (embedding, final norm, untied LM head) of `c`.
pub fn model_tensors(c: &ModelConfig) -> impl Iterator<Item = &'static TensorSpec> + '_ {
    MODEL_TENSORS.iter().filter(move |t| t.presence.allowed(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_type_architecture_and_gguf_name_belongs_to_one_family() {
        for list in [
            known_model_types(),
            known_architectures(),
            known_gguf_architectures(),
        ] {
            let mut seen = std::collections::HashSet::new();
            for n in list {
                assert!(seen.insert(n), "`{n}` is listed by two families");
            }
        }
        for f in FAMILIES {
            assert_eq!(f.family.spec().name, f.name);
            assert_eq!(Family::from_model_type(f.name), Some(f.family));
            // Every slot appears at most once per family, every name is unique.
            let mut slots = std::collections::HashSet::new();
            let mut names = std::collections::HashSet::new();
            for t in f.layer_tensors {
                assert!(slots.insert(t.slot), "{:?} twice in {}", t.slot, f.name);
                assert!(names.insert(t.hf), "{} twice in {}", t.hf, f.name);
                assert!(is_layer_slot(t.slot));
            }
            // q/k norm tensors are listed exactly when the op is on.
            let has_norm = f.layer_tensors.iter().any(|t| t.role == Role::HeadNormGain);
            assert_eq!(has_norm, f.qk_norm, "{}", f.name);
        }
        assert_eq!(Family::from_model_type("gpt2"), None);
        assert_eq!(
            Family::from_architecture("Qwen3ForCausalLM"),
            Some(Family::Qwen3)
        );
        assert_eq!(Family::from_gguf_architecture("qwen2"), Some(Family::Qwen2));
    }
}
