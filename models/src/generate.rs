//! The generation loop shared by every engine: prefill the prompt, then pick a
//! token, report it, decode it, until `max_tokens`, an end-of-sequence id, or
//! the end of the context. Timing separates prefill from decode so decode
//! tokens/s never includes the prompt.
//!
//! [`generate_speculative`] is the same loop with speculative decoding (greedy
//! only): each step drafts up to K tokens, the engine verifies them at once and
//! the rejected positions are rolled back from its cache; the tokens are those
//! of [`generate`].
//!
//! [`generate_batch`] runs several prompts over one model ([`BatchEngine`]:
//! one cache per sequence, shared weights), all prefilled first, then one
//! token of each live sequence per round, round robin; each sequence's tokens
//! are those of [`generate`] on its prompt alone.

use crate::batch::{check_host_memory, BatchEngine};
use crate::engine::{Engine, StepReport};
use crate::sampling::{top_logprobs, Sampler, SamplingParams};
use crate::speculate::{accept_greedy, Drafter};
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
    /// What speculation did, when it ran ([`generate_speculative`]).
    pub speculation: Option<SpeculationStats>,
}

/// One verification step: the engine ran the last accepted token and `drafted`
/// draft tokens at positions `position..position + drafted + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyStep {
    /// Positions in the cache before the step.
    pub position: usize,
    pub drafted: usize,
    pub accepted: usize,
}

/// The verification steps of a speculative run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpeculationStats {
    /// The most drafts a step asked for (fewer near the end of the run or when
    /// the drafter had fewer).
    pub k: usize,
    pub steps: Vec<VerifyStep>,
}

impl SpeculationStats {
    pub fn drafted(&self) -> usize {
        self.steps.iter().map(|s| s.drafted).sum()
    }

    pub fn accepted(&self) -> usize {
        self.steps.iter().map(|s| s.accepted).sum()
    }

    /// Mean accepted draft tokens per verification step (`None` without a step).
    pub fn accepted_per_step(&self) -> Option<f64> {
        (!self.steps.is_empty()).then(|| self.accepted() as f64 / self.steps.len() as f64)
    }

    /// Accepted over drafted tokens (`None` when nothing was drafted).
    pub fn acceptance_rate(&self) -> Option<f64> {
        let d = self.drafted();
        (d > 0).then(|| self.accepted() as f64 / d as f64)
    }
}

/// What both generation loops start from: the request checked, the prompt
/// prefilled, the sampler and text stream ready.
struct Start<'t> {
    context: usize,
    sampler: Sampler,
    stream: TextStream<'t>,
    logits: Vec<f32>,
    report: Option<StepReport>,
    summary: GenerateSummary,
}

/// Checks the request (a prompt, at least one token, a prompt the context
/// holds) and prefills the prompt.
fn start<'t>(
    engine: &mut dyn Engine,
    tokenizer: &'t Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
) -> Result<Start<'t>> {
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
    let sampler = Sampler::new(opts.sampling.clone())?;
    let stream = TextStream::new(tokenizer);

    let t0 = Instant::now();
    let logits = engine.prefill(prompt)?;
    let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let report = engine.step_report();

    let summary = GenerateSummary {
        prompt_tokens: prompt.len(),
        prefill_ms,
        stop_reason: "max_tokens",
        ..Default::default()
    };
    Ok(Start {
        context,
        sampler,
        stream,
        logits,
        report,
        summary,
    })
}

/// Generates from `prompt`, calling `on_token` for each token as it is chosen.
pub fn generate(
    engine: &mut dyn Engine,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(&TokenEvent) -> Result<()>,
) -> Result<GenerateSummary> {
    let Start {
        context,
        mut sampler,
        mut stream,
        mut logits,
        mut report,
        mut summary,
    } = start(engine, tokenizer, prompt, opts)?;
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

/// [`generate`] with speculative decoding: after each token, `drafter` proposes
/// up to `k` tokens, the engine runs the token and the drafts at once
/// (`Engine::verify`), the longest prefix of drafts equal to the engine's own
/// greedy choices is kept with the choice after it, and the rest is rolled back
/// from the engine's cache (`Engine::truncate`). Greedy only: with a
/// temperature above 0 it is an error (rejection-sampling acceptance is not
/// implemented). Each step asks for at most as many drafts as the context and
/// `max_tokens` leave room for, so the tokens and the stop reason are exactly
/// those of [`generate`]. Per-token engine reports are the prefill's only.
pub fn generate_speculative(
    engine: &mut dyn Engine,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    drafter: &mut dyn Drafter,
    k: usize,
    mut on_token: impl FnMut(&TokenEvent) -> Result<()>,
) -> Result<GenerateSummary> {
    if opts.sampling.temperature != 0.0 {
        bail!(
            "speculative decoding is greedy only (temperature 0); found temperature {}: drop --speculate or use --temperature 0",
            opts.sampling.temperature
        );
    }
    let Start {
        context,
        mut sampler,
        mut stream,
        mut logits,
        mut report,
        mut summary,
    } = start(engine, tokenizer, prompt, opts)?;
    let mut stats = SpeculationStats {
        k,
        steps: Vec::new(),
    };
    let mut seq = prompt.to_vec();
    let mut decode_secs = 0.0;
    // Emits `token` (chosen from `logits`); false when it ends generation.
    let mut emit = |token: u32,
                    logits: &[f32],
                    report: Option<StepReport>,
                    seq: &mut Vec<u32>,
                    summary: &mut GenerateSummary|
     -> Result<bool> {
        if opts.stop_ids.contains(&token) {
            summary.stop_reason = "eos";
            return Ok(false);
        }
        let event = TokenEvent {
            index: summary.generated_tokens,
            token_id: token,
            text: stream.push(token)?,
            top_logprobs: (opts.top_logprobs > 0).then(|| top_logprobs(logits, opts.top_logprobs)),
            report,
        };
        on_token(&event)?;
        summary.generated_tokens += 1;
        seq.push(token);
        Ok(true)
    };
    loop {
        let token = sampler.sample(&logits)?;
        if !emit(token, &logits, report.take(), &mut seq, &mut summary)? {
            break;
        }
        if summary.generated_tokens == opts.max_tokens {
            break;
        }
        let position = engine.position();
        if position >= context {
            summary.stop_reason = "context";
            break;
        }
        // A step yields its accepted drafts and one more token: never more
        // than the run still wants, never past the context.
        let room = (opts.max_tokens - summary.generated_tokens - 1).min(context - position - 1);
        let t = Instant::now();
        let mut drafts = drafter.draft(&seq, k.min(room))?;
        drafts.truncate(k.min(room));
        let mut inputs = Vec::with_capacity(drafts.len() + 1);
        inputs.push(token);
        inputs.extend_from_slice(&drafts);
        let all = engine.verify(&inputs)?;
        if all.len() != inputs.len() {
            bail!(
                "the {} engine verified {} of {} tokens",
                engine.name(),
                all.len(),
                inputs.len()
            );
        }
        let targets = all
            .iter()
            .map(|l| sampler.sample(l))
            .collect::<Result<Vec<u32>>>()?;
        let accepted = accept_greedy(&drafts, &targets);
        engine.truncate(position + 1 + accepted)?;
        decode_secs += t.elapsed().as_secs_f64();
        stats.steps.push(VerifyStep {
            position,
            drafted: drafts.len(),
            accepted,
        });
        let mut going = true;
        for (d, l) in drafts[..accepted].iter().zip(&all) {
            if !emit(*d, l, None, &mut seq, &mut summary)? {
                going = false;
                break;
            }
        }
        if !going {
            break;
        }
        let mut all = all;
        logits = all.swap_remove(accepted);
        // Per-position reports of the verification are not passed on: the
        // step's price is the caller's (one streamed pass, not K + 1 decodes).
        engine.step_report();
    }
    summary.trailing_text = stream.finish()?;
    summary.decode_ms = decode_secs * 1e3;
    // Every token after the first came out of a verification step.
    summary.decode_steps = stats.steps.len();
    let verified: usize = stats.steps.iter().map(|s| s.accepted + 1).sum();
    summary.decode_tokens_per_s = if decode_secs > 0.0 {
        verified as f64 / decode_secs
    } else {
        0.0
    };
    summary.engine = engine.summary_report();
    summary.speculation = Some(stats);
    Ok(summary)
}

/// What [`generate_batch`] returns: each sequence's summary (its own prefill
/// and decode timing, its engine figures), and the batch's engine figures.
#[derive(Debug, Clone, Default)]
pub struct BatchSummary {
    pub sequences: Vec<GenerateSummary>,
    /// Wall-clock time of the whole run (every prefill and decode step).
    pub wall_ms: f64,
    /// The mean KV length of the decode steps run (0 without one), at which
    /// the engine's batch figures are priced.
    pub mean_decode_kv_len: usize,
    pub engine: Option<StepReport>,
}

/// One sequence of a batch in flight.
struct Running<'a> {
    sampler: Sampler,
    stream: TextStream<'a>,
    logits: Vec<f32>,
    report: Option<StepReport>,
    summary: GenerateSummary,
    decode_secs: f64,
    done: bool,
}

/// [`generate`] over every prompt of `prompts` at once on `batch` (one
/// sequence each, in order): every prompt is prefilled, then each round picks,
/// reports and decodes one token of every sequence still going, until each
/// stops as [`generate`] would (`max_tokens`, an end-of-sequence id, the end of
/// the context). Every sequence samples with its own sampler from the same
/// options (seed included), so its tokens are exactly those of [`generate`]
/// on its prompt alone. `on_token` gets the sequence's index with each token.
pub fn generate_batch(
    batch: &mut dyn BatchEngine,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(usize, &TokenEvent) -> Result<()>,
) -> Result<BatchSummary> {
    if prompts.len() != batch.sequences() {
        bail!(
            "{} prompts for a batch of {} sequences",
            prompts.len(),
            batch.sequences()
        );
    }
    if opts.max_tokens == 0 {
        bail!("--max-tokens must be at least 1, found 0");
    }
    let (context, config) = {
        let e = batch.select(0)?;
        (e.context_len(), e.config().clone())
    };
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            bail!("prompt {i} is empty: there is nothing to generate from");
        }
        if p.len() > context {
            bail!(
                "prompt {i} has {} tokens but the model's context holds {context}",
                p.len()
            );
        }
    }
    let reach: Vec<usize> = prompts
        .iter()
        .map(|p| (p.len() + opts.max_tokens).min(context))
        .collect();
    check_host_memory(&config, &reach)?;

    let t_all = Instant::now();
    let mut seqs = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.iter().enumerate() {
        let engine = batch.select(i)?;
        let t0 = Instant::now();
        let logits = engine.prefill(prompt)?;
        let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
        seqs.push(Running {
            sampler: Sampler::new(opts.sampling.clone())?,
            stream: TextStream::new(tokenizer),
            logits,
            report: engine.step_report(),
            summary: GenerateSummary {
                prompt_tokens: prompt.len(),
                prefill_ms,
                stop_reason: "max_tokens",
                ..Default::default()
            },
            decode_secs: 0.0,
            done: false,
        });
    }
    // The KV lengths of every decode step, for the batch's price.
    let (mut kv_sum, mut kv_steps) = (0usize, 0usize);
    while seqs.iter().any(|s| !s.done) {
        for (i, s) in seqs.iter_mut().enumerate() {
            if s.done {
                continue;
            }
            let engine = batch.select(i)?;
            let token_id = s.sampler.sample(&s.logits)?;
            if opts.stop_ids.contains(&token_id) {
                s.summary.stop_reason = "eos";
                s.done = true;
                continue;
            }
            let index = s.summary.generated_tokens;
            let event = TokenEvent {
                index,
                token_id,
                text: s.stream.push(token_id)?,
                top_logprobs: (opts.top_logprobs > 0)
                    .then(|| top_logprobs(&s.logits, opts.top_logprobs)),
                report: s.report.take(),
            };
            on_token(i, &event)?;
            s.summary.generated_tokens += 1;
            if index + 1 == opts.max_tokens {
                s.done = true;
                continue;
            }
            if engine.position() >= context {
                s.summary.stop_reason = "context";
                s.done = true;
                continue;
            }
            let t = Instant::now();
            s.logits = engine.decode(token_id)?;
            s.decode_secs += t.elapsed().as_secs_f64();
            s.summary.decode_steps += 1;
            kv_sum += engine.position();
            kv_steps += 1;
            s.report = engine.step_report();
        }
    }
    let wall_ms = t_all.elapsed().as_secs_f64() * 1e3;
    let mut sequences = Vec::with_capacity(seqs.len());
    for (i, mut s) in seqs.into_iter().enumerate() {
        let engine = batch.select(i)?;
        s.summary.trailing_text = s.stream.finish()?;
        s.summary.decode_ms = s.decode_secs * 1e3;
        s.summary.decode_tokens_per_s = if s.decode_secs > 0.0 {
            s.summary.decode_steps as f64 / s.decode_secs
        } else {
            0.0
        };
        s.summary.engine = engine.summary_report();
        sequences.push(s.summary);
    }
    let mean_decode_kv_len = if kv_steps > 0 {
        kv_sum.div_ceil(kv_steps)
    } else {
        0
    };
    let engine = batch.batch_report(mean_decode_kv_len);
    Ok(BatchSummary {
        sequences,
        wall_ms,
        mean_decode_kv_len,
        engine,
    })
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
