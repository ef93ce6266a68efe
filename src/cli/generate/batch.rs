//! `wafer generate --batch-prompts FILE`: several prompts (one a line) decoded
//! together over one copy of the model, each with its own KV cache, on the
//! reference or the mesh engine; per-sequence output and summaries, and for
//! the mesh the pipelined per-user and aggregate tokens/s of the batch.

use super::{dtype, read_text_file, Args, EngineKind, Source};
use anyhow::{bail, Result};
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use wafer_models::batch::{Batch, BatchEngine, MAX_BATCH};
use wafer_models::generate::{generate_batch, GenerateOptions, GenerateSummary, TokenEvent};
use wafer_models::reference::ReferenceModel;
use wafer_models::tokenizer::Tokenizer;
use wafer_models::ModelConfig;

/// The prompts of `--batch-prompts FILE`: one a line (a trailing newline
/// ends the last), none blank, 1 to [`MAX_BATCH`] of them.
pub(super) fn read_batch_prompts(path: &Path) -> Result<Vec<String>> {
    let text = read_text_file("--batch-prompts", path)?;
    parse_batch_prompts(&text, path)
}

fn parse_batch_prompts(text: &str, path: &Path) -> Result<Vec<String>> {
    let what = || format!("--batch-prompts {}", path.display());
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            bail!(
                "{}: line {} is blank (one prompt a line, no blank lines)",
                what(),
                i + 1
            );
        }
        if prompts.len() == MAX_BATCH {
            bail!("{}: more than {MAX_BATCH} prompts (one a line)", what());
        }
        prompts.push(line.to_string());
    }
    if prompts.is_empty() {
        bail!("{}: no prompts (the file is empty)", what());
    }
    Ok(prompts)
}

pub(super) fn run(
    args: &Args,
    source: &Source,
    config: ModelConfig,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    seed: u64,
) -> Result<()> {
    let limit = config.max_position_embeddings;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if let Some(c) = args.context {
        if c < longest {
            bail!("--context {c} is shorter than the longest prompt's {longest} tokens");
        }
    }
    let n = prompts.len();
    let t_load = Instant::now();
    let mut batch: Box<dyn BatchEngine> = match args.engine {
        EngineKind::Reference => {
            let weights = source.weights(&config, args.weight_precision.map(dtype))?;
            Box::new(Batch::new(ReferenceModel::new(config, weights), n)?)
        }
        EngineKind::Mesh => {
            let spec = super::super::common::load_spec(args.hw.as_deref().unwrap_or("wse3"))?;
            let weights = source.weights(&config, Some(spec.precision.weight_dtype))?;
            let setup = wafer_mesh::MeshSetup {
                context: args
                    .context
                    .unwrap_or((longest + args.max_tokens).min(limit)),
                spec,
                region: args.region,
                wafers: args.wafers,
                options: super::super::estimate::plan_options(args.k)?,
            };
            // One program (one copy of the tiles) whose regions hold every
            // sequence's KV cache; more sequences than fit are refused here.
            let mesh = wafer_mesh::MeshEngine::place_and_build_for_users(
                config, &weights, &setup, n as u64,
            )?;
            Box::new(Batch::new(mesh, n)?)
        }
        EngineKind::Fabric => bail!("--batch-prompts runs on --engine reference or mesh"),
    };
    let engine_name = batch.select(0)?.name().to_string();
    eprintln!(
        "[{engine_name} engine; {n} sequences; weights {} loaded in {:.2} s; seed {seed}]",
        source.path().display(),
        t_load.elapsed().as_secs_f64()
    );

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let json = args.json;
    let mut texts = vec![String::new(); n];
    let summary = generate_batch(
        batch.as_mut(),
        tokenizer,
        prompts,
        opts,
        |seq, ev: &TokenEvent| {
            if json {
                let mut line = super::token_json(ev);
                line["sequence"] = serde_json::json!(seq);
                writeln!(out, "{line}")?;
                out.flush()?;
            } else {
                // Interleaved tokens would be unreadable: each text is printed whole.
                texts[seq].push_str(&ev.text);
            }
            Ok(())
        },
    )?;
    let generated: usize = summary.sequences.iter().map(|s| s.generated_tokens).sum();
    let wall_s = summary.wall_ms / 1e3;
    if json {
        for (i, s) in summary.sequences.iter().enumerate() {
            let mut o = sequence_json(s, &engine_name);
            o["sequence"] = serde_json::json!(i);
            writeln!(out, "{}", serde_json::json!({ "summary": o }))?;
        }
        let mut o = serde_json::json!({
            "sequences": n,
            "generated_tokens": generated,
            "wall_ms": summary.wall_ms,
            "wall_tokens_per_s": (wall_s > 0.0).then(|| generated as f64 / wall_s),
            "engine": engine_name,
        });
        if let Some(r) = &summary.engine {
            for (k, v) in &r.json {
                o[k] = v.clone();
            }
        }
        writeln!(out, "{}", serde_json::json!({ "batch_summary": o }))?;
    } else {
        for (i, (t, s)) in texts.iter().zip(&summary.sequences).enumerate() {
            writeln!(out, "--- sequence {i} ---")?;
            writeln!(out, "{t}{}", s.trailing_text)?;
        }
    }
    out.flush()?;
    drop(out);
    for (i, s) in summary.sequences.iter().enumerate() {
        eprintln!(
            "sequence {i}: prompt tokens: {}  generated tokens: {}  (stopped: {})",
            s.prompt_tokens, s.generated_tokens, s.stop_reason
        );
        if let Some(t) = s.engine.as_ref().and_then(|r| r.text.as_ref()) {
            eprintln!("  {t}");
        }
    }
    eprintln!(
        "batch of {n}: {generated} tokens in {:.1} ms of wall clock ({:.1} tokens/s; seed {seed})",
        summary.wall_ms,
        if wall_s > 0.0 {
            generated as f64 / wall_s
        } else {
            0.0
        }
    );
    if let Some(t) = summary.engine.as_ref().and_then(|r| r.text.as_ref()) {
        eprintln!("{t}");
    }
    Ok(())
}

/// One sequence's summary object, as `generate --json` writes a run's.
fn sequence_json(s: &GenerateSummary, engine: &str) -> serde_json::Value {
    let decoded = s.decode_steps > 0;
    let mut o = serde_json::json!({
        "prompt_tokens": s.prompt_tokens,
        "generated_tokens": s.generated_tokens,
        "prefill_ms": s.prefill_ms,
        "decode_tokens_per_s": decoded.then_some(s.decode_tokens_per_s),
        "stop_reason": s.stop_reason,
        "engine": engine,
    });
    if let Some(r) = &s.engine {
        for (k, v) in &r.json {
            o[k] = v.clone();
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_lines_and_blank_lines_are_refused_by_number() {
        let p = Path::new("p.txt");
        assert_eq!(
            parse_batch_prompts("a b\nc\r\nd\n", p).unwrap(),
            vec!["a b", "c", "d"]
        );
        let err = parse_batch_prompts("a\n\nb\n", p).unwrap_err().to_string();
        assert!(
            err.contains("p.txt") && err.contains("line 2 is blank"),
            "{err}"
        );
        let err = parse_batch_prompts("a\n  \t\n", p).unwrap_err().to_string();
        assert!(err.contains("line 2 is blank"), "{err}");
        let err = parse_batch_prompts("", p).unwrap_err().to_string();
        assert!(err.contains("p.txt") && err.contains("no prompts"), "{err}");
        let many = "x\n".repeat(MAX_BATCH);
        assert_eq!(parse_batch_prompts(&many, p).unwrap().len(), MAX_BATCH);
        let err = parse_batch_prompts(&format!("{many}y\n"), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 256 prompts"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = read_batch_prompts(Path::new("/nonexistent/prompts.txt")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("--batch-prompts /nonexistent/prompts.txt"),
            "{msg}"
        );
    }
}
