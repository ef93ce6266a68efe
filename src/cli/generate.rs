//! `wafer generate`: stream text from a model, on the reference CPU engine or
//! the simulated mesh.
//!
//! The argument names and the `--json` line format are a contract that users'
//! scripts and the project's checks rely on.

mod batch;

use super::common::parse_count;
use super::speculate::{Method, Speculate};
use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use wafer_core::DType;
use wafer_import::gguf::model::GgufModel;
use wafer_models::engine::Engine;
use wafer_models::generate::{
    generate, generate_speculative, stop_ids, GenerateOptions, TokenEvent,
};
use wafer_models::reference::ReferenceModel;
use wafer_models::sampling::SamplingParams;
use wafer_models::tokenizer::{Bounded, Tokenizer};
use wafer_models::weights::LlamaWeights;
use wafer_models::ModelConfig;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EngineKind {
    /// The dense CPU forward pass.
    Reference,
    /// The model executed on the simulated wafer mesh, with per-token cycles.
    Mesh,
    /// The mesh's values, with every step's cycles from the event-driven fabric
    /// simulator (each layer and the LM head run timing-only).
    Fabric,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

#[derive(clap::Args)]
#[command(
    after_help = "Flags that do nothing in the chosen mode are refused, not ignored: --top-k and --top-p need --temperature above 0, --top-logprobs needs --json, --weight-precision with --engine mesh must be the spec's own (f16 for wse3), --hw/--region/--wafers/--context for --engine mesh or fabric."
)]
pub struct Args {
    /// Model directory (Hugging Face layout) or GGUF file (run as stored: quantized
    /// weights stay quantized). Default: the cached SmolLM2-135M-Instruct GGUF, fetched on first use.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt text (or use --prompt / --prompt-file).
    #[arg(value_name = "PROMPT", conflicts_with_all = ["prompt", "prompt_file"])]
    prompt_arg: Option<String>,
    /// The prompt text.
    #[arg(long, conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from a file (UTF-8, at most 16 MiB).
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate (tokens or with a k suffix); at most the model's
    /// max_position_embeddings, and generation also stops at the end of the context.
    #[arg(long, default_value = "128", value_parser = parse_count)]
    max_tokens: usize,
    /// Do not stop at the model's end-of-sequence tokens: generate --max-tokens
    /// tokens (for benchmarks; the summary's stop_reason is then never "eos").
    #[arg(long)]
    ignore_eos: bool,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample only among the K most likely tokens (only with --temperature above 0).
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities sum to P
    /// (default 1: all; only with --temperature above 0).
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Random seed for sampling (default: a fresh one, printed on stderr before generation).
    #[arg(long)]
    seed: Option<u64>,
    /// Report the K most likely next tokens and their log-probabilities per step (only with --json).
    #[arg(long, value_name = "K")]
    top_logprobs: Option<usize>,
    /// One JSON object per generated token on stdout, then a summary object.
    #[arg(long)]
    json: bool,
    /// Which engine runs the model.
    #[arg(long, value_enum, default_value_t = EngineKind::Reference)]
    engine: EngineKind,
    /// Hold weights at this precision (rounded at load); default: as stored. Arithmetic is f32.
    /// With --engine mesh only the spec's own weight precision (f16 for wse3) is accepted.
    #[arg(long, value_enum)]
    weight_precision: Option<Precision>,
    /// With --engine mesh: hardware preset (wse3, wse2) or TOML spec file (default wse3).
    #[arg(long)]
    hw: Option<String>,
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
    /// With --engine mesh: KV positions to place room for, tokens or with a k suffix
    /// (default: prompt + --max-tokens, at most the model's max_position_embeddings).
    #[arg(long, value_parser = parse_count)]
    context: Option<usize>,
    /// Speculative decoding, greedy only (--temperature 0): `prompt-lookup[:K]`
    /// drafts K tokens (default 4) copied from what followed the most recent
    /// earlier occurrence of the last 3 tokens (else 2, else 1) in the prompt and
    /// text so far; `draft:DIR[:K]` drafts them greedily with a smaller model
    /// (directory or GGUF file) sharing the tokenizer. The output is exactly that
    /// without speculation; the summary adds the acceptance and the simulated
    /// tokens/s with and without it.
    #[arg(long, value_name = "METHOD")]
    speculate: Option<Speculate>,
    /// Decode several prompts together, one a line (UTF-8, no blank lines, at
    /// most 256), each with its own KV cache over one copy of the weights; each
    /// sequence's tokens are those of its prompt run alone. With --engine mesh
    /// the summary adds the pipelined per-user and aggregate tokens/s.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompt_arg", "prompt", "prompt_file", "speculate"])]
    batch_prompts: Option<PathBuf>,
}

fn dtype(p: Precision) -> DType {
    match p {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
        Precision::Bf16 => DType::BF16,
    }
}

/// Flags that do nothing in the mode chosen are refused, naming what they need:
/// a run never silently ignores an option.
fn check_flags_apply(args: &Args) -> Result<()> {
    let greedy = args.temperature == 0.0;
    if greedy && args.top_k.is_some() {
        bail!("--top-k only applies when sampling; add --temperature above 0 (found 0: greedy)");
    }
    if greedy && args.top_p.is_some() {
        bail!("--top-p only applies when sampling; add --temperature above 0 (found 0: greedy)");
    }
    if let (Some(s), EngineKind::Fabric) = (&args.speculate, args.engine) {
        bail!(
            "--speculate {} is priced by the cost plan, not yet on the fabric; use --engine mesh or reference",
            s.name()
        );
    }
    if let (Some(_), EngineKind::Fabric) = (&args.batch_prompts, args.engine) {
        bail!("--batch-prompts runs on --engine reference or mesh (the fabric simulator times one sequence); use --engine mesh");
    }
    if let (Some(s), false) = (&args.speculate, greedy) {
        bail!(
            "--speculate {} is greedy only (rejection-sampling acceptance is not implemented); use --temperature 0 (found {})",
            s.name(),
            args.temperature
        );
    }
    if args.top_logprobs.is_some() && !args.json {
        bail!("--top-logprobs is reported in the JSON lines only; add --json");
    }
    match args.engine {
        EngineKind::Mesh | EngineKind::Fabric => {
            // The mesh holds the spec's 16-bit weights: asking for those is fine,
            // asking for another precision would be silently ignored.
            if let Some(p) = args.weight_precision {
                let hw = args.hw.as_deref().unwrap_or("wse3");
                let held = super::common::load_spec(hw)?.precision.weight_dtype;
                if dtype(p) != held {
                    bail!(
                        "--weight-precision {}: --engine mesh holds the weights at {hw}'s {}; drop the flag or give that precision",
                        format!("{p:?}").to_lowercase(),
                        format!("{held:?}").to_lowercase()
                    );
                }
            }
        }
        EngineKind::Reference => {
            let mesh_only = [
                ("--hw", args.hw.is_some()),
                ("--region", args.region.is_some()),
                ("--wafers", args.wafers.is_some()),
                ("--k", args.k.is_some()),
                ("--context", args.context.is_some()),
            ];
            if let Some((flag, _)) = mesh_only.iter().find(|(_, given)| *given) {
                bail!("{flag} applies to --engine mesh or fabric only; add --engine mesh");
            }
        }
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    // Cheap checks first, so a bad flag fails before the model loads.
    check_flags_apply(&args)?;
    check_stdout_open()?;
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
        top_p: args.top_p.unwrap_or(1.0),
        seed,
    };
    sampling.validate()?;
    let text = match (&args.prompt_arg, &args.prompt, &args.prompt_file) {
        (Some(p), _, _) | (_, Some(p), _) => p.clone(),
        (_, _, Some(f)) => read_prompt_file(f)?,
        _ if args.batch_prompts.is_some() => String::new(),
        _ => bail!(
            "no prompt: give it as an argument, with --prompt TEXT, or with --prompt-file FILE"
        ),
    };

    let source = match &args.model {
        Some(p) if p.is_file() => Source::Gguf(Box::new(GgufModel::open(p)?)),
        Some(d) => {
            check_model_dir(d)?;
            Source::Dir(d.clone())
        }
        None => Source::Gguf(Box::new(GgufModel::open(
            &wafer_import::fetch::default_gguf_path()?,
        )?)),
    };
    let config = match &source {
        Source::Dir(dir) => ModelConfig::from_dir(dir)?,
        Source::Gguf(m) => m.config.clone(),
    };
    let limit = config.max_position_embeddings;
    // Where max_position_embeddings came from, for messages.
    let config_path = match &source {
        Source::Dir(dir) => dir.join("config.json"),
        Source::Gguf(m) => m.path().to_path_buf(),
    };
    if args.max_tokens > limit {
        bail!(
            "--max-tokens {} is more than the model's context of {limit} tokens (max_position_embeddings in {})",
            args.max_tokens,
            config_path.display()
        );
    }
    if let Some(c) = args.context {
        if c > limit {
            bail!(
                "--context {c} is more than the model's context of {limit} tokens (max_position_embeddings in {}); the model cannot run past it",
                config_path.display()
            );
        }
    }
    let owned_tokenizer;
    let tokenizer = match &source {
        Source::Dir(dir) => {
            owned_tokenizer = Tokenizer::from_dir(dir)?;
            &owned_tokenizer
        }
        Source::Gguf(m) => &m.tokenizer,
    };
    let mut warned = false;
    let mut encode = |text: &str, what: &str| -> Result<Vec<u32>> {
        let encoded = if args.chat {
            let (rendered, own) = tokenizer.apply_chat_template(text)?;
            if !own && !warned {
                warned = true;
                eprintln!(
                    "warning: {} has no chat template; using ChatML",
                    config_path.display()
                );
            }
            // The template already carries every special token it wants.
            tokenizer.encode_bounded(&rendered, false, limit)?
        } else {
            tokenizer.encode_bounded(text, true, limit)?
        };
        match encoded {
            Bounded::Fits(ids) => Ok(ids),
            Bounded::TooLong { tokens, exact } => bail!(
                "{what} has {}{} tokens but the model's context holds {} (max_position_embeddings in {})",
                if exact { "" } else { "at least " },
                tokens,
                limit,
                config_path.display()
            ),
        }
    };
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
        stop_ids: match &source {
            _ if args.ignore_eos => Vec::new(),
            Source::Dir(dir) => stop_ids(dir, &config)?,
            Source::Gguf(m) => m.stop_ids(),
        },
    };
    if let Some(file) = &args.batch_prompts {
        let lines = batch::read_batch_prompts(file)?;
        let prompts = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                encode(
                    l,
                    &format!(
                        "the prompt on line {} of --batch-prompts {}",
                        i + 1,
                        file.display()
                    ),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        return batch::run(&args, &source, config, tokenizer, &prompts, &opts, seed);
    }
    let prompt = encode(&text, "the prompt")?;
    if let Some(c) = args.context {
        if c < prompt.len() {
            bail!(
                "--context {c} is shorter than the prompt's {} tokens",
                prompt.len()
            );
        }
    }

    // The draft model loads (and its tokenizer is checked) before the target's weights.
    let mut drafter: Option<Box<dyn wafer_models::speculate::Drafter>> = None;
    let mut draft_config = None;
    if let Some(s) = &args.speculate {
        drafter = Some(match &s.method {
            Method::PromptLookup => Box::new(wafer_models::speculate::PromptLookup),
            Method::Draft(path) => {
                let what = || format!("--speculate draft:{}", path.display());
                let draft = if path.is_file() {
                    Source::Gguf(Box::new(GgufModel::open(path).with_context(what)?))
                } else if path.is_dir() {
                    Source::Dir(path.clone())
                } else {
                    bail!("{}: no such model directory or GGUF file", what());
                };
                let dconfig = match &draft {
                    Source::Dir(dir) => ModelConfig::from_dir(dir).with_context(what)?,
                    Source::Gguf(m) => m.config.clone(),
                };
                let owned;
                let dtok = match &draft {
                    Source::Dir(dir) => {
                        owned = Tokenizer::from_dir(dir).with_context(what)?;
                        &owned
                    }
                    Source::Gguf(m) => &m.tokenizer,
                };
                super::speculate::check_same_tokenizer(
                    path,
                    (&config, tokenizer),
                    (&dconfig, dtok),
                )?;
                let weights = draft.weights(&dconfig, None).with_context(what)?;
                draft_config = Some(dconfig.clone());
                Box::new(wafer_models::speculate::DraftModel::new(Box::new(
                    ReferenceModel::new(dconfig, weights),
                )))
            }
        });
    }
    // What the speculative run is priced on: the mesh's own hardware and
    // placement options, or wse3's default placement for the reference engine.
    let (price_hw, price_region, price_wafers) = match args.engine {
        EngineKind::Mesh | EngineKind::Fabric => (
            args.hw.clone().unwrap_or("wse3".into()),
            args.region,
            args.wafers,
        ),
        EngineKind::Reference => ("wse3".to_string(), None, None),
    };
    let price_context = args
        .context
        .unwrap_or((prompt.len() + args.max_tokens).min(limit));
    let price_config = config.clone();

    let t_load = Instant::now();
    let precision = args.weight_precision.map(dtype);
    let mut engine: Box<dyn Engine> = match args.engine {
        EngineKind::Reference => {
            let weights = source.weights(&config, precision)?;
            Box::new(ReferenceModel::new(config, weights))
        }
        EngineKind::Mesh | EngineKind::Fabric => {
            let spec = super::common::load_spec(args.hw.as_deref().unwrap_or("wse3"))?;
            // The mesh holds the spec's 16-bit weights whatever --weight-precision says.
            let weights = source.weights(&config, Some(spec.precision.weight_dtype))?;
            let setup = wafer_mesh::MeshSetup {
                // Generation ends at the model's context anyway, so the default
                // never places room for positions the model cannot reach.
                context: args
                    .context
                    .unwrap_or((prompt.len() + args.max_tokens).min(limit)),
                spec,
                region: args.region,
                wafers: args.wafers,
                options: super::estimate::plan_options(args.k)?,
            };
            let mesh = wafer_mesh::MeshEngine::place_and_build(config, &weights, &setup)?;
            Box::new(match args.engine {
                EngineKind::Fabric => mesh.with_fabric_timing(),
                _ => mesh,
            })
        }
    };
    let load_s = t_load.elapsed().as_secs_f64();
    // Before any token, so an interrupted sampled run can be repeated.
    eprintln!(
        "[{} engine; weights {} loaded in {:.2} s; seed {}]",
        engine.name(),
        source.path().display(),
        load_s,
        seed
    );

    let stdout = std::io::stdout();
    // Per-token reports go to stderr as they come, except when stdout and stderr
    // are the same terminal: there they wait until the text is done, so they
    // never land in the middle of the streamed line.
    let defer_reports = stdout.is_terminal() && std::io::stderr().is_terminal();
    let mut out = stdout.lock();
    let json = args.json;
    let mut step_reports: Vec<String> = Vec::new();
    let on_token = |ev: &TokenEvent| {
        if json {
            writeln!(out, "{}", token_json(ev))?;
        } else {
            write!(out, "{}", ev.text)?;
            // Per-token reports go to stderr after the text, so they never land in
            // the middle of the streamed line on a terminal.
            if let Some(t) = ev.report.as_ref().and_then(|r| r.text.as_ref()) {
                let line = format!("token {:>3} {:<14} {t}", ev.index, format!("{:?}", ev.text));
                if defer_reports {
                    step_reports.push(line);
                } else {
                    eprintln!("{line}");
                }
            }
        }
        out.flush()?;
        Ok(())
    };
    let summary = match (&args.speculate, drafter.as_mut()) {
        (Some(s), Some(d)) => generate_speculative(
            engine.as_mut(),
            tokenizer,
            &prompt,
            &opts,
            d.as_mut(),
            s.k,
            on_token,
        )?,
        _ => generate(engine.as_mut(), tokenizer, &prompt, &opts, on_token)?,
    };
    // The speculative run's figures, priced on the wafer; a run that cannot be
    // placed there still reports its acceptance.
    let speculation = match (&args.speculate, &summary.speculation) {
        (Some(s), Some(stats)) => {
            let price = super::speculate::price_generate_run(
                &price_hw,
                args.k,
                &price_config,
                draft_config.as_ref(),
                price_context,
                (price_region, price_wafers),
                stats,
            );
            let price = price.unwrap_or_else(|e| {
                eprintln!("warning: speculation not priced on {price_hw}: {e:#}");
                None
            });
            Some((
                super::speculate::summary_json(s, stats, price, &price_hw),
                super::speculate::summary_text(s, stats, price, &price_hw),
            ))
        }
        _ => None,
    };
    // Without a decode step (one token, or an end-of-sequence first) there is no
    // decode rate: null in JSON, n/a in text, never 0.
    let decoded = summary.decode_steps > 0;
    if json {
        let mut s = serde_json::json!({
            "prompt_tokens": summary.prompt_tokens,
            "generated_tokens": summary.generated_tokens,
            "prefill_ms": summary.prefill_ms,
            "decode_tokens_per_s": decoded.then_some(summary.decode_tokens_per_s),
            "stop_reason": summary.stop_reason,
            "engine": engine.name(),
        });
        if let Some(r) = &summary.engine {
            for (k, v) in &r.json {
                s[k] = v.clone();
            }
        }
        if let Some((j, _)) = &speculation {
            for (k, v) in j {
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
        "prompt tokens: {}  generated tokens: {}  prefill: {:.1} ms ({:.1} tokens/s)  decode: {}  (stopped: {}; seed {seed})",
        summary.prompt_tokens,
        summary.generated_tokens,
        summary.prefill_ms,
        summary.prompt_tokens as f64 / (summary.prefill_ms / 1e3),
        if decoded {
            format!("{:.2} tokens/s", summary.decode_tokens_per_s)
        } else {
            "n/a (no decode step)".to_string()
        },
        summary.stop_reason
    );
    if let Some(t) = summary.engine.as_ref().and_then(|r| r.text.as_ref()) {
        eprintln!("{t}");
    }
    if let Some((_, t)) = &speculation {
        eprintln!("{t}");
    }
    Ok(())
}

/// Where the model comes from: a Hugging Face-style directory, or a GGUF file
/// run as stored.
enum Source {
    Dir(PathBuf),
    Gguf(Box<GgufModel>),
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Source::Dir(d) => d,
            Source::Gguf(m) => m.path(),
        }
    }

    /// The weights, at `precision` (`None`: as stored).
    fn weights(&self, config: &ModelConfig, precision: Option<DType>) -> Result<LlamaWeights> {
        match self {
            Source::Dir(dir) => LlamaWeights::load_dir(dir, config, precision),
            Source::Gguf(m) => m.weights(precision),
        }
    }
}

/// `--model` must be a directory with weights (a GGUF file is taken before this); a shape preset name (which
/// `place` and `estimate` take) gets a hint rather than "cannot read NAME/config.json".
fn check_model_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let arg = dir.display().to_string();
    if wafer_models::presets::lookup(&arg).is_some() {
        bail!(
            "--model {arg} is a shape preset (see `wafer models`): presets have shapes but no weights, for place, estimate and sweep; \
             generate needs a model directory (config.json, tokenizer.json, safetensors) or a GGUF file, or no --model for the cached SmolLM2-135M-Instruct"
        );
    }
    if dir.exists() {
        bail!("--model {arg}: expected a model directory or a GGUF file, found neither (a device, pipe or socket?)");
    }
    bail!("--model {arg}: no such file or directory (expected a model directory with config.json, tokenizer.json and safetensors weights, or a GGUF file)")
}

/// With standard output closed (`wafer generate ... >&-`), the text would be
/// lost while the run exits 0: Rust's runtime reopens a closed descriptor 1 on
/// /dev/null at start-up, read-write. A shell's `>/dev/null` opens it write-only,
/// so only the reopened descriptor is refused.
fn check_stdout_open() -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: fstat fills the zeroed struct it is given; fcntl(F_GETFL) only
        // reads the descriptor's flags.
        let (stat_ok, st, flags) = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            let ok = libc::fstat(1, &mut st) == 0;
            (ok, st, libc::fcntl(1, libc::F_GETFL))
        };
        // dev_t is u64 on Linux but not everywhere.
        #[allow(clippy::unnecessary_cast)]
        let reopened_null = stat_ok
            && (st.st_mode & libc::S_IFMT) == libc::S_IFCHR
            && std::fs::metadata("/dev/null").is_ok_and(|n| n.rdev() == st.st_rdev as u64)
            && flags >= 0
            && (flags & libc::O_ACCMODE) == libc::O_RDWR;
        if !stat_ok || reopened_null {
            bail!("standard output is closed: there is nowhere to write the generated text");
        }
    }
    Ok(())
}

/// The largest `--prompt-file` read, in bytes: far more text than any model's
/// context holds, but a bound, so `/dev/zero` or a wrong file fails at once.
pub const MAX_PROMPT_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads `--prompt-file`, refusing more than [`MAX_PROMPT_FILE_BYTES`] (without
/// reading past the limit) and text that is not UTF-8.
fn read_prompt_file(path: &Path) -> Result<String> {
    read_text_file("--prompt-file", path)
}

/// Reads the file `flag` names, as [`read_prompt_file`] does.
fn read_text_file(flag: &str, path: &Path) -> Result<String> {
    let what = || format!("{flag} {}", path.display());
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", what()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", what()))?;
    if meta.is_dir() {
        bail!("{}: expected a text file, found a directory", what());
    }
    let limit = format!("the {MAX_PROMPT_FILE_BYTES} bytes (16 MiB) a prompt file may hold");
    if meta.is_file() && meta.len() > MAX_PROMPT_FILE_BYTES {
        bail!("{}: {} bytes is more than {limit}", what(), meta.len());
    }
    let mut bytes = Vec::new();
    file.take(MAX_PROMPT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", what()))?;
    if bytes.len() as u64 > MAX_PROMPT_FILE_BYTES {
        // A device or pipe: its size is unknown, only that it goes past the limit.
        bail!("{}: holds more than {limit}", what());
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            what(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// A seed from the clock and process id, for runs that did not ask for one.
fn rand_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ ((std::process::id() as u64) << 32)
}

/// One generated token as its `--json` line: index, id, text, the top
/// log-probabilities when asked for, and the engine's per-token report.
pub(crate) fn token_json(ev: &TokenEvent) -> serde_json::Value {
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
    line
}
