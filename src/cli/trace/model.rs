//! `wafer trace --model M --layer N` and `--token`: a model's decode step on
//! the fabric simulator, traced.
//!
//! The programs are the ones `wafer estimate --sim fabric` times
//! ([`wafer_lower::fabric::token_programs`]) on the placement `wafer program`
//! shows for the same options, run timing-only as whole region programs
//! ([`region_fabric`], queues rebound between steps as
//! [`wafer_sim::fabric::layer::simulate_region`] does).
//!
//! - `--layer N`: layer N's program on its region; PE coordinates are the
//!   region's own (`otherData.region` gives its origin on the wafer).
//! - `--token`: every layer, then the LM head, one after another: run `i`
//!   starts when run `i - 1` ends (the sum of the spans before it, as
//!   `fabric_decode` adds them). The PE tracks carry wafer coordinates (each
//!   region moved by its origin; with several wafers, wafer `w`'s column `x`
//!   is column `w * width + x` of the grid). A program several runs share
//!   (the layers on regions of one shape) is simulated and traced once, at
//!   its first run; the `token` track shows every run and says which program
//!   it is. The budget is shared: the `token` track first, then an equal
//!   part for each program traced. The heat map covers the whole grid: each
//!   link's wavelets over every run over the token's span. The token's
//!   transfers between regions and wafers are simulated as `fabric_decode`
//!   simulates them, untraced, and reported as `transfer_cycles`.

use super::{
    busiest_json, peak_json, persist, print_hot, print_json, print_run, sampling, temp_beside,
    trace_program, traced, Args, Outputs,
};
use crate::cli::common::{load_spec, DEFAULT_CONTEXT};
use crate::cli::estimate::{plan_options, resolve_model};
use crate::cli::heatmap;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::io::{BufWriter, Write};
use std::time::Instant;
use wafer_core::{Cycles, RegionShape, WaferSpec};
use wafer_lower::cost::PlanOptions;
use wafer_lower::estimate::{placement_for, EstimateOptions};
use wafer_lower::fabric::{token_programs, token_transfers, FabricMemo, TokenPrograms};
use wafer_lower::layout::Site;
use wafer_lower::LayerProgram;
use wafer_sim::fabric::layer::region_fabric;
use wafer_sim::fabric::trace::chrome::{merged_other, phase_events, write_placed, Phase, Placed};
use wafer_sim::fabric::trace::{merge, MergePart, Trace};
use wafer_sim::fabric::{FabricRun, RunOptions};

/// The model, its placement and the token's programs.
struct Model {
    spec: WaferSpec,
    name: String,
    opts: PlanOptions,
    context: usize,
    layers: usize,
    token: TokenPrograms,
}

fn load(args: &Args) -> Result<Model> {
    let name = args.model.clone().context("--model")?;
    let k = match args.k {
        None => None,
        Some(k) => Some(u32::try_from(k).map_err(|_| {
            anyhow::anyhow!(
                "--k {k}: K of a reduction tree must be at most {}",
                u32::MAX
            )
        })?),
    };
    let opts = plan_options(k)?;
    let spec = load_spec(&args.hw)?;
    let cfg = resolve_model(&name)?;
    let context = match args.context {
        Some(c) => c,
        None => {
            crate::cli::common::parse_positive_count(DEFAULT_CONTEXT).map_err(anyhow::Error::msg)?
        }
    };
    let region = match &args.region {
        Some(r) => Some(r.parse::<RegionShape>().context("--region")?),
        None => None,
    };
    let strategy = args.strategy.as_deref().unwrap_or("packed");
    let placement = placement_for(
        &spec,
        &cfg,
        &EstimateOptions {
            wafers: args.wafers,
            region,
            strategy: strategy
                .parse()
                .map_err(|e| anyhow::anyhow!("--strategy {strategy}: {e}"))?,
            context,
            prompt_tokens: 1,
        },
    )?;
    let token = token_programs(&spec, &cfg, &placement.layout(), context, &opts);
    Ok(Model {
        spec,
        name,
        opts,
        context,
        layers: cfg.num_hidden_layers,
        token,
    })
}

/// Run options of a whole region program (see the module doc).
fn region_opts() -> RunOptions {
    let mut o = RunOptions::default();
    o.params.rebind_queues = true;
    o
}

fn site_json(site: &Site) -> Value {
    json!({
        "wafer": site.wafer,
        "x": site.region.origin.x,
        "y": site.region.origin.y,
        "width": site.region.width(),
        "height": site.region.height(),
    })
}

fn analytic(spec: &WaferSpec, p: &LayerProgram) -> Cycles {
    p.steps
        .iter()
        .fold(Cycles::ZERO, |a, s| a + s.cost(spec).total())
}

pub fn run(args: &Args) -> Result<()> {
    match (args.layer, args.token) {
        (Some(_), true) => bail!("give --layer N or --token, not both"),
        (None, false) => {
            bail!("--model needs --layer N (one layer) or --token (a whole decode token)")
        }
        (Some(layer), false) => run_layer(args, layer),
        (None, true) => run_token(args),
    }
}

fn run_layer(args: &Args, layer: usize) -> Result<()> {
    let m = load(args)?;
    if layer >= m.layers {
        bail!(
            "--layer {layer}: {} has {} decoder layers (0..={})",
            m.name,
            m.layers,
            m.layers - 1
        );
    }
    let (site, program) = &m.token.runs[layer];
    let spec = &m.spec;
    let rf = region_fabric(spec, program)
        .with_context(|| format!("layer {layer}'s program on the fabric"))?;
    let (w, h) = (site.region.width(), site.region.height());
    let title = format!(
        "wafer trace --model {} --layer {layer} ({w}x{h} region at ({},{}) of wafer {}, {}, KV length {})",
        m.name, site.region.origin.x, site.region.origin.y, site.wafer, spec.name, m.context
    );
    let analytic = analytic(spec, program);
    let steps: Vec<&str> = program.steps.iter().map(|s| s.label.name()).collect();
    let mut other = Map::new();
    other.insert("program".into(), json!(title));
    other.insert("model".into(), json!(m.name));
    other.insert("layer".into(), json!(layer));
    other.insert("hw".into(), json!(spec.name));
    other.insert("region".into(), site_json(site));
    other.insert("context".into(), json!(m.context));
    other.insert("reduce_k".into(), json!(m.opts.reduce_k()));
    other.insert("steps".into(), json!(steps));
    other.insert("analytic_cycles".into(), json!(analytic.get()));
    let t = trace_program(
        spec,
        &rf.program,
        &region_opts(),
        &Outputs {
            title: &title,
            other: other.clone(),
            out: &args.out,
            png: args.png.as_deref(),
            max_events: args.max_events,
        },
    )?;
    let run = &t.run;
    if args.json {
        // The report's keys are the trace's `otherData` ones, and the cycles.
        let mut o = other;
        o.insert("cycles".into(), json!(run.cycles.get()));
        print_json(Value::Object(o), &t, args)?;
        return Ok(());
    }
    println!(
        "{title}: span {} cycles (analytic {:.2}), {} steps",
        run.span,
        analytic.get(),
        steps.len()
    );
    print_run(&t, args);
    Ok(())
}

/// The name of run `i` of a token of `layers` layers.
fn run_name(i: usize, layers: usize) -> String {
    if i < layers {
        format!("layer {i}")
    } else {
        "LM head".to_string()
    }
}

/// Runs `runs` (ascending) by name, consecutive layers as ranges:
/// "layers 0-3, 6", "LM head", "layer 2 and LM head".
fn describe(runs: &[usize], layers: usize) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut head = false;
    for &i in runs {
        if i >= layers {
            head = true;
            continue;
        }
        match ranges.last_mut() {
            Some((_, b)) if *b + 1 == i => *b = i,
            _ => ranges.push((i, i)),
        }
    }
    let list: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                format!("{a}")
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let layer_part = match (ranges.len(), ranges.first()) {
        (0, _) => String::new(),
        (1, Some((a, b))) if a == b => format!("layer {a}"),
        _ => format!("layers {}", list.join(", ")),
    };
    match (layer_part.is_empty(), head) {
        (true, _) => "LM head".into(),
        (false, true) => format!("{layer_part} and LM head"),
        (false, false) => layer_part,
    }
}

/// One program of the token, traced once.
struct Traced {
    /// Its runs (indices into the token's runs), ascending.
    runs: Vec<usize>,
    run: FabricRun,
    trace: Trace,
}

fn run_token(args: &Args) -> Result<()> {
    let m = load(args)?;
    let spec = &m.spec;
    let runs = &m.token.runs;
    // Distinct programs, each with the runs that share it.
    let mut distinct: Vec<Vec<usize>> = Vec::new();
    for (i, (_, p)) in runs.iter().enumerate() {
        match distinct.iter_mut().find(|d| runs[d[0]].1 == *p) {
            Some(d) => d.push(i),
            None => distinct.push(vec![i]),
        }
    }
    let overview = phase_events(&vec![
        Phase {
            name: String::new(),
            start: 0,
            dur: 0
        };
        runs.len()
    ]);
    let per = args.max_events.saturating_sub(overview) / distinct.len() as u64;
    if per == 0 {
        bail!(
            "--max-events {} cannot hold the token's overview track ({overview} events) and a track of each of its {} programs; raise --max-events",
            args.max_events,
            distinct.len()
        );
    }
    let wafers = runs.iter().map(|(s, _)| s.wafer).max().unwrap_or(0) + 1;
    let (gw, gh) = (
        wafers
            .checked_mul(spec.fabric.width_pes)
            .context("the grid of the wafers is too wide")?,
        spec.fabric.height_pes,
    );
    let title = format!(
        "wafer trace --model {} --token ({}, {} wafer(s), KV length {})",
        m.name, spec.name, wafers, m.context
    );
    // Check the targets before the runs.
    let mut json_tmp = temp_beside(&args.out, "--out", b"{\"traceEvents\":[", "a trace")?;
    let mut png_tmp = match &args.png {
        Some(p) => Some(temp_beside(p, "--png", b"\x89PNG\r\n\x1a\n", "a PNG")?),
        None => None,
    };
    let t0 = Instant::now();
    let mut programs: Vec<Traced> = Vec::new();
    for d in distinct {
        let first = d[0];
        let what = describe(&d, m.layers);
        let rf = region_fabric(spec, &runs[first].1)
            .with_context(|| format!("the program of {what} on the fabric"))?;
        let (run, trace) = traced(spec, &rf.program, &region_opts(), &what, per)?;
        programs.push(Traced {
            runs: d,
            run,
            trace,
        });
    }
    let wall_s = t0.elapsed().as_secs_f64();

    // Each run's program, start and span.
    let mut program_of = vec![0; runs.len()];
    for (j, p) in programs.iter().enumerate() {
        for &i in &p.runs {
            program_of[i] = j;
        }
    }
    let mut starts = Vec::with_capacity(runs.len());
    let mut total = 0u64;
    for &j in &program_of {
        starts.push(total);
        total += programs[j].run.span;
    }
    let origin = |i: usize| {
        let s = &runs[i].0;
        (
            s.wafer * spec.fabric.width_pes + s.region.origin.x,
            s.region.origin.y,
        )
    };
    let merged = merge(
        gw,
        gh,
        total,
        &(0..runs.len())
            .map(|i| {
                let (x0, y0) = origin(i);
                MergePart {
                    trace: &programs[program_of[i]].trace,
                    x0,
                    y0,
                    copies: 1,
                }
            })
            .collect::<Vec<_>>(),
    )?;
    let labels: Vec<String> = programs
        .iter()
        .map(|p| {
            format!(
                "{} (traced at {})",
                describe(&p.runs, m.layers),
                run_name(p.runs[0], m.layers)
            )
        })
        .collect();
    let parts: Vec<Placed> = programs
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(j, (p, label))| {
            let first = p.runs[0];
            let (x0, y0) = origin(first);
            Placed {
                trace: &p.trace,
                label,
                x0,
                y0,
                t0: starts[first],
                part: j as u16,
            }
        })
        .collect();
    let phases: Vec<Phase> = (0..runs.len())
        .map(|i| {
            let p = &programs[program_of[i]];
            let name = if p.runs[0] == i {
                run_name(i, m.layers)
            } else {
                format!(
                    "{} (the program of {}, traced there)",
                    run_name(i, m.layers),
                    run_name(p.runs[0], m.layers)
                )
            };
            Phase {
                name,
                start: starts[i],
                dur: p.run.span,
            }
        })
        .collect();
    let rest = m.token.analytic_rest.get();
    // The token's transfers run on the fabric as `estimate --sim fabric` runs
    // them (each distinct one once), untraced.
    let memo = &mut FabricMemo::default();
    let moved = token_transfers(spec, &m.token, &RunOptions::default(), Some(memo))?
        .cycles
        .get();
    let hops: u64 = program_of
        .iter()
        .map(|&j| programs[j].run.wavelet_hops)
        .sum();
    let runs_json: Vec<Value> = (0..runs.len())
        .map(|i| {
            json!({
                "name": run_name(i, m.layers),
                "region": site_json(&runs[i].0),
                "program": program_of[i],
                "start": starts[i],
                "span_cycles": programs[program_of[i]].run.span,
            })
        })
        .collect();
    let programs_json: Vec<Value> = programs
        .iter()
        .map(|p| {
            json!({
                "runs": describe(&p.runs, m.layers),
                "traced_at": run_name(p.runs[0], m.layers),
                "region": site_json(&runs[p.runs[0]].0),
                "span_cycles": p.run.span,
                "events": p.run.events,
                "wavelet_hops": p.run.wavelet_hops,
                "max_queue_occupancy": p.run.max_queue_occupancy,
                "trace_events": p.trace.events,
                "trace_budget": p.trace.max_events,
                "sample_stride": p.trace.stride,
            })
        })
        .collect();
    let mut other = merged_other(&merged);
    other.insert("program".into(), json!(title));
    other.insert("model".into(), json!(m.name));
    other.insert("hw".into(), json!(spec.name));
    other.insert("context".into(), json!(m.context));
    other.insert("reduce_k".into(), json!(m.opts.reduce_k()));
    other.insert("wafers".into(), json!(wafers));
    other.insert(
        "coordinates".into(),
        json!("PE (x, y) is wafer w's PE (x - w * width_pes, y), wafers side by side; width_pes = the wafer's width"),
    );
    other.insert("wafer_width_pes".into(), json!(spec.fabric.width_pes));
    other.insert("simulated_cycles".into(), json!(total));
    other.insert("analytic_rest_cycles".into(), json!(rest));
    other.insert("transfer_cycles".into(), json!(moved));
    other.insert(
        "decode_cycles_per_token".into(),
        json!(total as f64 + moved + rest),
    );
    other.insert("wavelet_hops".into(), json!(hops));
    other.insert("runs".into(), json!(runs_json));
    other.insert("programs".into(), json!(programs_json));
    other.insert("max_events".into(), json!(args.max_events));

    let mut w = BufWriter::new(json_tmp.as_file_mut());
    let events = write_placed(&parts, gw, gh, &phases, other, &mut w)
        .and_then(|n| w.flush().map(|_| n))
        .with_context(|| format!("cannot write --out {}", args.out.display()))?;
    drop(w);
    if let (Some(tmp), Some(path)) = (png_tmp.as_mut(), &args.png) {
        let subtitle = format!(
            "{gw} x {gh} PEs, {total} cycles of layers and LM head one after another, {hops} wavelet-hops"
        );
        let img = heatmap::render(&merged.heat(), &title, &subtitle)?;
        let mut w = BufWriter::new(tmp.as_file_mut());
        img.write_to(&mut w, image::ImageFormat::Png)
            .context("encoding the PNG")
            .and_then(|_| w.flush().context("flushing"))
            .with_context(|| format!("cannot write --png {}", path.display()))?;
    }
    let json_bytes = persist(json_tmp, &args.out, "--out")?;
    let png_bytes = match (png_tmp, &args.png) {
        (Some(tmp), Some(path)) => Some(persist(tmp, path, "--png")?),
        _ => None,
    };

    if args.json {
        let o = json!({
            "program": title,
            "model": m.name,
            "hw": spec.name,
            "context": m.context,
            "reduce_k": m.opts.reduce_k(),
            "wafers": wafers,
            "simulated_cycles": total,
            "analytic_rest_cycles": rest,
            "transfer_cycles": moved,
            "decode_cycles_per_token": total as f64 + moved + rest,
            "wavelet_hops": hops,
            "runs": runs_json,
            "programs": programs_json,
            "busiest_link": busiest_json(&merged),
            "peak_queue": peak_json(&merged),
            "trace": {
                "path": args.out,
                "bytes": json_bytes,
                "events": events,
                "max_events": args.max_events,
            },
            "png": args.png.as_ref().map(|p| json!({ "path": p, "bytes": png_bytes })),
            "wall_s": wall_s,
        });
        println!("{}", serde_json::to_string_pretty(&o)?);
        return Ok(());
    }
    println!(
        "{title}: {total} cycles simulated (layers and LM head) + {moved} simulated untraced (transfers) + {rest:.2} analytic (embedding lookup) = {:.2} cycles per token",
        total as f64 + moved + rest
    );
    for p in &programs {
        let s = &runs[p.runs[0]].0;
        println!(
            "  {}: {}x{} region{}, span {} cycles{}; traced at {} ({})",
            describe(&p.runs, m.layers),
            s.region.width(),
            s.region.height(),
            if p.runs.len() > 1 { "s" } else { "" },
            p.run.span,
            if p.runs.len() > 1 { " each" } else { "" },
            run_name(p.runs[0], m.layers),
            sampling(&p.trace)
        );
    }
    println!("  {hops} wavelet-hops, {wall_s:.3} s wall");
    print_hot(&merged);
    println!(
        "  trace: {} ({json_bytes} bytes, {events} events of at most {})",
        args.out.display(),
        args.max_events
    );
    if let (Some(p), Some(bytes)) = (&args.png, png_bytes) {
        println!("  heat map: {} ({bytes} bytes)", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{describe, run_name};

    #[test]
    fn runs_are_named_as_ranges_of_layers_and_the_head() {
        // A token of 4 layers: runs 0..=3 are layers, run 4 the head.
        assert_eq!(describe(&[0, 1, 2, 3], 4), "layers 0-3");
        assert_eq!(describe(&[0, 1, 3], 4), "layers 0-1, 3");
        assert_eq!(describe(&[2], 4), "layer 2");
        assert_eq!(describe(&[4], 4), "LM head");
        assert_eq!(describe(&[3, 4], 4), "layer 3 and LM head");
        assert_eq!(describe(&[0, 2, 4], 4), "layers 0, 2 and LM head");
        assert_eq!(run_name(3, 4), "layer 3");
        assert_eq!(run_name(4, 4), "LM head");
    }
}
