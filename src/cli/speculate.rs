//! Speculative decoding in the CLI: the `--speculate` value of `wafer generate`
//! (method and K), the draft model's tokenizer check, the simulated price of a
//! speculative run, and `wafer estimate --speculate K --acceptance A`.
//! The pricing itself is `wafer_lower::cost::speculate`.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use wafer_core::{Cycles, WaferSpec};
use wafer_lower::cost::{
    decode_plan_with, speculation, verify_plan, PlanOptions, Speculation, MAX_SPECULATE_K,
};
use wafer_lower::estimate::{placement_for, EstimateOptions};
use wafer_lower::layout::Layout;
use wafer_models::generate::SpeculationStats;
use wafer_models::tokenizer::Tokenizer;
use wafer_models::ModelConfig;

/// Draft tokens per step when `--speculate` gives no K.
pub const DEFAULT_K: usize = 4;

/// Where the drafts come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    PromptLookup,
    /// A smaller model (directory or GGUF file) with the target's tokenizer.
    Draft(PathBuf),
}

/// `--speculate prompt-lookup[:K]` or `--speculate draft:DIR[:K]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Speculate {
    pub method: Method,
    pub k: usize,
}

impl Speculate {
    /// The JSON value of `speculate`.
    pub fn name(&self) -> &'static str {
        match self.method {
            Method::PromptLookup => "prompt-lookup",
            Method::Draft(_) => "draft",
        }
    }
}

fn parse_k(s: &str) -> Result<usize, String> {
    let k: usize = s
        .parse()
        .map_err(|_| format!("K must be a whole number of draft tokens, found {s:?}"))?;
    if k == 0 || k > MAX_SPECULATE_K {
        return Err(format!(
            "K must be from 1 to {MAX_SPECULATE_K} draft tokens, found {k}"
        ));
    }
    Ok(k)
}

impl FromStr for Speculate {
    type Err = String;

    fn from_str(s: &str) -> Result<Speculate, String> {
        let usage = "expected prompt-lookup[:K] or draft:DIR[:K]";
        if s == "prompt-lookup" {
            return Ok(Speculate {
                method: Method::PromptLookup,
                k: DEFAULT_K,
            });
        }
        if let Some(k) = s.strip_prefix("prompt-lookup:") {
            return Ok(Speculate {
                method: Method::PromptLookup,
                k: parse_k(k)?,
            });
        }
        if let Some(rest) = s.strip_prefix("draft:") {
            // A trailing `:digits` is K; the rest is the path.
            let (dir, k) = match rest.rsplit_once(':') {
                Some((d, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => {
                    (d, parse_k(k)?)
                }
                _ => (rest, DEFAULT_K),
            };
            if dir.is_empty() {
                return Err(format!("no draft model directory in {s:?}: {usage}"));
            }
            return Ok(Speculate {
                method: Method::Draft(PathBuf::from(dir)),
                k,
            });
        }
        Err(format!("unknown speculation method {s:?}: {usage}"))
    }
}

/// Text whose token ids the target's and the draft's tokenizers must agree on.
const PROBE: &str = "def add(a, b):\n    return a + b  # The quick brown fox, 1234 times!";

/// The draft model must share the target's tokenizer: the same vocabulary
/// size and the same ids for a probe text.
pub fn check_same_tokenizer(
    draft_path: &Path,
    target: (&ModelConfig, &Tokenizer),
    draft: (&ModelConfig, &Tokenizer),
) -> Result<()> {
    let what = format!("--speculate draft:{}", draft_path.display());
    if target.0.vocab_size != draft.0.vocab_size {
        bail!(
            "{what}: the draft model's vocabulary has {} tokens but the target's has {}: a draft model must share the target's tokenizer",
            draft.0.vocab_size,
            target.0.vocab_size
        );
    }
    let a = target.1.encode(PROBE, false)?;
    let b = draft.1.encode(PROBE, false)?;
    if a != b {
        bail!(
            "{what}: the draft model's tokenizer gives other token ids than the target's for {PROBE:?} (target {a:?}, draft {b:?}): a draft model must share the target's tokenizer"
        );
    }
    Ok(())
}

/// The layout a model is priced on: what `wafer place` / `wafer estimate`
/// choose for these options (the mesh engine's own for the same options).
pub fn layout_for(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    context: usize,
    region: Option<wafer_core::RegionShape>,
    wafers: Option<u32>,
) -> Result<Layout> {
    Ok(placement_for(
        spec,
        cfg,
        &EstimateOptions {
            wafers,
            region,
            strategy: Default::default(),
            context,
            prompt_tokens: 0,
        },
    )?
    .layout())
}

/// A speculative run's tokens from verification steps, priced on the wafer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunPrice {
    /// The same tokens, one decode step each.
    pub decode_tokens_per_s: f64,
    /// The verification steps (and the draft model's decode steps, if any).
    pub speculative_tokens_per_s: f64,
}

/// Prices every verification step of `stats` ([`verify_plan`] with its tokens
/// at its position), plus `draft`'s decode steps (one per draft token, at the
/// step's position, on its own layout), against one decode step per token
/// those steps yielded. `None` without a verification step.
pub fn price_run(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    opts: &PlanOptions,
    stats: &SpeculationStats,
    draft: Option<(&ModelConfig, &Layout)>,
) -> Option<RunPrice> {
    if stats.steps.is_empty() {
        return None;
    }
    let (mut tokens, mut plain, mut speculative) = (0usize, 0.0, 0.0);
    for s in &stats.steps {
        tokens += s.accepted + 1;
        for i in 0..=s.accepted {
            plain += decode_plan_with(spec, cfg, layout, s.position + i + 1, opts)
                .total()
                .get();
        }
        speculative += verify_plan(spec, cfg, layout, s.position, s.drafted + 1, opts)
            .total()
            .get();
        if let Some((dc, dl)) = draft {
            let one = decode_plan_with(spec, dc, dl, s.position + 1, opts).total();
            speculative += one.get() * s.drafted as f64;
        }
    }
    let rate = |cycles: f64| tokens as f64 * spec.clock_hz / cycles;
    Some(RunPrice {
        decode_tokens_per_s: rate(plain),
        speculative_tokens_per_s: rate(speculative),
    })
}

/// [`price_run`] for `wafer generate`: on `hw` (preset or TOML) with the
/// reduction trees of `--k`, the target on the placement of these options at
/// `context`, a draft model on its own placement. `None` without a
/// verification step.
pub fn price_generate_run(
    hw: &str,
    k: Option<u32>,
    cfg: &ModelConfig,
    draft: Option<&ModelConfig>,
    context: usize,
    (region, wafers): (Option<wafer_core::RegionShape>, Option<u32>),
    stats: &SpeculationStats,
) -> Result<Option<RunPrice>> {
    let spec = super::common::load_spec(hw)?;
    let opts = super::estimate::plan_options(k)?;
    let layout = layout_for(&spec, cfg, context, region, wafers)?;
    let draft = match draft {
        Some(dc) => Some((
            dc,
            layout_for(&spec, dc, context, None, None)
                .context("the draft model's own placement, to price its decode steps")?,
        )),
        None => None,
    };
    Ok(price_run(
        &spec,
        cfg,
        &layout,
        &opts,
        stats,
        draft.as_ref().map(|(c, l)| (*c, l)),
    ))
}

/// The summary keys of a speculative run (`--json` summary and human line).
pub fn summary_json(
    s: &Speculate,
    stats: &SpeculationStats,
    price: Option<RunPrice>,
    hardware: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("speculate".into(), json!(s.name()));
    m.insert("speculate_k".into(), json!(s.k));
    m.insert("speculate_steps".into(), json!(stats.steps.len()));
    m.insert("drafted_tokens".into(), json!(stats.drafted()));
    m.insert("accepted_tokens".into(), json!(stats.accepted()));
    m.insert("accepted_per_step".into(), json!(stats.accepted_per_step()));
    m.insert("acceptance_rate".into(), json!(stats.acceptance_rate()));
    m.insert("speculation_hardware".into(), json!(hardware));
    m.insert(
        "simulated_decode_tokens_per_s".into(),
        json!(price.map(|p| p.decode_tokens_per_s)),
    );
    m.insert(
        "simulated_speculative_tokens_per_s".into(),
        json!(price.map(|p| p.speculative_tokens_per_s)),
    );
    m
}

/// The human summary line of a speculative run.
pub fn summary_text(
    s: &Speculate,
    stats: &SpeculationStats,
    price: Option<RunPrice>,
    hardware: &str,
) -> String {
    let opt = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "n/a".to_string(),
    };
    let priced = match price {
        Some(p) => format!(
            "simulated on {hardware}: {:.1} tokens/s with speculation, {:.1} without ({:.2}x)",
            p.speculative_tokens_per_s,
            p.decode_tokens_per_s,
            p.speculative_tokens_per_s / p.decode_tokens_per_s
        ),
        None => "no verification step".to_string(),
    };
    format!(
        "speculation ({} K={}): {} steps, {} of {} drafts accepted (rate {}), {} accepted per step; {priced}",
        s.name(),
        s.k,
        stats.steps.len(),
        stats.accepted(),
        stats.drafted(),
        opt(stats.acceptance_rate(), 3),
        opt(stats.accepted_per_step(), 2),
    )
}

/// `wafer estimate`'s speculation flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct EstimateArgs {
    /// Also price speculative decoding with K draft tokens per verification
    /// step (1 to 64); needs --acceptance or --acceptance-from.
    #[arg(long, value_name = "K")]
    pub speculate: Option<usize>,
    /// Probability that a draft token is accepted (0 to 1), with --speculate.
    #[arg(long, value_name = "A", conflicts_with = "acceptance_from")]
    pub acceptance: Option<f64>,
    /// The acceptance_rate of a `wafer generate --speculate ... --json` output
    /// (its summary line), with --speculate.
    #[arg(long, value_name = "FILE")]
    pub acceptance_from: Option<PathBuf>,
    /// With --speculate: drafts come from this model (preset, directory or
    /// GGUF), charged K of its decode steps per verification step on its own
    /// placement; default: prompt lookup, charged nothing.
    #[arg(long, value_name = "MODEL")]
    pub draft_model: Option<String>,
}

/// The most bytes `--acceptance-from` reads (a long generate run's JSON lines).
const MAX_ACCEPTANCE_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The `acceptance_rate` of the summary line of a `generate --json` output.
fn acceptance_from(path: &Path) -> Result<f64> {
    let what = || format!("--acceptance-from {}", path.display());
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", what()))?;
    let mut text = String::new();
    file.take(MAX_ACCEPTANCE_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {} as UTF-8 text", what()))?;
    if text.len() as u64 > MAX_ACCEPTANCE_FILE_BYTES {
        bail!(
            "{}: more than {MAX_ACCEPTANCE_FILE_BYTES} bytes, not a generate --json output",
            what()
        );
    }
    let summary = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("summary").cloned())
        .with_context(|| {
            format!(
                "{}: no {{\"summary\": ...}} line; expected the output of `wafer generate --speculate ... --json`",
                what()
            )
        })?;
    match summary.get("acceptance_rate") {
        Some(serde_json::Value::Number(n)) => {
            let a = n.as_f64().unwrap_or(f64::NAN);
            if !(0.0..=1.0).contains(&a) {
                bail!("{}: acceptance_rate {a} is not from 0 to 1", what());
            }
            Ok(a)
        }
        Some(serde_json::Value::Null) => bail!(
            "{}: acceptance_rate is null (the run drafted nothing)",
            what()
        ),
        _ => bail!(
            "{}: the summary has no acceptance_rate; run `wafer generate` with --speculate and --json",
            what()
        ),
    }
}

/// The speculation figures `wafer estimate` adds on the estimate's `layout`,
/// or `None` without --speculate.
pub fn for_estimate(
    args: &EstimateArgs,
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    opts: &EstimateOptions,
    plan_opts: &PlanOptions,
    users: u64,
) -> Result<Option<(Speculation, &'static str)>> {
    let Some(k) = args.speculate else {
        for (flag, given) in [
            ("--acceptance", args.acceptance.is_some()),
            ("--acceptance-from", args.acceptance_from.is_some()),
            ("--draft-model", args.draft_model.is_some()),
        ] {
            if given {
                bail!("{flag} applies to speculative decoding only; add --speculate K");
            }
        }
        return Ok(None);
    };
    if k == 0 || k > MAX_SPECULATE_K {
        bail!("--speculate {k}: expected 1 to {MAX_SPECULATE_K} draft tokens per step");
    }
    if users > 1 {
        bail!("--speculate prices one user's decode; drop --users {users} or --speculate");
    }
    let acceptance = match (&args.acceptance, &args.acceptance_from) {
        (Some(a), _) => {
            if !(0.0..=1.0).contains(a) {
                bail!("--acceptance {a}: expected a probability from 0 to 1");
            }
            *a
        }
        (None, Some(f)) => acceptance_from(f)?,
        (None, None) => bail!(
            "--speculate {k} needs the draft acceptance rate: --acceptance A (0 to 1) or --acceptance-from FILE (a generate --json output)"
        ),
    };
    let (draft_cycles, drafter) = match &args.draft_model {
        None => (Cycles::ZERO, "prompt-lookup"),
        Some(m) => {
            let dcfg = super::common::load_model(m)
                .with_context(|| format!("--draft-model {m}"))?
                .1;
            if dcfg.vocab_size != cfg.vocab_size {
                bail!(
                    "--draft-model {m}: its vocabulary has {} tokens but the model's has {}: a draft model must share the tokenizer",
                    dcfg.vocab_size,
                    cfg.vocab_size
                );
            }
            let dl = placement_for(spec, &dcfg, opts)
                .with_context(|| format!("--draft-model {m} on its own placement"))?
                .layout();
            let one = decode_plan_with(spec, &dcfg, &dl, opts.context.max(1), plan_opts).total();
            (one, "draft-model")
        }
    };
    let s = speculation(
        spec,
        cfg,
        layout,
        opts.context,
        k,
        acceptance,
        draft_cycles,
        plan_opts,
    )?;
    Ok(Some((s, drafter)))
}

/// The JSON keys `wafer estimate --speculate` adds.
pub fn estimate_json(s: &Speculation, drafter: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("speculate_k".into(), json!(s.k));
    m.insert("speculate_drafter".into(), json!(drafter));
    m.insert("acceptance".into(), json!(s.acceptance));
    m.insert("tokens_per_verify".into(), json!(s.tokens_per_verify));
    m.insert("verify_cycles".into(), json!(s.verify_cycles.get()));
    m.insert("draft_cycles".into(), json!(s.draft_cycles.get()));
    m.insert("verify_over_decode".into(), json!(s.verify_over_decode));
    m.insert(
        "speculative_tokens_per_s".into(),
        json!(s.speculative_tokens_per_s),
    );
    m.insert("speculative_speedup".into(), json!(s.speedup));
    m
}

/// The text line `wafer estimate --speculate` adds.
pub fn estimate_text(s: &Speculation, drafter: &str) -> String {
    format!(
        "speculative decode (K = {}, acceptance {}, {drafter}): verify step {:.0} cycles = {:.2} decode steps for {} tokens; draft {:.0} cycles; {:.2} tokens per step = {:.1} tokens/s ({:.2}x {:.1})",
        s.k,
        s.acceptance,
        s.verify_cycles.get(),
        s.verify_over_decode,
        s.k + 1,
        s.draft_cycles.get(),
        s.tokens_per_verify,
        s.speculative_tokens_per_s,
        s.speedup,
        s.decode_tokens_per_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speculate_values_parse_with_their_k_or_the_default() {
        let p = |s: &str| s.parse::<Speculate>();
        assert_eq!(
            p("prompt-lookup"),
            Ok(Speculate {
                method: Method::PromptLookup,
                k: 4
            })
        );
        assert_eq!(p("prompt-lookup:8").unwrap().k, 8);
        assert_eq!(
            p("draft:/m/small:2"),
            Ok(Speculate {
                method: Method::Draft("/m/small".into()),
                k: 2
            })
        );
        assert_eq!(
            p("draft:C:/m/small").unwrap().method,
            Method::Draft("C:/m/small".into())
        );
        for bad in [
            "prompt-lookup:0",
            "prompt-lookup:65",
            "prompt-lookup:x",
            "draft:",
            "draft::3",
            "lookup",
        ] {
            assert!(p(bad).is_err(), "{bad} accepted");
        }
    }
}
