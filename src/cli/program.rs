//! `wafer program`: one layer's placed program on its region — every tensor's
//! tile geometry and the bytes each PE holds by component, then the decode
//! step's operations in order with their PE kernels, their collective (axis,
//! line, tree, root, depth, reach) and their cycles. The same program placement
//! counts, `wafer estimate` prices and `generate --engine mesh` runs.

use super::common::{load_spec, parse_positive_count, DEFAULT_CONTEXT};
use super::estimate::{plan_options, resolve_model, Target};
use anyhow::{bail, Context, Result};
use serde_json::json;
use wafer_core::RegionShape;
use wafer_lower::estimate::{placement_for, EstimateOptions};
use wafer_lower::placement::Item;
use wafer_lower::{decode_layer_program, prefill_layer_program};
use wafer_sim::program::CollectiveKind;
use wafer_sim::tiling::{Axis, Orientation, Tile};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// The decoder layer to show (0-based).
    #[arg(long, default_value_t = 0)]
    pub layer: usize,
    /// Region per pipeline stage, WIDTHxHEIGHT; default: the placement search's choice.
    #[arg(long)]
    pub region: Option<String>,
    /// KV length of the decode step (tokens, or with a k suffix); the placement holds it.
    #[arg(long, default_value = DEFAULT_CONTEXT, value_parser = parse_positive_count)]
    pub context: usize,
    /// K of every reduction tree (levels of chains; 1 = chain); default 2.
    #[arg(long)]
    pub k: Option<u32>,
    /// Show the layer's prefill of this many prompt tokens (MeshGEMMs on the
    /// region's largest square) instead of its decode step.
    #[arg(long, value_parser = parse_positive_count)]
    pub prefill: Option<usize>,
    /// Also list every collective's transfers (which PE sends to which, in order).
    #[arg(long)]
    pub transfers: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let opts = plan_options(args.k)?;
    let spec = load_spec(&args.target.hw)?;
    let cfg = resolve_model(&args.target.model)?;
    let layers = cfg.num_hidden_layers;
    if args.layer >= layers {
        bail!(
            "--layer {}: {} has {layers} decoder layers (0..={})",
            args.layer,
            args.target.model,
            layers - 1
        );
    }
    let region = match &args.region {
        Some(r) => Some(r.parse::<RegionShape>().context("--region")?),
        None => None,
    };
    let placement = placement_for(
        &spec,
        &cfg,
        &EstimateOptions {
            wafers: args.target.wafers,
            region,
            strategy: args.target.strategy.parse().map_err(anyhow::Error::msg)?,
            context: args.context,
            prompt_tokens: 1,
        },
    )?;
    let layout = placement.layout();
    let site = layout.layers[args.layer];
    let (w, h) = (site.region.width(), site.region.height());
    if let Some(n) = args.prefill {
        if n > args.context {
            bail!(
                "--prefill {n}: the prompt is longer than the context the placement holds ({}); raise --context",
                args.context
            );
        }
    }
    let program = match args.prefill {
        Some(n) => prefill_layer_program(&spec, &cfg, w, h, n, n, &opts),
        None => decode_layer_program(&spec, &cfg, w, h, args.context, &opts),
    };
    let shared: Vec<usize> = placement
        .regions
        .iter()
        .find(|r| r.wafer == site.wafer && r.region == site.region)
        .map(|r| {
            r.items
                .iter()
                .filter_map(|i| match i {
                    Item::Layer(l) => Some(*l),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    // Cached positions on a PE: the whole context in decode, the prompt in prefill.
    let positions = (args.prefill.unwrap_or(args.context) as u64).div_ceil(h as u64);
    let weights = program.weight_bytes_per_pe();
    let kv = positions * program.kv_bytes_per_position;
    let reserve = spec.pe.reserve_bytes;
    let cycles: Vec<f64> = program
        .steps
        .iter()
        .map(|s| s.cost(&spec).total().get())
        .collect();
    let schedules = program
        .steps
        .iter()
        .map(|s| s.collective.as_ref().map(|c| c.schedule()).transpose())
        .collect::<Result<Vec<_>, _>>()?;

    if args.json {
        let steps: Vec<_> = program
            .steps
            .iter()
            .zip(&cycles)
            .zip(&schedules)
            .map(|((s, c), sched)| {
                let mut v = json!({
                    "operation": s.label.name(),
                    "work_per_pe": s.work_per_pe,
                    "macs_per_pe": s.macs_per_pe(),
                    "kernels": s.kernels,
                    "collective": s.collective,
                    "cannon": s.cannon,
                    "cycles": c,
                });
                if let (true, Some(sched)) = (args.transfers, sched) {
                    let t: Vec<[u32; 2]> =
                        sched.transfers().iter().map(|t| [t.from, t.to]).collect();
                    v["transfers"] = json!(t);
                }
                v
            })
            .collect();
        let out = json!({
            "model": args.target.model,
            "hw": spec.name,
            "layer": args.layer,
            "layers_on_region": shared,
            "region": {
                "wafer": site.wafer,
                "x": site.region.origin.x,
                "y": site.region.origin.y,
                "width": w,
                "height": h,
            },
            "context": args.context,
            "prefill_tokens": args.prefill,
            "reduce_k": opts.reduce_k(),
            "tiles": program.tiles,
            "per_pe_bytes": {
                "weights": weights,
                "kv": kv,
                "buffers": program.buffer_bytes,
                "reserve": reserve,
                "total": weights + kv + program.buffer_bytes + reserve,
            },
            "kv_bytes_per_position": program.kv_bytes_per_position,
            "steps": steps,
            "layer_cycles": cycles.iter().sum::<f64>(),
        });
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }

    println!(
        "layer {} of {} on {}: region {}x{} at ({}, {}) of wafer {}{}",
        args.layer,
        args.target.model,
        spec.name,
        w,
        h,
        site.region.origin.x,
        site.region.origin.y,
        site.wafer,
        match shared.as_slice() {
            [] | [_] => String::new(),
            [a, .., b] => format!(", shared by layers {a}..={b}"),
        }
    );
    match args.prefill {
        Some(n) => println!(
            "prefill of {n} prompt tokens on the {p}x{p} square at the region's origin (Cannon MeshGEMMs; {positions} prompt positions cached on row 0's PEs), reduction trees K = {}",
            opts.reduce_k(),
            p = program.width,
        ),
        None => println!(
            "decode step at KV length {} ({positions} cached positions on row 0's PEs), reduction trees K = {}",
            args.context,
            opts.reduce_k()
        ),
    }
    println!();
    match args.prefill {
        Some(_) => println!("tiles (every PE of the square holds one of each):"),
        None => println!("tiles (every PE holds one of each):"),
    }
    println!(
        "  {:<34} {:<28} {:>22} {:>22} {:>5} {:>8}",
        "tensor", "layout", "out: len/lines/chunk", "in: len/lines/chunk", "dtype", "bytes/PE"
    );
    let split = |s: wafer_sim::tiling::Split| format!("{}/{}/{}", s.len, s.parts, s.chunk);
    for t in &program.tiles {
        let (layout, out, inp) = match t {
            Tile::Matrix { tiling, .. } => (
                match tiling.orientation {
                    Orientation::OutAlongColumns => "matrix, out along columns",
                    Orientation::OutAlongRows => "matrix, out along rows",
                },
                split(tiling.out),
                split(tiling.inp),
            ),
            Tile::Vector { tiling, .. } => (
                match tiling.along {
                    Axis::Column => "vector, split over rows",
                    Axis::Row => "vector, split over columns",
                },
                split(tiling.split),
                "-".to_string(),
            ),
        };
        println!(
            "  {:<34} {:<28} {:>22} {:>22} {:>5} {:>8}",
            t.name(),
            layout,
            out,
            inp,
            t.dtype().to_string(),
            t.bytes_per_pe()
        );
    }
    println!(
        "bytes per PE for this layer: weights {weights}, KV {kv} ({} per position), buffers {}, reserve {reserve}: {} of {}",
        program.kv_bytes_per_position,
        program.buffer_bytes,
        weights + kv + program.buffer_bytes + reserve,
        spec.pe.sram_bytes
    );
    println!();
    println!("steps (every PE of the region, in order):");
    for (i, ((s, c), sched)) in program
        .steps
        .iter()
        .zip(&cycles)
        .zip(&schedules)
        .enumerate()
    {
        let kernels: Vec<String> = s
            .kernels
            .iter()
            .map(|k| {
                let v = serde_json::to_value(k).unwrap_or_default();
                let name = v["kernel"].as_str().unwrap_or("?").to_string();
                let args: Vec<String> = v
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter(|(k, _)| *k != "kernel")
                            .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
                            .collect()
                    })
                    .unwrap_or_default();
                format!("{name}({})", args.join(","))
            })
            .collect();
        println!(
            "  {:>2} {:<20} {:<44} {:>9.0} cycles",
            i + 1,
            s.label.name(),
            kernels.join(" "),
            c
        );
        if let Some(c) = &s.cannon {
            println!(
                "       Cannon: {} rounds over {}x{}, each passing {} A and {} B values of {} B one PE west / north",
                c.p, c.p, c.p, c.a_values, c.b_values, c.bytes_per_value
            );
        }
        if let Some(col) = &s.collective {
            let t = &col.tree;
            println!(
                "       {} along {} ({} PEs, {} x {} B per PE): {:?}, root PE {}, levels {:?}, depth {}, reach {} hops",
                match col.kind {
                    CollectiveKind::Allreduce => "allreduce",
                    CollectiveKind::Reduce => "reduce",
                },
                match col.axis {
                    Axis::Column => "each column",
                    Axis::Row => "each row",
                },
                t.len(),
                col.values_per_pe,
                col.bytes_per_value,
                t.algorithm(),
                t.root(),
                t.levels(),
                t.depth(),
                t.reach()
            );
            if let (true, Some(sched)) = (args.transfers, sched) {
                let pairs: Vec<String> = sched
                    .transfers()
                    .iter()
                    .map(|t| format!("{}->{}", t.from, t.to))
                    .collect();
                println!("       transfers: {}", pairs.join(" "));
            }
        }
    }
    println!("layer total: {:.0} cycles", cycles.iter().sum::<f64>());
    Ok(())
}
