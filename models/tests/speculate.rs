//! Speculative decoding on the reference engine: greedy output with
//! speculation is exactly the output without it (prompt lookup at several K, a
//! draft model), on the tiny fixture model always and on SmolLM2-135M when
//! `WAFER_TEST_MODEL_DIR` is set; sampling with speculation is refused.

mod common;

use common::*;

use std::path::{Path, PathBuf};
use wafer_core::DType;
use wafer_models::engine::Engine;
use wafer_models::generate::{
    generate, generate_speculative, GenerateOptions, GenerateSummary, SpeculationStats,
};
use wafer_models::sampling::SamplingParams;
use wafer_models::speculate::{DraftModel, Drafter, PromptLookup};
use wafer_models::tokenizer::Tokenizer;

fn greedy(max_tokens: usize, stop_ids: Vec<u32>) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplingParams::greedy(),
        top_logprobs: 2,
        stop_ids,
    }
}

/// Tokens, their top log-probabilities and the summary of a run.
type Run = (Vec<u32>, Vec<Vec<(u32, f32)>>, GenerateSummary);

fn plain(model: &mut dyn Engine, tok: &Tokenizer, prompt: &[u32], o: &GenerateOptions) -> Run {
    let (mut ids, mut tops) = (Vec::new(), Vec::new());
    let s = generate(model, tok, prompt, o, |ev| {
        assert_eq!(ev.index, ids.len());
        ids.push(ev.token_id);
        tops.push(ev.top_logprobs.clone().unwrap());
        Ok(())
    })
    .unwrap();
    (ids, tops, s)
}

fn speculative(
    model: &mut dyn Engine,
    tok: &Tokenizer,
    prompt: &[u32],
    o: &GenerateOptions,
    drafter: &mut dyn Drafter,
    k: usize,
) -> Run {
    let (mut ids, mut tops) = (Vec::new(), Vec::new());
    let s = generate_speculative(model, tok, prompt, o, drafter, k, |ev| {
        assert_eq!(ev.index, ids.len());
        ids.push(ev.token_id);
        tops.push(ev.top_logprobs.clone().unwrap());
        Ok(())
    })
    .unwrap();
    (ids, tops, s)
}

/// The speculative run equals the plain one token for token (with the same
/// top log-probabilities and stop reason); returns its statistics.
fn check_same(
    model: &mut dyn Engine,
    tok: &Tokenizer,
    prompt: &[u32],
    o: &GenerateOptions,
    drafter: &mut dyn Drafter,
    k: usize,
) -> SpeculationStats {
    let (want, want_top, ws) = plain(model, tok, prompt, o);
    let (got, got_top, gs) = speculative(model, tok, prompt, o, drafter, k);
    assert_eq!(got, want, "K = {k}: tokens");
    assert_eq!(got_top, want_top, "K = {k}: top log-probabilities");
    assert_eq!(gs.stop_reason, ws.stop_reason, "K = {k}");
    assert_eq!(gs.generated_tokens, ws.generated_tokens);
    let stats = gs.speculation.unwrap();
    // Every token after the first came out of a verification step.
    let yielded: usize = stats.steps.iter().map(|s| s.accepted + 1).sum();
    if gs.stop_reason == "max_tokens" {
        assert_eq!(yielded + 1, got.len(), "K = {k}");
    } else {
        // A stop id among the drafts or as the step's own token is not emitted.
        assert!(yielded + 1 >= got.len(), "K = {k}");
    }
    assert!(stats
        .steps
        .iter()
        .all(|s| s.drafted <= k && s.accepted <= s.drafted));
    // The cache holds every emitted token but the last.
    if gs.stop_reason == "max_tokens" {
        assert_eq!(model.position(), prompt.len() + got.len() - 1);
    }
    stats
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/reference")
}

/// A prompt that repeats itself, so that prompt lookup finds drafts.
fn repeating_prompt() -> Vec<u32> {
    let part: Vec<u32> = (0..24u32).map(|i| (i * 37 + 11) % 256).collect();
    [part.clone(), part.clone(), part[..10].to_vec()].concat()
}

#[test]
fn tiny_model_prompt_lookup_and_draft_model_keep_greedy_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = byte_tokenizer(tmp.path());
    let dir = fixtures().join("tiny-llama3");
    let mut model = load(&dir, None);
    let prompt = repeating_prompt();
    let (mut drafted, mut accepted, mut rejected_steps) = (0, 0, 0);
    for k in [1, 2, 4, 8] {
        for max in [1, 2, 7, 40] {
            let s = check_same(
                &mut model,
                &tok,
                &prompt,
                &greedy(max, vec![]),
                &mut PromptLookup,
                k,
            );
            drafted += s.drafted();
            accepted += s.accepted();
            rejected_steps += s.steps.iter().filter(|s| s.accepted < s.drafted).count();
        }
    }
    // Both halves of acceptance ran: drafts kept and drafts rolled back.
    assert!(
        accepted > 0 && rejected_steps > 0,
        "{accepted} of {drafted}"
    );
    // A stop id among the generated tokens ends both runs at the same place.
    let (want, _, _) = plain(&mut model, &tok, &prompt, &greedy(40, vec![]));
    let stop = want[12];
    let s = check_same(
        &mut model,
        &tok,
        &prompt,
        &greedy(40, vec![stop]),
        &mut PromptLookup,
        4,
    );
    assert!(!s.steps.is_empty());
    // A draft model: the same network with f16-rounded weights.
    let mut draft = DraftModel::new(Box::new(load(&dir, Some(DType::F16))));
    for k in [1, 3, 6] {
        let s = check_same(
            &mut model,
            &tok,
            &prompt,
            &greedy(30, vec![]),
            &mut draft,
            k,
        );
        assert!(s.drafted() > 0);
    }
}

#[test]
fn speculation_with_sampling_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = byte_tokenizer(tmp.path());
    let mut model = load(&fixtures().join("tiny-llama3"), None);
    let mut o = greedy(8, vec![]);
    o.sampling.temperature = 0.7;
    let err = generate_speculative(
        &mut model,
        &tok,
        &[1, 2, 3],
        &o,
        &mut PromptLookup,
        4,
        |_| Ok(()),
    )
    .unwrap_err();
    assert!(format!("{err}").contains("greedy only"), "{err}");
}

#[test]
fn truncating_the_cache_then_decoding_equals_never_having_run_the_rolled_back_tokens() {
    let mut a = load(&fixtures().join("tiny-llama3"), None);
    let mut b = load(&fixtures().join("tiny-llama3"), None);
    a.prefill(&[5, 6, 7, 8]).unwrap();
    for t in [9, 10, 11] {
        a.decode(t).unwrap();
    }
    a.truncate(5).unwrap();
    let got = a.decode(12).unwrap();
    b.prefill(&[5, 6, 7, 8]).unwrap();
    b.decode(9).unwrap();
    let want = b.decode(12).unwrap();
    assert_eq!(got, want);
    assert!(a.truncate(7).is_err(), "past the cache");
}

#[test]
fn smollm2_speculative_greedy_output_is_the_plain_greedy_output() {
    let Some(dir) = real_model_dir() else { return };
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let mut model = load(&dir, None);
    let prompts = [
        "def area(width, height):\n    return width * height\n\n# Rename area to rectangle_area and add a docstring.\ndef",
        "The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is",
    ];
    let mut accepted = 0;
    for p in prompts {
        let ids = tok.encode(p, true).unwrap();
        for k in [2, 4, 8] {
            let s = check_same(
                &mut model,
                &tok,
                &ids,
                &greedy(40, vec![]),
                &mut PromptLookup,
                k,
            );
            accepted += s.accepted();
        }
    }
    assert!(accepted > 0, "prompt lookup never hit");
    // A draft model: SmolLM2 itself at bf16 (same tokenizer, other weights).
    let ids = tok.encode(prompts[0], true).unwrap();
    let mut draft = DraftModel::new(Box::new(load(&dir, Some(DType::BF16))));
    let s = check_same(&mut model, &tok, &ids, &greedy(24, vec![]), &mut draft, 4);
    assert!(s.accepted() > 0);
}
