//! Several prompts decoded together on one mesh program (one copy of the
//! tiles, one KV cache per sequence, swapped in and out): each sequence's
//! tokens are exactly those of its prompt run alone on the mesh. The tiny
//! fixture model on a small wafer always; SmolLM2-135M on `wse3` when
//! `WAFER_TEST_MODEL_DIR` is set.

mod common;

use common::real_model_dir;

use std::path::{Path, PathBuf};
use wafer_core::{DType, WaferSpec};
use wafer_lower::cost::PlanOptions;
use wafer_mesh::{MeshEngine, MeshSetup};
use wafer_models::batch::Batch;
use wafer_models::generate::{generate, generate_batch, GenerateOptions};
use wafer_models::sampling::SamplingParams;
use wafer_models::tokenizer::Tokenizer;
use wafer_models::weights::LlamaWeights;
use wafer_models::ModelConfig;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/reference/tiny-llama3")
}

/// A word-level tokenizer over `vocab` ids ("t0", "t1", ...).
fn word_tokenizer(dir: &Path, vocab: usize) -> Tokenizer {
    let words: serde_json::Map<String, serde_json::Value> = (0..vocab)
        .map(|i| (format!("t{i}"), serde_json::json!(i)))
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "t0"},
    });
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    Tokenizer::from_dir(dir).unwrap()
}

fn opts(temperature: f32, max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplingParams {
            temperature,
            top_k: None,
            top_p: 1.0,
            seed: 3,
        },
        top_logprobs: 0,
        stop_ids: vec![],
    }
}

fn build(
    config: &ModelConfig,
    weights: &LlamaWeights,
    spec: &WaferSpec,
    context: usize,
    users: u64,
) -> anyhow::Result<MeshEngine> {
    let setup = MeshSetup {
        spec: spec.clone(),
        region: None,
        wafers: None,
        context,
        options: PlanOptions::default(),
    };
    MeshEngine::place_and_build_for_users(config.clone(), weights, &setup, users)
}

/// Each sequence's tokens in the batch, and the batch's summary json.
fn run_batch(
    engine: MeshEngine,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    o: &GenerateOptions,
) -> (
    Vec<Vec<u32>>,
    serde_json::Map<String, serde_json::Value>,
    Vec<f64>,
) {
    let mut batch = Batch::new(engine, prompts.len()).unwrap();
    let mut got = vec![Vec::new(); prompts.len()];
    let mut cycles = vec![0.0; prompts.len()];
    let s = generate_batch(&mut batch, tok, prompts, o, |seq, ev| {
        got[seq].push(ev.token_id);
        // Every token carries its step's cycles (the prefill's for the first).
        let c = ev.report.as_ref().unwrap().json["cycles"].as_f64().unwrap();
        if ev.index == 0 {
            cycles[seq] = c;
        }
        Ok(())
    })
    .unwrap();
    (got, s.engine.unwrap().json, cycles)
}

#[test]
fn tiny_model_mesh_batch_tokens_are_each_prompt_alone() {
    let dir = fixture();
    let config = ModelConfig::from_dir(&dir).unwrap();
    let weights = LlamaWeights::load_dir(&dir, &config, Some(DType::F16)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tok = word_tokenizer(tmp.path(), config.vocab_size);
    let spec = WaferSpec::from_toml_str(
        "base = \"wse3\"\n[fabric]\nwidth_pes = 32\nheight_pes = 24\n",
        "tiny.toml",
    )
    .unwrap();
    let prompts: Vec<Vec<u32>> = vec![
        vec![5, 9, 200, 31],
        vec![77],
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    ];
    let max_tokens = 8;
    let context = 10 + max_tokens;
    for temperature in [0.0, 0.8] {
        let o = opts(temperature, max_tokens);
        let mut alone = build(&config, &weights, &spec, context, 1).unwrap();
        let mut want = Vec::new();
        let mut want_ttft = Vec::new();
        for p in &prompts {
            let mut got = Vec::new();
            let mut ttft = 0.0;
            generate(&mut alone, &tok, p, &o, |ev| {
                got.push(ev.token_id);
                if ev.index == 0 {
                    ttft = ev.report.as_ref().unwrap().json["cycles"].as_f64().unwrap();
                }
                Ok(())
            })
            .unwrap();
            want.push(got);
            want_ttft.push(ttft);
        }
        let engine = build(&config, &weights, &spec, context, prompts.len() as u64).unwrap();
        let (got, batch_json, ttft) = run_batch(engine, &tok, &prompts, &o);
        assert_eq!(got, want, "temperature {temperature}");
        assert_ne!(got[0], got[1]);
        // Each sequence's prefill is priced on its own prompt, as alone.
        assert_eq!(ttft, want_ttft);
        assert!(want_ttft[1] < want_ttft[2]);
        // The pipelined figures: per-user x users = aggregate, never more than
        // one user's rate times the users nor than one token per slowest stage.
        let f = |k: &str| batch_json[k].as_f64().unwrap();
        let (per, agg) = (f("per_user_tokens_per_s"), f("aggregate_tokens_per_s"));
        assert!((per * 3.0 - agg).abs() < 1e-9 * agg);
        let clock = spec.clock_hz;
        assert!(agg <= 3.0 * clock / f("pipeline_latency_cycles") * (1.0 + 1e-12));
        assert!(agg <= clock / f("slowest_stage_cycles") * (1.0 + 1e-12));
        assert!(f("slowest_stage_cycles") <= f("pipeline_latency_cycles"));
    }
}

#[test]
fn more_sequences_than_the_regions_hold_are_refused() {
    let dir = fixture();
    let config = ModelConfig::from_dir(&dir).unwrap();
    let weights = LlamaWeights::load_dir(&dir, &config, Some(DType::F16)).unwrap();
    // A wafer so small that one user's long context barely fits.
    let spec = WaferSpec::from_toml_str(
        "base = \"wse3\"\n[fabric]\nwidth_pes = 8\nheight_pes = 8\n",
        "tiny.toml",
    )
    .unwrap();
    let (mut lo, mut hi) = (1usize, 1usize << 24);
    // The longest context one user can have here.
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if build(&config, &weights, &spec, mid, 1).is_ok() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let e = build(&config, &weights, &spec, lo, 2)
        .err()
        .expect("two users at one user's limit");
    let msg = format!("{e:#}");
    // 2 x lo positions x 2 layers x 2 (K, V) x 32 kv dims x 2 bytes.
    let kv = 2 * lo * 2 * 2 * 32 * 2;
    assert!(
        msg.contains(&format!(
            "2 sequences' KV caches of {lo} positions each ({kv} bytes"
        )),
        "{msg}"
    );
}

#[test]
fn smollm2_mesh_batch_tokens_are_each_prompt_alone() {
    let Some(dir) = real_model_dir() else {
        return;
    };
    let config = ModelConfig::from_dir(&dir).unwrap();
    let weights = LlamaWeights::load_dir(&dir, &config, Some(DType::F16)).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let prompts: Vec<Vec<u32>> = ["The capital of France is", "def fibonacci(n):"]
        .iter()
        .map(|p| tok.encode(p, true).unwrap())
        .collect();
    let o = opts(0.0, 8);
    let spec = wafer_core::spec::wse3();
    let context = 16 + 8;
    let mut alone = build(&config, &weights, &spec, context, 1).unwrap();
    let want: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut got = Vec::new();
            generate(&mut alone, &tok, p, &o, |ev| {
                got.push(ev.token_id);
                Ok(())
            })
            .unwrap();
            got
        })
        .collect();
    let engine = build(&config, &weights, &spec, context, 2).unwrap();
    let (got, json, _) = run_batch(engine, &tok, &prompts, &o);
    assert_eq!(got, want);
    assert!(json["aggregate_tokens_per_s"].as_f64().unwrap() > 0.0);
}
