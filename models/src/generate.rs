//! The generation loop shared by every engine: prefill the prompt, then pick a
//! token, report it, decode it, until `max_tokens`, an end-of-sequence id, or
//! the end of the context. Timing separates prefill from decode so decode
//! tokens/s never includes the prompt.

use crate::engine::{Engine, StepReport};
use crate::sampling::{top_logprobs, Sampler, SamplingParams};
use crate::tokenizer::{TextStream, Tokenizer};
use anyhow::{bail, Result};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// How many most likely tokens to report per step (0: none).
    pub top_logprobs: usize,
    /// Generation stops (without emitting it) at any of these ids.
    pub stop_ids: Vec<u32>,
}

/// One generated token, as reported to the caller.
#[derive(Debug, Clone)]
pub struct TokenEvent {
    pub index: usize,
    pub token_id: u32,
    /// The text this token completes (empty while a character is incomplete).
    pub text: String,
    pub top_logprobs: Option<Vec<(u32, f32)>>,
    pub report: Option<StepReport>,
}

#[derive(Debug, Clone, Default)]
pub struct GenerateSummary {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_ms: f64,
    /// Wall-clock time of the decode steps.
    pub decode_ms: f64,
    /// Decode steps run (each after a generated token but the last).
    pub decode_steps: usize,
    /// Decode steps per second (prefill not counted); 0 when there was no decode
    /// step, which callers should show as "n/a" (see `decode_steps`).
    pub decode_tokens_per_s: f64,
    /// Why generation ended: "eos", "max_tokens" or "context".
    pub stop_reason: &'static str,
    /// Text still held back by the UTF-8 streamer at the end.
    pub trailing_text: String,
    pub engine: Option<StepReport>,
}

/// Generates from `prompt`, calling `on_token` for each token as it is chosen.
pub fn generate(
    engine: &mut dyn Engine,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(&TokenEvent) -> Result<()>,
) -> Result<GenerateSummary> {
    if prompt.is_empty() {
        bail!("the prompt is empty: there is nothing to generate from");
    }
    if opts.max_tokens == 0 {
        bail!("--max-tokens must be at least 1, found 0");
    }
    let context = engine.context_len();
    if prompt.len() > context {
        bail!(
            "the prompt has {} tokens but the model's context holds {} (max_position_embeddings)",
            prompt.len(),
            context
        );
    }
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let mut stream = TextStream::new(tokenizer);

    let t0 = Instant::now();
    let mut logits = engine.prefill(prompt)?;
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut report = engine.step_report();

    let mut summary = GenerateSummary {
        prompt_tokens: prompt.len(),
        prefill_ms,
        stop_reason: "max_tokens",
        ..Default::default()
    };
    let mut decode_secs = 0.0;
    let mut decode_steps = 0usize;
    for index in 0..opts.max_tokens {
        let token_id = sampler.sample(&logits)?;
        if opts.stop_ids.contains(&token_id) {
            summary.stop_reason = "eos";
            break;
        }
        let event = TokenEvent {
            index,
            token_id,
            text: stream.push(token_id)?,
            top_logprobs: (opts.top_logprobs > 0).then(|| top_logprobs(&logits, opts.top_logprobs)),
            report: report.take(),
        };
        on_token(&event)?;
        summary.generated_tokens += 1;
        if index + 1 == opts.max_tokens {
            break;
        }
        if engine.position() >= context {
            summary.stop_reason = "context";
            break;
        }
        let t = Instant::now();
        logits = engine.decode(token_id)?;
        decode_secs += t.elapsed().as_secs_f64();
        decode_steps += 1;
        report = engine.step_report();
    }
    summary.trailing_text = stream.finish()?;
    summary.decode_ms = decode_secs * 1e3;
    summary.decode_steps = decode_steps;
    summary.decode_tokens_per_s = if decode_secs > 0.0 {
        decode_steps as f64 / decode_secs
    } else {
        0.0
    };
    summary.engine = engine.summary_report();
    Ok(summary)
}

/// Every id that ends generation for the model in `dir`: `eos_token_id` of
/// config.json plus that of generation_config.json (which chat models often
/// extend, e.g. with an end-of-turn token), if that file exists.
pub fn stop_ids(dir: &std::path::Path, config: &crate::config::ModelConfig) -> Result<Vec<u32>> {
    use anyhow::Context;
    let mut ids = config.eos_token_ids.clone();
    let path = dir.join("generation_config.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let extra = match json.get("eos_token_id") {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_u64()).collect(),
            Some(v) => v.as_u64().into_iter().collect(),
            None => Vec::new(),
        };
        for id in extra {
            let id = u32::try_from(id).with_context(|| {
                format!("{}: eos_token_id {id} is not a token id", path.display())
            })?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}
