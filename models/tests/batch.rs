//! Several prompts decoded together over one model (`generate_batch`): each
//! sequence's tokens are exactly those of its prompt run alone with
//! `generate`, on the tiny fixture model always and on SmolLM2-135M when
//! `WAFER_TEST_MODEL_DIR` is set; and the batch's bounds.

mod common;

use common::*;

use std::path::{Path, PathBuf};
use wafer_models::batch::{check_host_memory, Batch, BatchEngine, MAX_BATCH};
use wafer_models::generate::{generate, generate_batch, GenerateOptions};
use wafer_models::reference::ReferenceModel;
use wafer_models::sampling::SamplingParams;
use wafer_models::tokenizer::Tokenizer;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/reference/tiny-llama3")
}

/// A word-level tokenizer over `vocab` ids ("t0", "t1", ...): enough to decode
/// the tiny model's tokens into text.
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

fn options(temperature: f32, max_tokens: usize, stop_ids: Vec<u32>) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplingParams {
            temperature,
            top_k: None,
            top_p: 1.0,
            seed: 11,
        },
        top_logprobs: 2,
        stop_ids,
    }
}

/// Each prompt alone on a fresh engine: tokens and stop reason.
fn alone(
    engine: &mut ReferenceModel,
    tok: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
) -> (Vec<u32>, &'static str) {
    let mut got = Vec::new();
    let s = generate(engine, tok, prompt, opts, |ev| {
        got.push(ev.token_id);
        Ok(())
    })
    .unwrap();
    (got, s.stop_reason)
}

/// The batch's tokens per sequence, checking the round-robin order on the way.
fn batched(
    batch: &mut dyn BatchEngine,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
) -> (Vec<Vec<u32>>, Vec<&'static str>, Vec<String>) {
    let mut got = vec![Vec::new(); prompts.len()];
    let mut texts = vec![String::new(); prompts.len()];
    let mut order = Vec::new();
    let s = generate_batch(batch, tok, prompts, opts, |seq, ev| {
        assert_eq!(ev.index, got[seq].len(), "sequence {seq}");
        assert_eq!(ev.top_logprobs.as_ref().map(Vec::len), Some(2));
        got[seq].push(ev.token_id);
        texts[seq].push_str(&ev.text);
        order.push(seq);
        Ok(())
    })
    .unwrap();
    // The first round gives every sequence its first token, in order.
    let firsts: Vec<usize> = order.iter().copied().take(prompts.len()).collect();
    if got.iter().all(|g| !g.is_empty()) {
        assert_eq!(firsts, (0..prompts.len()).collect::<Vec<_>>());
    }
    for (i, (seq, g)) in s.sequences.iter().zip(&got).enumerate() {
        assert_eq!(seq.generated_tokens, g.len(), "sequence {i}");
        assert_eq!(seq.prompt_tokens, prompts[i].len());
        texts[i].push_str(&seq.trailing_text);
    }
    let reasons = s.sequences.iter().map(|s| s.stop_reason).collect();
    (got, reasons, texts)
}

#[test]
fn tiny_model_batch_tokens_are_each_prompt_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = word_tokenizer(tmp.path(), 256);
    let prompts: Vec<Vec<u32>> = [(5, 1), (23, 2), (1, 3), (40, 4)]
        .iter()
        .map(|&(n, seed)| lcg_ids(n, 256, seed))
        .collect();
    let mut single = load(&fixture(), None);
    for temperature in [0.0, 0.9] {
        let plain = options(temperature, 9, vec![]);
        let want: Vec<(Vec<u32>, &str)> = prompts
            .iter()
            .map(|p| alone(&mut single, &tok, p, &plain))
            .collect();
        // A stop id from sequence 2's run ends it early there (and wherever else it
        // comes first): sequences of different lengths in one batch.
        let stop = want[2].0[3];
        let stopping = options(temperature, 9, vec![stop]);
        let want_stopping: Vec<(Vec<u32>, &str)> = prompts
            .iter()
            .map(|p| alone(&mut single, &tok, p, &stopping))
            .collect();
        assert_eq!(want_stopping[2].1, "eos");
        assert!(want_stopping[2].0.len() <= 3);
        assert!(
            want_stopping.iter().any(|w| w.0.len() == 9),
            "{want_stopping:?}"
        );

        for (opts, want) in [(&plain, &want), (&stopping, &want_stopping)] {
            let mut batch = Batch::new(load(&fixture(), None), prompts.len()).unwrap();
            let (got, reasons, texts) = batched(&mut batch, &tok, &prompts, opts);
            for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                assert_eq!(g, &w.0, "sequence {i} at temperature {temperature}");
                assert_eq!(reasons[i], w.1, "sequence {i}");
                // The text is the tokens' decoding.
                assert_eq!(texts[i].trim(), tok.decode(g).unwrap().trim());
            }
            // Sampled runs of different prompts differ (the test is not vacuous).
            assert_ne!(got[0], got[1]);
        }
    }
}

#[test]
fn a_batch_of_one_is_generate() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = word_tokenizer(tmp.path(), 256);
    let prompt = lcg_ids(12, 256, 8);
    let opts = options(0.7, 6, vec![]);
    let want = alone(&mut load(&fixture(), None), &tok, &prompt, &opts);
    let mut batch = Batch::new(load(&fixture(), None), 1).unwrap();
    let (got, reasons, _) = batched(&mut batch, &tok, &[prompt], &opts);
    assert_eq!(got[0], want.0);
    assert_eq!(reasons[0], "max_tokens");
}

#[test]
fn bad_batches_are_refused_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = word_tokenizer(tmp.path(), 256);
    let err = |r: anyhow::Result<_>| format!("{:#}", r.err().unwrap());
    assert!(err(Batch::new(load(&fixture(), None), 0).map(|_| ())).contains("1 to 256 sequences"));
    assert!(
        err(Batch::new(load(&fixture(), None), MAX_BATCH + 1).map(|_| ())).contains("found 257")
    );
    let opts = options(0.0, 4, vec![]);
    let mut batch = Batch::new(load(&fixture(), None), 2).unwrap();
    let e = err(generate_batch(&mut batch, &tok, &[vec![1]], &opts, |_, _| Ok(())).map(|_| ()));
    assert!(e.contains("1 prompts for a batch of 2"), "{e}");
    let e =
        err(generate_batch(&mut batch, &tok, &[vec![1], vec![]], &opts, |_, _| Ok(())).map(|_| ()));
    assert!(e.contains("prompt 1 is empty"), "{e}");
    assert!(batch.select(2).is_err());
    // Host memory: 256 sequences of SmolLM2-135M's shape at 8,192 positions:
    // 2 x 30 layers x 192 kv dims x 4 bytes = 46,080 bytes a position,
    // x 8,192 x 256 = 90 GiB, past the 8 GiB bound; 16 of 2,048 fit (1.4 GiB).
    let cfg = wafer_models::presets::lookup("smollm2-135m").unwrap();
    let e = err(check_host_memory(&cfg, &vec![8192; 256]));
    assert!(
        e.contains("90.00 GiB") && e.contains("46080 bytes per position"),
        "{e}"
    );
    check_host_memory(&cfg, &[2048; 16]).unwrap();
}

#[test]
fn smollm2_batch_tokens_are_each_prompt_alone() {
    let Some(dir) = real_model_dir() else {
        return;
    };
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let prompts: Vec<Vec<u32>> = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time, in a small village by the sea,",
    ]
    .iter()
    .map(|p| tok.encode(p, true).unwrap())
    .collect();
    let opts = options(0.0, 10, vec![]);
    let mut single = load(&dir, None);
    let mut batch = Batch::new(load(&dir, None), prompts.len()).unwrap();
    let (got, _, texts) = batched(&mut batch, &tok, &prompts, &opts);
    for (i, p) in prompts.iter().enumerate() {
        let (want, _) = alone(&mut single, &tok, p, &opts);
        assert_eq!(got[i], want, "sequence {i}: {:?}", texts[i]);
    }
    assert!(texts[0].contains("Paris"), "{:?}", texts[0]);
}
