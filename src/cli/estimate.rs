//! `wafer estimate`: decode and prefill cost of a model from its shape alone.
//!
//! The layout is the placement `wafer place` computes for the same options; the
//! numbers come from `wafer_lower::cost` (the same plan the mesh engine runs).
//! Time-to-first-token is the cheaper prefill scheme (MeshGEMM or one decode
//! step per prompt token); the report says which (`prefill_scheme` in JSON).

use super::common::{load_spec, parse_positive_count, warn_past_model_context, DEFAULT_CONTEXT};
use anyhow::{Context, Result};
use serde_json::json;
use wafer_core::RegionShape;
use wafer_lower::cost::{Plan, PlanOptions, PrefillScheme};
use wafer_lower::estimate::{estimate_for_users, Estimate, EstimateOptions};
use wafer_lower::fabric::{fabric_decode, fabric_prefill, FabricDecode, FabricMemo, FabricPrefill};
use wafer_lower::placement::MAX_USERS;
use wafer_models::ModelConfig;
use wafer_sim::fabric::RunOptions;
use wafer_sim::Category;

/// The model, hardware and pipeline options `estimate` and `sweep` share.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// A preset name, a directory holding config.json, or a GGUF file (its metadata).
    #[arg(long)]
    pub model: String,
    /// Hardware preset (wse3, wse2) or a TOML spec file.
    #[arg(long, default_value = "wse3")]
    pub hw: String,
    /// Wafers in the pipeline; default: the fewest that hold the model at the context.
    #[arg(long)]
    pub wafers: Option<u32>,
    /// How layers share regions: `packed` or `layer-per-region`.
    #[arg(long, default_value = "packed")]
    pub strategy: String,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Region per pipeline stage, WIDTHxHEIGHT; default: the placement search's choice.
    #[arg(long)]
    pub region: Option<String>,
    /// KV length of the decode step: tokens, or with a k suffix (8k = 8192); at least 1.
    #[arg(long, default_value = DEFAULT_CONTEXT, value_parser = parse_positive_count)]
    pub context: usize,
    /// Prompt length for time-to-first-token (tokens or with a k suffix); at least 1.
    #[arg(long, default_value = "4096", value_parser = parse_positive_count)]
    pub prompt_tokens: usize,
    /// K of every reduction tree (levels of chains; 1 = chain); default 2, the
    /// MeshGEMV tree with the depth-minimising group count.
    #[arg(long)]
    pub k: Option<u32>,
    /// Prefill scheme to cost: auto (the cheapest), gemm (Cannon MeshGEMMs on
    /// each layer's square), stream (chunks through the decode tiling) or
    /// token-by-token. gemm and stream are still weighed against one decode
    /// step per token, which wins for short prompts; one that does not fit the
    /// layout is an error.
    #[arg(long, default_value = "auto", value_parser = ["auto", "gemm", "stream", "token-by-token"])]
    pub prefill_scheme: String,
    /// Users in flight (1 to 65536): every layer holds each user's KV cache at
    /// the context, and their tokens are pipelined over the regions; reports
    /// per-user and aggregate tokens/s and the most users that fit.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=MAX_USERS))]
    pub users: u64,
    /// How the decode step is timed: `analytic` (closed forms) or `fabric`
    /// (every layer and the LM head run on the event-driven fabric simulator,
    /// timing-only; the analytic figure is reported beside it).
    #[arg(long, default_value = "analytic", value_parser = ["analytic", "fabric"])]
    pub sim: String,
    /// With `--sim fabric`: simulate every layer, instead of one layer per
    /// distinct region shape (the figures are the same; this checks it).
    #[arg(long)]
    pub no_memo: bool,
    #[arg(long)]
    pub json: bool,
    /// The latency a user sees: assumed RTT and per-token overhead.
    #[command(flatten)]
    pub client: super::latency::ClientArgs,
    /// Speculative decoding: --speculate K with --acceptance A or --acceptance-from FILE.
    #[command(flatten)]
    pub speculate: super::speculate::EstimateArgs,
}

/// `--prefill-scheme`: `None` for auto.
pub fn prefill_scheme(arg: &str) -> Option<PrefillScheme> {
    match arg {
        "gemm" => Some(PrefillScheme::Gemm),
        "stream" => Some(PrefillScheme::Stream),
        "token-by-token" => Some(PrefillScheme::TokenByToken),
        _ => None,
    }
}

/// Resolves `--model`: a preset name, or a directory with config.json.
pub fn resolve_model(arg: &str) -> Result<ModelConfig> {
    Ok(super::common::load_model(arg)?.1)
}

pub fn options(args: &Args) -> Result<EstimateOptions> {
    let region = match &args.region {
        Some(r) => Some(r.parse::<RegionShape>().context("--region")?),
        None => None,
    };
    Ok(EstimateOptions {
        wafers: args.target.wafers,
        strategy: args.target.strategy.parse().map_err(anyhow::Error::msg)?,
        region,
        context: args.context,
        prompt_tokens: args.prompt_tokens,
    })
}

/// The lowering options of `--k` (the default tree when absent).
pub fn plan_options(k: Option<u32>) -> Result<PlanOptions> {
    match k {
        None => Ok(PlanOptions::default()),
        Some(k) => PlanOptions::with_reduce_k(k).with_context(|| format!("--k {k}")),
    }
}

pub fn run(args: Args) -> Result<()> {
    let forced = prefill_scheme(&args.prefill_scheme);
    let plan_opts = plan_options(args.k)?.with_prefill_scheme(forced);
    let spec = load_spec(&args.target.hw)?;
    let cfg = resolve_model(&args.target.model)?;
    for (flag, n) in [
        ("--context", args.context),
        ("--prompt-tokens", args.prompt_tokens),
    ] {
        warn_past_model_context(
            flag,
            n as u64,
            &args.target.model,
            cfg.max_position_embeddings,
        );
    }
    let client = args.client.assumptions()?;
    let opts = options(&args)?;
    let e = estimate_for_users(&spec, &cfg, &opts, &plan_opts, args.users)?;
    // The client sees each user's rate.
    let rate = e
        .users
        .as_ref()
        .map_or(e.decode_tokens_per_s, |u| u.per_user_tokens_per_s);
    let seen = client.map(|a| (a, a.latency(e.ttft_ms, rate)));
    let speculation = super::speculate::for_estimate(
        &args.speculate,
        &spec,
        &cfg,
        &e.layout,
        &opts,
        &plan_opts,
        args.users,
    )?;
    if args.sim == "fabric" {
        if args.users > 1 {
            anyhow::bail!(
                "--sim fabric times one user's decode step; drop --users or use --sim analytic"
            );
        }
        if seen.is_some() || speculation.is_some() {
            anyhow::bail!(
                "--rtt-ms, --per-token-overhead-us and --speculate are not applied to --sim fabric figures yet; use --sim analytic"
            );
        }
        let started = std::time::Instant::now();
        let mut memo = FabricMemo::default();
        let f = fabric_decode(
            &spec,
            &cfg,
            &e.layout,
            args.context,
            &plan_opts,
            &RunOptions::default(),
            (!args.no_memo).then_some(&mut memo),
        )?;
        let wall = started.elapsed().as_secs_f64();
        // The prefill of the chosen scheme; a scheme the simulator cannot run
        // keeps the analytic figure, with the reason.
        let started = std::time::Instant::now();
        let chunking = match e.prefill_scheme {
            PrefillScheme::Gemm => e.prefill_gemm_chunking,
            PrefillScheme::Stream => e.prefill_stream_chunking,
            PrefillScheme::TokenByToken => None,
        };
        let pre = match chunking {
            None => Err(anyhow::anyhow!(
                "the {} prefill is not simulated on the fabric (only the gemm and stream schemes)",
                e.prefill_scheme.name()
            )),
            Some(c) => fabric_prefill(
                &spec,
                &cfg,
                &e.layout,
                args.prompt_tokens.max(1),
                e.prefill_scheme,
                c,
                &plan_opts,
                &RunOptions::default(),
                (!args.no_memo).then_some(&mut memo),
            ),
        };
        let prefill_wall = started.elapsed().as_secs_f64();
        let pre = pre
            .map(|p| (p, prefill_wall))
            .map_err(|err| format!("{err:#}"));
        if args.json {
            let mut v = to_json(&e, cfg.num_hidden_layers);
            fabric_json(&mut v, &e, &f, spec.clock_hz, wall, !args.no_memo);
            prefill_json(&mut v, &e, &pre, spec.clock_hz);
            println!("{}", serde_json::to_string(&v)?);
        } else {
            print_report(
                &e,
                &args.target.model,
                cfg.num_hidden_layers,
                forced.is_some(),
            );
            print_fabric(&e, &f, spec.clock_hz, wall);
            print_prefill(&e, &pre, spec.clock_hz);
        }
        return Ok(());
    }
    if args.json {
        let mut v = to_json(&e, cfg.num_hidden_layers);
        if let (Some((s, drafter)), Some(m)) = (&speculation, v.as_object_mut()) {
            m.extend(super::speculate::estimate_json(s, drafter));
        }
        if let Some((a, l)) = &seen {
            super::latency::add_json(&mut v, a, l);
        }
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print_report(
            &e,
            &args.target.model,
            cfg.num_hidden_layers,
            forced.is_some(),
        );
        if let Some((s, drafter)) = &speculation {
            println!("{}", super::speculate::estimate_text(s, drafter));
        }
        if let Some((a, l)) = &seen {
            println!("\n{}", super::latency::describe(a, l));
        }
    }
    Ok(())
}

fn categories(plan: &Plan) -> serde_json::Value {
    let c = plan.cost();
    let mut m = serde_json::Map::new();
    for cat in Category::ALL {
        m.insert(cat.name().into(), json!(c.get(cat).get()));
    }
    m.into()
}

fn ops(plan: &Plan) -> serde_json::Value {
    plan.by_kind()
        .into_iter()
        .map(|(k, c)| {
            let mut o = json!({ "op": k.name(), "cycles": c.total().get() });
            for cat in Category::ALL {
                o[cat.name()] = json!(c.get(cat).get());
            }
            o
        })
        .collect()
}

pub fn to_json(e: &Estimate, layers: usize) -> serde_json::Value {
    let mut v = json!({
        "hw": e.hw,
        "region": e.region.to_string(),
        "wafers": e.wafers,
        "regions": e.regions,
        "layers_per_region": e.layers_per_region,
        "context": e.context,
        "prompt_tokens": e.prompt_tokens,
        "fits_in_sram": e.sram.fits,
        "sram_bytes_per_pe": e.sram.bytes_per_pe.get(),
        "sram_budget_per_pe": e.sram.budget_per_pe.get(),
        "decode_cycles_per_token": e.decode_cycles_per_token.get(),
        "decode_tokens_per_s": e.decode_tokens_per_s,
        "ttft_cycles": e.ttft_cycles.get(),
        "ttft_ms": e.ttft_ms,
        "prefill_tokens_per_s": e.prefill_tokens_per_s,
        "prefill_scheme": e.prefill_scheme.name(),
        // null when not even one chunk of the prompt fits the PEs
        "prefill_gemm_cycles": e.prefill_gemm_cycles.map(|c| c.get()),
        "prefill_gemm_chunks": e.prefill_gemm_chunking.map(|c| c.chunks),
        "prefill_stream_cycles": e.prefill_stream_cycles.map(|c| c.get()),
        "prefill_stream_chunks": e.prefill_stream_chunking.map(|c| c.chunks),
        // null when the scheme was ruled out by a lower bound before it was costed in full
        "prefill_token_by_token_cycles": e.prefill_token_by_token_exact.then_some(e.prefill_token_by_token_cycles.get()),
        "reduce_k": e.reduce_k,
        "breakdown": {
            "decode": {
                "categories": categories(&e.decode),
                "ops": ops(&e.decode),
                "layers": e.decode.by_layer(layers).iter().map(|c| c.get()).collect::<Vec<_>>(),
            },
            "prefill": {
                "categories": categories(&e.prefill),
                "ops": ops(&e.prefill),
                "layers": e.prefill.by_layer(layers).iter().map(|c| c.get()).collect::<Vec<_>>(),
            },
        },
    });
    // Only with more than one user, so one user's object is as before.
    if let (Some(u), Some(m)) = (&e.users, v.as_object_mut()) {
        m.insert("users".into(), json!(u.users));
        m.insert(
            "per_user_tokens_per_s".into(),
            json!(u.per_user_tokens_per_s),
        );
        m.insert(
            "aggregate_tokens_per_s".into(),
            json!(u.aggregate_tokens_per_s),
        );
        m.insert("max_users".into(), json!(u.max_users));
        m.insert("pipeline_stages".into(), json!(u.pipeline.stages.len()));
        m.insert(
            "slowest_stage_cycles".into(),
            json!(u.pipeline.slowest_stage_cycles.get()),
        );
        m.insert(
            "ttft_under_load_cycles".into(),
            json!(u.ttft_under_load_cycles.get()),
        );
        m.insert("ttft_under_load_ms".into(), json!(u.ttft_under_load_ms));
    }
    v
}

/// `--sim fabric`: the decode figures become the simulation's, the analytic
/// ones stay beside them.
fn fabric_json(
    v: &mut serde_json::Value,
    e: &Estimate,
    f: &FabricDecode,
    clock_hz: f64,
    wall_s: f64,
    memo: bool,
) {
    let analytic_layers = e.decode.by_layer(f.layer_cycles.len());
    v["sim"] = json!("fabric");
    v["decode_cycles_per_token"] = json!(f.cycles.get());
    v["decode_tokens_per_s"] = json!(clock_hz / f.cycles.get());
    v["analytic_decode_cycles_per_token"] = json!(e.decode_cycles_per_token.get());
    v["analytic_decode_tokens_per_s"] = json!(e.decode_tokens_per_s);
    // Until the prefill is simulated (`prefill_json`), its figures are the
    // analytic ones.
    v["ttft_source"] = json!("analytic");
    v["fabric"] = json!({
        "layer_cycles": f.layer_cycles.iter().map(|c| c.get()).collect::<Vec<_>>(),
        "analytic_layer_cycles": analytic_layers.iter().map(|c| c.get()).collect::<Vec<_>>(),
        "head_cycles": f.head_cycles.get(),
        "analytic_rest_cycles": f.analytic_rest.get(),
        "transfer_cycles": f.transfer_cycles.get(),
        "analytic_transfer_cycles": f.analytic_transfer_cycles.get(),
        "simulations": f.simulations,
        "transfer_simulations": f.transfer_simulations,
        "memo": memo,
        "events": f.events,
        "wavelet_hops": f.wavelet_hops,
        "token_wavelet_hops": f.token_wavelet_hops,
        "transfer_wavelet_hops": f.transfer_wavelet_hops,
        "max_queue_occupancy": f.max_queue_occupancy,
        "wall_s": wall_s,
        "events_per_wall_s": f.events as f64 / wall_s.max(1e-9),
        "wavelet_hops_per_wall_s": f.wavelet_hops as f64 / wall_s.max(1e-9),
    });
}

/// `--sim fabric`: the time to first token from the simulated prefill (the
/// analytic one beside it), or the analytic one and why (`ttft_note`).
fn prefill_json(
    v: &mut serde_json::Value,
    e: &Estimate,
    pre: &Result<(FabricPrefill, f64), String>,
    clock_hz: f64,
) {
    v["analytic_ttft_cycles"] = json!(e.ttft_cycles.get());
    v["analytic_ttft_ms"] = json!(e.ttft_ms);
    v["analytic_prefill_tokens_per_s"] = json!(e.prefill_tokens_per_s);
    let (p, wall) = match pre {
        Err(why) => {
            v["ttft_source"] = json!("analytic");
            v["ttft_note"] = json!(why);
            return;
        }
        Ok(p) => p,
    };
    let s = p.cycles.get() / clock_hz;
    v["ttft_source"] = json!("fabric");
    v["ttft_cycles"] = json!(p.cycles.get());
    v["ttft_ms"] = json!(s * 1e3);
    v["prefill_tokens_per_s"] = json!(e.prompt_tokens.max(1) as f64 / s);
    if p.extrapolated_cannon_steps > 0 {
        v["ttft_note"] = json!(format!(
            "{} MeshGEMM step(s) too large to simulate every Cannon round were extrapolated from their first rounds (docs/fabric.md)",
            p.extrapolated_cannon_steps
        ));
    }
    v["fabric"]["prefill"] = json!({
        "scheme": p.scheme.name(),
        "chunks": p.chunks,
        "layer_cycles": p.layer_cycles.get(),
        "head_cycles": p.head_cycles.get(),
        "transfer_cycles": p.transfer_cycles.get(),
        "analytic_transfer_cycles": p.analytic_transfer_cycles.get(),
        "analytic_rest_cycles": p.analytic_rest.get(),
        "simulations": p.simulations,
        "fabric_runs": p.fabric_runs,
        "transfer_simulations": p.transfer_simulations,
        "full_cannon_steps": p.full_cannon_steps,
        "extrapolated_cannon_steps": p.extrapolated_cannon_steps,
        "events": p.events,
        "wavelet_hops": p.wavelet_hops,
        "max_queue_occupancy": p.max_queue_occupancy,
        "wall_s": wall,
    });
}

fn print_prefill(e: &Estimate, pre: &Result<(FabricPrefill, f64), String>, clock_hz: f64) {
    let a = e.ttft_cycles.get();
    match pre {
        Err(why) => println!("  prefill: not simulated ({why}); TTFT stays analytic"),
        Ok((p, wall)) => {
            let c = p.cycles.get();
            println!(
                "  prefill ({}, {} chunk(s)): TTFT {:.0} cycles = {:.3} ms (analytic {:.0}, {:+.1}%); layers {:.0}, head {:.0}, transfers {:.0}, embedding (analytic) {:.0}",
                p.scheme.name(),
                p.chunks,
                c,
                1e3 * c / clock_hz,
                a,
                100.0 * (c - a) / a,
                p.layer_cycles.get(),
                p.head_cycles.get(),
                p.transfer_cycles.get(),
                p.analytic_rest.get()
            );
            println!(
                "  {} program(s) in {} fabric run(s) ({} Cannon step(s) in full, {} extrapolated): {} events, {} wavelet-hops, {:.2} s wall",
                p.simulations,
                p.fabric_runs,
                p.full_cannon_steps,
                p.extrapolated_cannon_steps,
                p.events,
                p.wavelet_hops,
                wall
            );
        }
    }
}

fn print_fabric(e: &Estimate, f: &FabricDecode, clock_hz: f64, wall_s: f64) {
    let a = e.decode_cycles_per_token.get();
    let c = f.cycles.get();
    println!(
        "\nfabric simulation (timing-only) of the decode step @ KV {}",
        e.context
    );
    println!(
        "  {:.0} cycles/token = {:.1} tokens/s (analytic {:.0}, {:+.1}%)",
        c,
        clock_hz / c,
        a,
        100.0 * (c - a) / a
    );
    let layers = f.layer_cycles.len();
    let analytic = e.decode.by_layer(layers);
    let mean =
        |v: &[wafer_core::Cycles]| v.iter().map(|c| c.get()).sum::<f64>() / layers.max(1) as f64;
    println!(
        "  per layer: {:.0} cycles simulated, {:.0} analytic (mean of {layers}); LM head {:.0}; transfers {:.0} simulated ({:.0} analytic); embedding lookup (analytic) {:.0}",
        mean(&f.layer_cycles),
        mean(&analytic),
        f.head_cycles.get(),
        f.transfer_cycles.get(),
        f.analytic_transfer_cycles.get(),
        f.analytic_rest.get()
    );
    println!(
        "  {} simulation(s): {} events, {} wavelet-hops, peak queue {} wavelets, {:.2} s wall ({:.2e} events/s)",
        f.simulations,
        f.events,
        f.wavelet_hops,
        f.max_queue_occupancy,
        wall_s,
        f.events as f64 / wall_s.max(1e-9)
    );
    println!("  prefill: not simulated; TTFT above is the analytic figure");
}

fn print_plan(title: &str, plan: &Plan, layers: usize) {
    let total = plan.total().get();
    println!("\n{title}");
    println!(
        "  {:<24} {:>14} {:>7} {:>12} {:>12} {:>12} {:>12}",
        "operation", "cycles", "share", "compute", "fabric", "sync", "off-wafer"
    );
    for (k, c) in plan.by_kind() {
        println!(
            "  {:<24} {:>14.0} {:>6.1}% {:>12.0} {:>12.0} {:>12.0} {:>12.0}",
            k.name(),
            c.total().get(),
            100.0 * c.total().get() / total,
            c.compute.get(),
            c.fabric.get(),
            c.sync.get(),
            c.off_wafer.get()
        );
    }
    let c = plan.cost();
    print!("  by category:");
    for cat in Category::ALL {
        print!("  {} {:.1}%", cat.name(), 100.0 * c.get(cat).get() / total);
    }
    println!();
    let per_layer = plan.by_layer(layers);
    let (min, max) = per_layer.iter().fold((f64::MAX, 0.0f64), |(a, b), c| {
        (a.min(c.get()), b.max(c.get()))
    });
    let mean = per_layer.iter().map(|c| c.get()).sum::<f64>() / layers.max(1) as f64;
    println!("  per layer: mean {mean:.0} cycles, min {min:.0}, max {max:.0} ({layers} layers)");
}

fn print_report(e: &Estimate, model: &str, layers: usize, forced: bool) {
    println!(
        "{model} on {} x{} wafer(s): {} regions of {} ({} layer(s) per region)",
        e.hw, e.wafers, e.regions, e.region, e.layers_per_region
    );
    if !e.sram.fits {
        println!(
            "WARNING: does not fit in SRAM: the fullest PE needs {} of its {} (weights + KV cache at {} tokens); figures assume it did",
            e.sram.bytes_per_pe, e.sram.budget_per_pe, e.context
        );
    }
    println!(
        "decode @ KV {}: {:.0} cycles/token = {:.1} tokens/s",
        e.context,
        e.decode_cycles_per_token.get(),
        e.decode_tokens_per_s
    );
    if let Some(u) = &e.users {
        println!(
            "users {}: {:.1} tokens/s each, {:.1} aggregate (pipeline of {} stages, slowest {:.0} cycles/token; at most {} users fit at this context on these wafers)",
            u.users,
            u.per_user_tokens_per_s,
            u.aggregate_tokens_per_s,
            u.pipeline.stages.len(),
            u.pipeline.slowest_stage_cycles.get(),
            u.max_users
        );
    }
    println!(
        "prefill {} tokens: TTFT {:.0} cycles = {:.3} ms ({:.0} prompt tokens/s)",
        e.prompt_tokens,
        e.ttft_cycles.get(),
        e.ttft_ms,
        e.prefill_tokens_per_s
    );
    if let Some(u) = &e.users {
        println!(
            "TTFT under load (a new prompt while {} users decode): {:.0} cycles = {:.3} ms",
            u.users - 1,
            u.ttft_under_load_cycles.get(),
            u.ttft_under_load_ms
        );
    }
    let other = if e.prefill_token_by_token_exact {
        format!("{:.0} cycles", e.prefill_token_by_token_cycles.get())
    } else {
        format!(
            "at least {:.0} cycles",
            e.prefill_token_by_token_cycles.get()
        )
    };
    let chunked = |c: Option<wafer_lower::cost::Chunking>| match c {
        Some(c) if c.chunks > 1 => format!(" in {} chunks of {} tokens", c.chunks, c.chunk_tokens),
        _ => String::new(),
    };
    let gemm = match e.prefill_gemm_cycles {
        Some(g) => format!(
            "MeshGEMM on each layer's square{}: {:.0} cycles",
            chunked(e.prefill_gemm_chunking),
            g.get()
        ),
        None if forced => "MeshGEMM: not costed".to_string(),
        None => "MeshGEMM: does not fit (the square cannot hold the layer's tiles)".to_string(),
    };
    let stream = match e.prefill_stream_cycles {
        Some(s) => format!(
            "streamed through the decode tiling{}: {:.0} cycles",
            chunked(e.prefill_stream_chunking),
            s.get()
        ),
        None if forced => "streamed: not costed".to_string(),
        None => "streamed: no room for one token's buffers".to_string(),
    };
    let tbt = format!("one decode step per token: {other}");
    let (chosen, others) = match e.prefill_scheme {
        PrefillScheme::Gemm => (gemm, [stream, tbt]),
        PrefillScheme::Stream => (stream, [gemm, tbt]),
        PrefillScheme::TokenByToken => (tbt, [gemm, stream]),
    };
    let scheme = format!("{chosen} (others: {})", others.join("; "));
    println!("  prefill scheme: {scheme}");
    if e.reduce_k != PlanOptions::default().reduce_k() {
        println!("  reductions: K = {} trees", e.reduce_k);
    }
    print_plan("decode step breakdown", &e.decode, layers);
    let title = match e.prefill_scheme {
        PrefillScheme::Gemm => "prefill breakdown (MeshGEMM)".to_string(),
        PrefillScheme::Stream => "prefill breakdown (streamed, summed over chunks)".to_string(),
        PrefillScheme::TokenByToken => format!(
            "prefill breakdown ({} decode steps, summed)",
            e.prompt_tokens.max(1)
        ),
    };
    print_plan(&title, &e.prefill, layers);
}
