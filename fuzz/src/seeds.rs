//! The seed corpora: small valid inputs for every target, written to
//! `fuzz/corpus/<target>/` by `wafer-fuzz seeds` (the files are committed, so a
//! run starts from the same corpus on every machine).

use std::path::Path;
use wafer_import::gguf::writer::{self, Meta, Tensor};

/// `(target, file name, bytes)` for every seed.
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, bytes) in gguf() {
        out.push(("gguf-header", name.clone(), bytes.clone()));
        out.push(("gguf-file", name, bytes));
    }
    for (name, bytes) in safetensors() {
        out.push(("safetensors", name, bytes));
    }
    for (name, text) in CONFIGS {
        out.push(("config", format!("{name}.json"), text.as_bytes().to_vec()));
    }
    for (name, text) in TOKENIZERS {
        out.push((
            "tokenizer",
            format!("{name}.json"),
            text.as_bytes().to_vec(),
        ));
    }
    for (name, text) in hw_toml() {
        out.push(("hw-toml", format!("{name}.toml"), text.into_bytes()));
    }
    out
}

/// Writes every seed under `dir/<target>/`.
pub fn write_all(dir: &Path) -> std::io::Result<usize> {
    let seeds = all();
    for (target, name, bytes) in &seeds {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(name), bytes)?;
    }
    Ok(seeds.len())
}

// --- GGUF -------------------------------------------------------------------

/// A tensor of a seed file (GGUF dims innermost first, GGML type id).
fn tensor(name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> Tensor {
    Tensor {
        name: name.into(),
        dims: dims.to_vec(),
        ty,
        data,
    }
}

/// Deterministic filler bytes; f16/bf16 scales are kept finite by the decoder anyway.
fn bytes(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(salt) & 0x3f)
        .collect()
}

fn gguf() -> Vec<(String, Vec<u8>)> {
    let every_type = vec![
        ("general.architecture", Meta::Str("llama".into())),
        ("general.alignment", Meta::U32(32)),
        ("t.u8", Meta::U8(7)),
        ("t.i8", Meta::I8(-7)),
        ("t.u16", Meta::U16(700)),
        ("t.i16", Meta::I16(-700)),
        ("t.i32", Meta::I32(-70000)),
        ("t.f32", Meta::F32(1.5)),
        ("t.bool", Meta::Bool(true)),
        ("t.u64", Meta::U64(1 << 40)),
        ("t.i64", Meta::I64(-(1 << 40))),
        ("t.f64", Meta::F64(0.25)),
        ("llama.block_count", Meta::U32(1)),
        ("llama.context_length", Meta::U32(2048)),
        ("llama.embedding_length", Meta::U32(64)),
        (
            "tokenizer.ggml.tokens",
            Meta::Array(
                8,
                vec![
                    Meta::Str("<s>".into()),
                    Meta::Str("a".into()),
                    Meta::Str("b".into()),
                ],
            ),
        ),
        (
            "tokenizer.ggml.scores",
            Meta::Array(6, vec![Meta::F32(0.0), Meta::F32(-1.0), Meta::F32(-2.0)]),
        ),
        (
            "t.nested",
            Meta::Array(9, vec![Meta::Array(4, vec![Meta::U32(1), Meta::U32(2)])]),
        ),
    ];
    let tensors = vec![
        tensor("f32", &[8], 0, bytes(32, 1)),
        tensor("f16", &[4, 2], 1, bytes(16, 2)),
        tensor("q4_0", &[32, 2], 2, bytes(36, 3)),
        tensor("q4_1", &[32], 3, bytes(20, 4)),
        tensor("q8_0", &[32], 8, bytes(34, 5)),
        tensor("q6_k", &[256], 14, bytes(210, 6)),
        tensor("bf16", &[8], 30, bytes(16, 7)),
    ];
    vec![
        (
            "v3-every-type.gguf".into(),
            writer::gguf(3, &every_type, &tensors, 32),
        ),
        (
            "v2-one-tensor.gguf".into(),
            writer::gguf(
                2,
                &[("general.name", Meta::Str("tiny".into()))],
                &[tensor("w", &[4], 0, bytes(16, 9))],
                32,
            ),
        ),
        (
            "v3-align-8.gguf".into(),
            writer::gguf(
                3,
                &[("general.alignment", Meta::U64(8))],
                &[
                    tensor("a", &[2, 2], 0, bytes(16, 10)),
                    tensor("b", &[32], 8, bytes(34, 11)),
                ],
                8,
            ),
        ),
        ("v3-empty.gguf".into(), writer::gguf(3, &[], &[], 32)),
    ]
}

// --- safetensors ------------------------------------------------------------

fn safetensors_image(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

fn safetensors() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "mixed.safetensors".into(),
            safetensors_image(
                r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},"c":{"dtype":"F16","shape":[1,2,1],"data_offsets":[22,26]}}"#,
                &bytes(26, 1),
            ),
        ),
        (
            "scalar.safetensors".into(),
            safetensors_image(
                r#"{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"e":{"dtype":"F16","shape":[0,4],"data_offsets":[4,4]}}"#,
                &bytes(4, 2),
            ),
        ),
        (
            "int.safetensors".into(),
            safetensors_image(
                r#"{"i":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
                &bytes(16, 3),
            ),
        ),
        ("empty.safetensors".into(), safetensors_image("{}", &[])),
    ]
}

// --- config.json ------------------------------------------------------------

const CONFIGS: &[(&str, &str)] = &[
    (
        "smollm2-135m",
        r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"max_position_embeddings":8192,"rms_norm_eps":1e-05,"rope_theta":100000,"rope_scaling":null,"tie_word_embeddings":true,"attention_bias":false,"mlp_bias":false,"hidden_act":"silu","bos_token_id":0,"eos_token_id":0,"torch_dtype":"bfloat16"}"#,
    ),
    (
        "llama-3.1-8b",
        r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":128256,"hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"max_position_embeddings":131072,"rms_norm_eps":1e-05,"rope_theta":500000.0,"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"},"tie_word_embeddings":false,"hidden_act":"silu","bos_token_id":128000,"eos_token_id":[128001,128008,128009]}"#,
    ),
    (
        "qwen2-tiny",
        r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":1000,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":4096,"rms_norm_eps":1e-06,"rope_theta":1000000.0,"sliding_window":4096,"use_sliding_window":false,"max_window_layers":2,"tie_word_embeddings":true,"hidden_act":"silu","eos_token_id":2}"#,
    ),
    (
        "qwen3-tiny",
        r#"{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","vocab_size":1000,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"max_position_embeddings":40960,"rms_norm_eps":1e-06,"rope_theta":1000000,"rope_scaling":null,"attention_bias":false,"sliding_window":null,"use_sliding_window":false,"tie_word_embeddings":true,"eos_token_id":2}"#,
    ),
    (
        "mistral-tiny",
        r#"{"architectures":["MistralForCausalLM"],"model_type":"mistral","vocab_size":32000,"hidden_size":128,"intermediate_size":256,"num_hidden_layers":4,"num_attention_heads":8,"num_key_value_heads":2,"max_position_embeddings":32768,"rms_norm_eps":1e-05,"rope_theta":1000000.0,"sliding_window":null,"hidden_act":"silu","tie_word_embeddings":false}"#,
    ),
    (
        "rope-parameters",
        r#"{"model_type":"llama","vocab_size":256,"hidden_size":32,"intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":2,"rope_parameters":{"rope_type":"linear","factor":2.0,"rope_theta":10000.0}}"#,
    ),
];

// --- tokenizer.json ---------------------------------------------------------

const TOKENIZERS: &[(&str, &str)] = &[
    (
        "bpe-byte-level",
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":0,"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},"post_processor":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":false,"use_regex":true},"decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},"model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{"<|endoftext|>":0,"H":1,"e":2,"l":3,"o":4,"Ġ":5,"w":6,"a":7,"f":8,"r":9,"He":10,"ll":11,"Hell":12,"Hello":13},"merges":["H e","l l","He ll","Hell o"]}}"#,
    ),
    (
        "bpe-byte-fallback",
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":0,"content":"<unk>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":1,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},"pre_tokenizer":null,"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":true,"byte_fallback":true,"ignore_merges":false,"vocab":{"<unk>":0,"<s>":1,"<0x48>":2,"<0x65>":3,"▁":4,"H":5,"e":6,"l":7,"o":8,"▁H":9,"ll":10},"merges":["▁ H","l l"]}}"#,
    ),
    (
        "wordlevel",
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":{"type":"Lowercase"},"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"wafer":2,",":3},"unk_token":"[UNK]"}}"#,
    ),
    (
        "wordpiece",
        r###"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true},"pre_tokenizer":{"type":"BertPreTokenizer"},"post_processor":{"type":"BertProcessing","sep":["[SEP]",2],"cls":["[CLS]",1]},"decoder":{"type":"WordPiece","prefix":"##","cleanup":true},"model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,"vocab":{"[UNK]":0,"[CLS]":1,"[SEP]":2,"hell":3,"##o":4,"wa":5,"##fer":6}}}"###,
    ),
    (
        "unigram",
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true},"post_processor":null,"decoder":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true},"model":{"type":"Unigram","unk_id":0,"vocab":[["<unk>",0.0],["▁",-1.0],["h",-2.0],["e",-2.0],["l",-2.0],["o",-2.0],["▁hello",-1.5]],"byte_fallback":false}}"#,
    ),
];

// --- hardware TOML ----------------------------------------------------------

fn hw_toml() -> Vec<(String, String)> {
    let full = |name: &str| {
        let spec = wafer_core::WaferSpec::preset(name).expect("a preset");
        toml::to_string(&spec).expect("a preset serialises")
    };
    vec![
        ("wse3-full".into(), full("wse3")),
        ("wse2-full".into(), full("wse2")),
        (
            "wse3-overrides".into(),
            "base = \"wse3\"\nname = \"small\"\nclock_hz = 1.0e9\n\n[fabric]\nwidth_pes = 64\nheight_pes = 48\n\n[pe]\nsram_bytes = 49152\nreserve_bytes = 4096\n\n[precision]\nkv_dtype = \"fp16\"\n".into(),
        ),
        ("wse2-base".into(), "base = \"wse2\"\n".into()),
    ]
}
