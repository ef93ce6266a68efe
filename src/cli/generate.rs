//! `wafer generate`: stream text from a model, on the reference CPU engine.
//!
//! The argument names and the `--json` line format are a contract that users'
//! scripts and the project's checks rely on (issue 2, point 7).

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use wafer_core::DType;
use wafer_models::engine::Engine;
use wafer_models::generate::{generate, stop_ids, GenerateOptions, TokenEvent};
use wafer_models::reference::ReferenceModel;
use wafer_models::sampling::SamplingParams;
use wafer_models::tokenizer::Tokenizer;
use wafer_models::weights::LlamaWeights;
use wafer_models::ModelConfig;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EngineKind {
    /// The dense CPU forward pass.
    Reference,
    /// The model executed on the simulated wafer mesh, with per-token cycles.
    Mesh,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (Hugging Face layout). Default: the cached SmolLM2-135M-Instruct, fetched on first use.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt text (or use --prompt / --prompt-file).
    #[arg(value_name = "PROMPT", conflicts_with_all = ["prompt", "prompt_file"])]
    prompt_arg: Option<String>,
    /// The prompt text.
    #[arg(long, conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample only among the K most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities sum to P.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Random seed for sampling (default: a fresh one, printed in the summary).
    #[arg(long)]
    seed: Option<u64>,
    /// Report the K most likely next tokens and their log-probabilities per step (with --json).
    #[arg(long, value_name = "K")]
    top_logprobs: Option<usize>,
    /// One JSON object per generated token on stdout, then a summary object.
    #[arg(long)]
    json: bool,
    /// Which engine runs the model.
    #[arg(long, value_enum, default_value_t = EngineKind::Reference)]
    engine: EngineKind,
    /// Hold weights at this precision (rounded at load); default: as stored. Arithmetic is f32.
    #[arg(long, value_enum)]
    weight_precision: Option<Precision>,
    /// With --engine mesh: hardware preset (wse3, wse2) or TOML spec file.
    #[arg(long, default_value = "wse3")]
    hw: String,
    /// With --engine mesh: fixed region size WIDTHxHEIGHT (default: chosen by the placement).
    #[arg(long, value_name = "PxQ")]
    region: Option<wafer_core::RegionShape>,
    /// With --engine mesh: number of wafers (default: the fewest that fit).
    #[arg(long)]
    wafers: Option<u32>,
    /// With --engine mesh: K of every reduction tree the mesh runs and charges
    /// (levels of chains; 1 = chain); default 2, as for `wafer estimate --k`.
    #[arg(long)]
    k: Option<u32>,
    /// With --engine mesh: KV positions to place room for (default: prompt + --max-tokens).
    #[arg(long)]
    context: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    // Cheap checks first, so a bad flag fails before the model loads.
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1, found 0");
    }
    if args.top_logprobs == Some(0) {
        bail!("--top-logprobs must be at least 1, found 0");
    }
    let seed = args.seed.unwrap_or_else(rand_seed);
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed,
    };
    sampling.validate()?;
    let text = match (&args.prompt_arg, &args.prompt, &args.prompt_file) {
        (Some(p), _, _) | (_, Some(p), _) => p.clone(),
        (_, _, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read --prompt-file {}", f.display()))?,
        _ => bail!(
            "no prompt: give it as an argument, with --prompt TEXT, or with --prompt-file FILE"
        ),
    };

    let dir = match &args.model {
        Some(d) => d.clone(),
        None => wafer_models::fetch::default_model_dir()?,
    };
    let config = ModelConfig::from_dir(&dir)?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    let prompt = if args.chat {
        let (rendered, own) = tokenizer.apply_chat_template(&text)?;
        if !own {
            eprintln!(
                "warning: {} has no chat template; using ChatML",
                dir.display()
            );
        }
        // The template already carries every special token it wants.
        tokenizer.encode(&rendered, false)?
    } else {
        tokenizer.encode(&text, true)?
    };
    if prompt.len() > config.max_position_embeddings {
        bail!(
            "the prompt has {} tokens but the model's context holds {} (max_position_embeddings in {})",
            prompt.len(),
            config.max_position_embeddings,
            dir.join("config.json").display()
        );
    }
    if let Some(k) = args.top_logprobs {
        if k > config.vocab_size {
            bail!(
                "--top-logprobs {k} is larger than the vocabulary ({})",
                config.vocab_size
            );
        }
    }
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
        top_logprobs: args.top_logprobs.unwrap_or(0),
        stop_ids: stop_ids(&dir, &config)?,
    };

    let t_load = Instant::now();
    let precision = args.weight_precision.map(|p| match p {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
        Precision::Bf16 => DType::BF16,
    });
    let mut engine: Box<dyn Engine> = match args.engine {
        EngineKind::Reference => {
            let weights = LlamaWeights::load_dir(&dir, &config, precision)?;
            Box::new(ReferenceModel::new(config, weights))
        }
        EngineKind::Mesh => {
            let spec = super::common::load_spec(&args.hw)?;
            // The mesh holds the spec's 16-bit weights whatever --weight-precision says.
            let weights = LlamaWeights::load_dir(&dir, &config, Some(spec.precision.weight_dtype))?;
            let setup = wafer_models::mesh::MeshSetup {
                context: args.context.unwrap_or(prompt.len() + args.max_tokens),
                spec,
                region: args.region,
                wafers: args.wafers,
                options: super::estimate::plan_options(args.k)?,
            };
            Box::new(wafer_models::mesh::MeshEngine::place_and_build(
                config, &weights, &setup,
            )?)
        }
    };
    let load_s = t_load.elapsed().as_secs_f64();

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let json = args.json;
    let mut step_reports: Vec<String> = Vec::new();
    let summary = generate(
        engine.as_mut(),
        &tokenizer,
        &prompt,
        &opts,
        |ev: &TokenEvent| {
            if json {
                let mut line = serde_json::json!({
                    "index": ev.index,
                    "token_id": ev.token_id,
                    "text": ev.text,
                });
                if let Some(top) = &ev.top_logprobs {
                    line["top_logprobs"] = serde_json::json!(top
                        .iter()
                        .map(|&(id, lp)| serde_json::json!([id, lp]))
                        .collect::<Vec<_>>());
                }
                if let Some(r) = &ev.report {
                    for (k, v) in &r.json {
                        line[k] = v.clone();
                    }
                }
                writeln!(out, "{line}")?;
            } else {
                write!(out, "{}", ev.text)?;
                // Per-token reports go to stderr after the text, so they never land in
                // the middle of the streamed line on a terminal.
                if let Some(t) = ev.report.as_ref().and_then(|r| r.text.as_ref()) {
                    step_reports.push(format!(
                        "token {:>3} {:<14} {t}",
                        ev.index,
                        format!("{:?}", ev.text)
                    ));
                }
            }
            out.flush()?;
            Ok(())
        },
    )?;
    if json {
        let mut s = serde_json::json!({
            "prompt_tokens": summary.prompt_tokens,
            "generated_tokens": summary.generated_tokens,
            "prefill_ms": summary.prefill_ms,
            "decode_tokens_per_s": summary.decode_tokens_per_s,
            "stop_reason": summary.stop_reason,
            "engine": engine.name(),
        });
        if let Some(r) = &summary.engine {
            for (k, v) in &r.json {
                s[k] = v.clone();
            }
        }
        writeln!(out, "{}", serde_json::json!({ "summary": s }))?;
    } else {
        writeln!(out, "{}", summary.trailing_text)?;
    }
    out.flush()?;
    drop(out);
    for line in &step_reports {
        eprintln!("{line}");
    }

    eprintln!(
        "[{} engine; weights {} loaded in {:.2} s; seed {}]",
        engine.name(),
        dir.display(),
        load_s,
        seed
    );
    eprintln!(
        "prompt tokens: {}  generated tokens: {}  prefill: {:.1} ms ({:.1} tokens/s)  decode: {:.2} tokens/s  (stopped: {})",
        summary.prompt_tokens,
        summary.generated_tokens,
        summary.prefill_ms,
        summary.prompt_tokens as f64 / (summary.prefill_ms / 1e3),
        summary.decode_tokens_per_s,
        summary.stop_reason
    );
    if let Some(t) = summary.engine.as_ref().and_then(|r| r.text.as_ref()) {
        eprintln!("{t}");
    }
    Ok(())
}

/// A seed from the clock and process id, for runs that did not ask for one.
fn rand_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ ((std::process::id() as u64) << 32)
}
