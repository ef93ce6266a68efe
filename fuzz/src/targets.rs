//! The fuzz targets: each parser of outside input, followed by what the program
//! does next with an accepted result (dequantizing GGUF tensors, reading
//! safetensors views, counting parameters and placing a parsed config, encoding
//! with a parsed tokenizer, placing and estimating a model on a parsed spec).

use crate::Target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wafer_core::WaferSpec;
use wafer_import::gguf::GgufFile;
use wafer_lower::estimate::{estimate, EstimateOptions};
use wafer_lower::placement::{place, PlaceOptions, Strategy};
use wafer_models::tokenizer::Tokenizer;
use wafer_models::weights::safetensors_files::SafetensorsFiles;
use wafer_models::ModelConfig;

/// Every target, by name.
pub const ALL: &[Target] = &[
    GGUF_HEADER,
    GGUF_FILE,
    SAFETENSORS,
    CONFIG,
    TOKENIZER,
    HW_TOML,
];

/// Looks a target up by name.
pub fn by_name(name: &str) -> Option<&'static Target> {
    ALL.iter().find(|t| t.name == name)
}

/// The GGUF header parser on an in-memory image (`GgufFile::from_vec` is
/// `parse_header` plus keeping the bytes).
pub const GGUF_HEADER: Target = Target {
    name: "gguf-header",
    max_len: 16 << 10,
    dict: &[],
    text: false,
    run: |_, data| GgufFile::from_vec(Path::new("fuzz.gguf"), data.to_vec()).is_ok(),
};

/// A GGUF file on disk: open (memory-mapped), then dequantize every tensor it lists.
pub const GGUF_FILE: Target = Target {
    name: "gguf-file",
    max_len: 16 << 10,
    dict: &[],
    text: false,
    run: |dir, data| {
        let path = write(dir, "fuzz.gguf", data);
        let Ok(file) = GgufFile::open(&path) else {
            return false;
        };
        for t in &file.tensors {
            if let Ok(values) = file.dequantize(t) {
                assert_eq!(values.len() as u64, t.n_elements, "{}", t.name);
            }
            let _ = t.shape();
        }
        true
    },
};

/// A safetensors file: open (header parsed and checked), then every tensor's view.
pub const SAFETENSORS: Target = Target {
    name: "safetensors",
    max_len: 16 << 10,
    dict: &[
        "\"dtype\"",
        "\"shape\"",
        "\"data_offsets\"",
        "\"F32\"",
        "\"F16\"",
        "\"BF16\"",
        "\"I64\"",
        "\"__metadata__\"",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
    ],
    text: true,
    run: |dir, data| {
        let path = write(dir, "model.safetensors", data);
        let Ok(files) = SafetensorsFiles::open_files(&[path]) else {
            return false;
        };
        let names: Vec<String> = files.names().map(str::to_string).collect();
        for name in names {
            let view = files.get(&name).expect("a listed tensor");
            // The element count is what callers allocate from.
            let n = view.len();
            assert!(
                (n as u64).checked_mul(view.dtype.size_bytes()) == Some(view.bytes.len() as u64),
                "{name}: {n} elements in {} bytes",
                view.bytes.len()
            );
        }
        true
    },
};

/// config.json: parse, count parameters, and place the model on a wse3 wafer.
pub const CONFIG: Target = Target {
    name: "config",
    max_len: 8 << 10,
    dict: &[
        "\"hidden_size\"",
        "\"intermediate_size\"",
        "\"num_hidden_layers\"",
        "\"num_attention_heads\"",
        "\"num_key_value_heads\"",
        "\"head_dim\"",
        "\"vocab_size\"",
        "\"max_position_embeddings\"",
        "\"rope_scaling\"",
        "\"rope_parameters\"",
        "\"rope_type\"",
        "\"llama3\"",
        "\"linear\"",
        "\"factor\"",
        "\"sliding_window\"",
        "\"use_sliding_window\"",
        "\"max_window_layers\"",
        "\"tie_word_embeddings\"",
        "\"attention_bias\"",
        "\"eos_token_id\"",
        "\"bos_token_id\"",
        "\"model_type\"",
        "\"qwen2\"",
        "\"qwen3\"",
        "\"mistral\"",
        "\"llama\"",
        "null",
        "true",
        "false",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
    ],
    text: true,
    run: |_, data| {
        let text = String::from_utf8_lossy(data);
        let Ok(cfg) = ModelConfig::from_json_str(&text) else {
            return false;
        };
        let _ = cfg.param_count();
        let _ = cfg.layer_params();
        // The context and the strategy vary with the input so both are covered.
        let context_tokens = [1, 8192, 1 << 20, u64::MAX][data.len() % 4];
        let strategy = if data.len() % 3 == 0 {
            Strategy::LayerPerRegion
        } else {
            Strategy::Packed
        };
        let opts = PlaceOptions {
            context_tokens,
            region: None,
            wafers: None,
            strategy,
        };
        let _ = place(&cfg, wse3(), &opts);
        true
    },
};

/// tokenizer.json as `wafer_models::tokenizer::Tokenizer::from_dir` loads it,
/// then a short encode and decode.
pub const TOKENIZER: Target = Target {
    name: "tokenizer",
    max_len: 16 << 10,
    dict: &[
        "\"model\"",
        "\"type\"",
        "\"BPE\"",
        "\"WordPiece\"",
        "\"WordLevel\"",
        "\"Unigram\"",
        "\"vocab\"",
        "\"merges\"",
        "\"added_tokens\"",
        "\"normalizer\"",
        "\"pre_tokenizer\"",
        "\"post_processor\"",
        "\"decoder\"",
        "\"ByteLevel\"",
        "\"Metaspace\"",
        "\"Sequence\"",
        "\"TemplateProcessing\"",
        "\"byte_fallback\"",
        "\"unk_token\"",
        "\"unk_id\"",
        "\"special\"",
        "\"id\"",
        "\"content\"",
        "null",
        "true",
        "false",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
    ],
    text: true,
    run: |dir, data| {
        write(dir, "tokenizer.json", data);
        let Ok(tok) = Tokenizer::from_dir(dir) else {
            return false;
        };
        let _ = tok.vocab_size();
        if let Ok(ids) = tok.encode("Hello, wafer! 123 <s> héllo\n", true) {
            let _ = tok.decode(&ids);
        }
        let _ = tok.decode(&[0, 1, 2, 3, u32::MAX]);
        true
    },
};

/// A hardware TOML: parse, then place and estimate smollm2-135m on the spec.
pub const HW_TOML: Target = Target {
    name: "hw-toml",
    max_len: 8 << 10,
    dict: &[
        "base = \"wse3\"\n",
        "base = \"wse2\"\n",
        "[fabric]\n",
        "[pe]\n",
        "[simd]\n",
        "[router]\n",
        "[precision]\n",
        "[cost]\n",
        "[system]\n",
        "width_pes = ",
        "height_pes = ",
        "sram_bytes = ",
        "reserve_bytes = ",
        "clock_hz = ",
        "\"fp16\"",
        "\"fp32\"",
        "\"bf16\"",
        "=",
        "\n",
        "[",
        "]",
        ",",
    ],
    text: true,
    run: |_, data| {
        let text = String::from_utf8_lossy(data);
        let Ok(spec) = WaferSpec::from_toml_str(&text, "fuzz.toml") else {
            return false;
        };
        let cfg = smollm2();
        let opts = PlaceOptions {
            context_tokens: 8192,
            region: None,
            wafers: None,
            strategy: Strategy::Packed,
        };
        let _ = place(cfg, &spec, &opts);
        let est = EstimateOptions {
            wafers: None,
            region: None,
            strategy: Strategy::Packed,
            context: 8192,
            prompt_tokens: 64,
        };
        let _ = estimate(&spec, cfg, &est);
        true
    },
};

fn wse3() -> &'static WaferSpec {
    static SPEC: OnceLock<WaferSpec> = OnceLock::new();
    SPEC.get_or_init(|| WaferSpec::preset("wse3").expect("the wse3 preset"))
}

fn smollm2() -> &'static ModelConfig {
    static CFG: OnceLock<ModelConfig> = OnceLock::new();
    CFG.get_or_init(|| wafer_models::presets::lookup("smollm2-135m").expect("the smollm2 preset"))
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("writing the scratch file");
    path
}
