//! `wafer plan`: which models, on how many wafers, with which region shape,
//! reach a decode rate per user at a context (and optionally a time to first
//! token): the search of `wafer_lower::plan`, printed as a ranked table with
//! the `wafer estimate` flags that reproduce every figure, the models that miss and why, and
//! optionally a PNG of the frontier (decode tokens/s against context).

use super::common::{
    check_png_path, load_model, load_spec, parse_positive_count, warn_past_model_context,
    write_atomically, DEFAULT_CONTEXT,
};
use super::latency::ClientArgs;
use anyhow::{bail, Result};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use wafer_lower::cost::MAX_SPECULATE_K;
use wafer_lower::placement::MAX_USERS;
use wafer_lower::plan::{
    frontier, frontier_contexts, plan_model, rank, searched_shapes, Candidate, ModelPlan,
    PlanModel, SearchOptions, SpeculateTarget, Targets, DEFAULT_TOP, MAX_PLAN_WAFERS, MAX_TOP,
};
use wafer_models::presets;

/// The most models one `--models` list may name.
pub const MAX_MODELS: usize = 64;

#[derive(clap::Args)]
pub struct Args {
    /// Decode tokens/s each user must see.
    #[arg(long)]
    pub tokens_per_s: f64,
    /// KV length every user's decode runs at: tokens, or with a k suffix
    /// (128k = 131,072, as `estimate --context`).
    #[arg(long, default_value = DEFAULT_CONTEXT, value_parser = parse_positive_count)]
    pub context: usize,
    /// Most time to first token, milliseconds, for a --prompt-tokens prompt.
    #[arg(long)]
    pub ttft_ms: Option<f64>,
    /// Prompt length for the time to first token (tokens or with a k suffix).
    #[arg(long, default_value = "4096", value_parser = parse_positive_count)]
    pub prompt_tokens: usize,
    /// Users in flight (1 to 65536), each with its own KV cache at the context;
    /// the target is each user's rate. `auto`: as many users as each
    /// configuration holds while each still sees the target (ranked by
    /// aggregate tokens/s).
    #[arg(long, default_value = "1", value_parser = parse_users)]
    pub users: Users,
    /// The most wafers searched (1 to 256).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=MAX_PLAN_WAFERS as i64))]
    pub max_wafers: u32,
    /// `all` (every preset of `wafer models`) or a comma list of presets,
    /// model directories or GGUF files.
    #[arg(long, default_value = "all")]
    pub models: String,
    /// Hardware preset (wse3, wse2) or a TOML spec file.
    #[arg(long, default_value = "wse3")]
    pub hw: String,
    /// Search every wafer count up to --max-wafers, not only up to the first
    /// that meets the targets.
    #[arg(long)]
    pub all: bool,
    /// The most configurations listed per model and wafer count (1 to 1000):
    /// the layouts (region, strategy) with the highest rates among those
    /// meeting the target, each with its fastest K.
    #[arg(long, default_value_t = DEFAULT_TOP, value_parser = parse_top)]
    pub top: usize,
    #[arg(long)]
    pub json: bool,
    /// Draw the frontier (decode tokens/s against context, per model, on the
    /// wafers the plan chose) to this PNG.
    #[arg(long)]
    pub png: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Prompt-lookup speculative decoding with K drafts a step (1 to 64):
    /// configurations are judged on their speculative rate (needs --acceptance;
    /// one user only).
    #[arg(long, requires = "acceptance", value_parser = clap::value_parser!(u64).range(1..=MAX_SPECULATE_K as u64))]
    pub speculate: Option<u64>,
    /// With --speculate: the rate a draft token is accepted at (0 to 1), e.g.
    /// measured by `wafer generate --speculate ... --json`.
    #[arg(long, requires = "speculate")]
    pub acceptance: Option<f64>,
}

/// `--users`: a count, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Users {
    Fixed(u64),
    Auto,
}

impl std::fmt::Display for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Users::Fixed(n) => write!(f, "{n}"),
            Users::Auto => write!(f, "auto"),
        }
    }
}

fn parse_users(s: &str) -> Result<Users, String> {
    if s.trim() == "auto" {
        return Ok(Users::Auto);
    }
    match s.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_USERS).contains(&n) => Ok(Users::Fixed(n)),
        _ => Err(format!(
            "expected `auto` or a whole number from 1 to {MAX_USERS}, found `{s}`"
        )),
    }
}

fn parse_top(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_TOP).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number from 1 to {MAX_TOP}, found `{s}`"
        )),
    }
}

/// The models of `--models`, resolved and checked before any search.
pub fn models(arg: &str) -> Result<Vec<PlanModel>> {
    let names: Vec<String> = if arg.trim() == "all" {
        presets::names().iter().map(|s| s.to_string()).collect()
    } else {
        arg.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if names.is_empty() {
        bail!("--models: expected `all` or a comma list of models, found `{arg}`");
    }
    if names.len() > MAX_MODELS {
        bail!(
            "--models: at most {MAX_MODELS} models, found {}",
            names.len()
        );
    }
    let mut out: Vec<PlanModel> = Vec::with_capacity(names.len());
    for n in names {
        if out.iter().any(|m| m.arg == n) {
            continue;
        }
        let (_, config) = load_model(&n).map_err(|e| anyhow::anyhow!("--models: {e:#}"))?;
        out.push(PlanModel { arg: n, config });
    }
    Ok(out)
}

/// The model's name, with `*` when the context is past its trained positions.
fn marked(c: &Candidate) -> String {
    if c.context > c.trained_positions {
        format!("{}*", c.model)
    } else {
        c.model.clone()
    }
}

/// The region, with `+` when it is a fixed `--region` shape.
fn region_cell(c: &Candidate) -> String {
    match c.fixed_region {
        Some(_) => format!("{}+", c.region),
        None => c.region.to_string(),
    }
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    if let Some(p) = &args.png {
        check_png_path("--png", p)?;
    }
    let spec = load_spec(&args.hw)?;
    let targets = Targets {
        tokens_per_s: args.tokens_per_s,
        context: args.context,
        ttft_ms: args.ttft_ms,
        prompt_tokens: args.prompt_tokens,
        users: match args.users {
            Users::Fixed(n) => n,
            Users::Auto => 1,
        },
    };
    targets.check()?;
    let search = SearchOptions {
        hw_arg: args.hw.clone(),
        max_wafers: args.max_wafers,
        all: args.all,
        most_users: args.users == Users::Auto,
        top: args.top,
        client: args.client.assumptions()?,
        speculate: match (args.speculate, args.acceptance) {
            (Some(k), Some(a)) => {
                if !(0.0..=1.0).contains(&a) {
                    bail!("--acceptance must be from 0 to 1, found {a}");
                }
                Some(SpeculateTarget {
                    k: k as usize,
                    acceptance: a,
                })
            }
            _ => None,
        },
    };
    let models = models(&args.models)?;
    if models.len() == 1 {
        // With one model named, warn as `estimate` does; with many, the
        // what-if is the point.
        let m = &models[0];
        warn_past_model_context(
            "--context",
            args.context as u64,
            &m.arg,
            m.config.max_position_embeddings,
        );
    }
    let plans = models
        .iter()
        .map(|m| plan_model(&spec, m, &targets, &search))
        .collect::<Result<Vec<ModelPlan>>>()?;
    let mut candidates: Vec<Candidate> = plans.iter().flat_map(|p| p.candidates.clone()).collect();
    rank(&mut candidates);
    let misses: Vec<_> = plans.iter().filter_map(|p| p.miss.clone()).collect();
    let priced: usize = plans.iter().map(|p| p.configurations_priced).sum();
    let meeting: usize = plans.iter().map(|p| p.configurations_meeting_rate).sum();
    let shapes = searched_shapes(&spec);
    let searched_s = started.elapsed().as_secs_f64();

    if let Some(path) = &args.png {
        let mut curves = Vec::new();
        let contexts = frontier_contexts(args.context);
        for (m, p) in models.iter().zip(&plans) {
            let chosen = p
                .candidates
                .first()
                .or(p.miss.as_ref().and_then(|m| m.best.as_ref()));
            if let Some(c) = chosen {
                let w = c.wafers;
                let points = frontier(&spec, &m.config, w, c.fixed_region, c.users, &contexts)?;
                let mut region = match c.fixed_region {
                    Some(r) => format!(", {r} regions"),
                    None => String::new(),
                };
                if args.users == Users::Auto {
                    region.push_str(&format!(", {} users", c.users));
                }
                curves.push(super::frontier::Curve {
                    label: format!(
                        "{} ({w} wafer{}{region})",
                        m.arg,
                        if w == 1 { "" } else { "s" }
                    ),
                    points,
                });
            }
        }
        let users = match args.users {
            Users::Fixed(1) => "1 user".to_string(),
            Users::Fixed(n) => format!("{n} users"),
            Users::Auto => "the users each line names".to_string(),
        };
        let title = format!(
            "decode tokens/s per user against context on {} ({users}); target {} tokens/s at {} tokens",
            spec.name,
            args.tokens_per_s,
            args.context
        );
        write_atomically(path, |tmp| {
            super::frontier::draw(&curves, args.tokens_per_s, args.context, &title, tmp)
        })?;
    }

    if args.json {
        let v = json!({
            "hw": spec.name,
            "targets": {
                "tokens_per_s": args.tokens_per_s,
                "context": args.context,
                "ttft_ms": args.ttft_ms,
                "prompt_tokens": args.prompt_tokens,
                "users": match args.users {
                    Users::Fixed(n) => json!(n),
                    Users::Auto => json!("auto"),
                },
            },
            "max_wafers": args.max_wafers,
            "top": args.top,
            "searched_regions": shapes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "models": models.iter().map(|m| m.arg.clone()).collect::<Vec<_>>(),
            "configurations_priced": priced,
            "configurations_meeting_rate": meeting,
            "candidates": candidates,
            "misses": misses,
        });
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let ttft = match args.ttft_ms {
        Some(t) => format!(
            ", time to first token at most {t} ms for a {}-token prompt",
            args.prompt_tokens
        ),
        None => String::new(),
    };
    let ttft = match &search.speculate {
        Some(sp) => format!(
            "{ttft}; with prompt-lookup speculation, {} drafts a step accepted at {} (every rate below is the speculative one)",
            sp.k, sp.acceptance
        ),
        None => ttft,
    };
    let users = match args.users {
        Users::Fixed(n) => format!("{n} user(s)"),
        Users::Auto => "as many users as each configuration holds at that rate".to_string(),
    };
    println!(
        "target: {} decode tokens/s per user at {} tokens of context, {users}{ttft}; {} models on 1..={} {} wafers",
        args.tokens_per_s,
        args.context,
        models.len(),
        args.max_wafers,
        spec.name
    );
    println!(
        "regions: the placement's choice on each wafer count, and {} fixed shapes ({})",
        shapes.len(),
        shapes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "searched {priced} configurations (wafers x region x strategy x K) in {searched_s:.2} s, {meeting} meet the rate{}",
        if args.all {
            ""
        } else {
            "; each model up to the first wafer count that meets the target (--all for more)"
        }
    );
    if candidates.is_empty() {
        println!("\nno configuration of these models meets the target");
    } else {
        let which = if args.users == Users::Auto {
            "largest aggregate"
        } else {
            "fastest"
        };
        println!(
            "\nmeet the target (fewest wafers first, then the aggregate tokens/s; the {} {which} layout{} per model and wafer count, each with its best K; --top for more):",
            args.top,
            if args.top == 1 { "" } else { "s" }
        );
        println!(
            "  {:>3}  {:<16} {:>6} {:>11} {:<16} {:>2} {:>5} {:>12} {:>8} {:>10} {:>10} {:>9}",
            "#",
            "model",
            "wafers",
            "region",
            "strategy",
            "K",
            "users",
            "tokens/s",
            "margin",
            "aggregate",
            "TTFT ms",
            "max users"
        );
        for (i, c) in candidates.iter().enumerate() {
            println!(
                "  {:>3}  {:<16} {:>6} {:>11} {:<16} {:>2} {:>5} {:>12.1} {:>7.1}% {:>10.1} {:>10.2} {:>9}",
                i + 1,
                marked(c),
                c.wafers,
                region_cell(c),
                c.strategy,
                c.k,
                c.users,
                c.decode_tokens_per_s,
                100.0 * c.margin,
                c.aggregate_tokens_per_s,
                c.ttft_ms,
                c.max_users.map_or("-".to_string(), |u| u.to_string())
            );
        }
        if candidates.iter().any(|c| c.fixed_region.is_some()) {
            println!("  + a fixed --region shape the search tried (otherwise the placement's own choice on these wafers)");
        }
        if candidates.iter().any(|c| c.context > c.trained_positions) {
            println!("  * trained for fewer positions than the context (max_position_embeddings): a what-if of the shape");
        }
        if let Some(a) = &search.client {
            println!("\nat the client:");
            for (i, c) in candidates.iter().enumerate() {
                if let Some(l) = &c.client {
                    println!("  {:>3}  {}", i + 1, super::latency::describe(a, l));
                }
            }
        }
        println!("\nreproduce with:");
        for (i, c) in candidates.iter().enumerate() {
            println!(
                "  {:>3}  wafer estimate {}",
                i + 1,
                c.estimate_args.join(" ")
            );
        }
    }
    if !misses.is_empty() {
        println!("\nno configuration meets the target:");
        for m in &misses {
            println!(
                "  {}: limited by {}: {}",
                m.best.as_ref().map_or(m.model.clone(), marked),
                m.limited_by.name(),
                m.detail
            );
            match &m.best {
                Some(b) => println!(
                    "      nearest: {} wafer(s), {} regions, {}, K {}: {:.1} tokens/s per user, TTFT {:.2} ms: wafer estimate {}",
                    b.wafers,
                    region_cell(b),
                    b.strategy,
                    b.k,
                    b.decode_tokens_per_s,
                    b.ttft_ms,
                    b.estimate_args.join(" ")
                ),
                None => println!("      nearest: none (nothing fits)"),
            }
        }
    }
    if let Some(p) = &args.png {
        println!("\nfrontier plot: {}", p.display());
    }
    Ok(())
}
