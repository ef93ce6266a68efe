//! `wafer kernel`: one kernel on one region, estimated with the same costs as
//! `wafer estimate` — the microbenchmarks of `shared/calibration.md` (C5-C7), which
//! researchers also use to compare collective algorithms.
//!
//! The figure is the one the measurements define: the mean over PEs of each PE's
//! own start-to-end cycles (see `docs/cost-model.md` for how the model reads it).

use super::common::load_spec;
use anyhow::{bail, Context, Result};
use serde_json::json;
use wafer_core::{RegionShape, WaferSpec};
use wafer_sim::collective::{wavelets, Algorithm, Line};
use wafer_sim::matrix::{self, Parts};
use wafer_sim::Category;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kind {
    /// MeshGEMV y[1,N] = x[1,M] W[M,N]: local tile GEMV + column allreduce.
    Gemv,
    /// MeshGEMM C[M,N] = A[M,K] B[K,N] by Cannon's algorithm (square region).
    Gemm,
    /// M 16-bit values per PE moved L PEs east, then a row broadcast (C5).
    Shift,
    /// Allreduce of N 16-bit values per PE along each column of the region.
    Allreduce,
}

#[derive(clap::Args)]
pub struct Args {
    pub kind: Kind,
    /// Hardware preset (wse3, wse2) or a TOML spec file.
    #[arg(long, default_value = "wse3")]
    pub hw: String,
    /// Region size WIDTHxHEIGHT (or one number for a square).
    #[arg(long)]
    pub region: String,
    /// GEMV/GEMM rows M; shift: values per PE.
    #[arg(long, default_value_t = 1)]
    pub m: u64,
    /// GEMV/GEMM columns N; allreduce: values per PE.
    #[arg(long, default_value_t = 1)]
    pub n: u64,
    /// GEMM inner dimension K.
    #[arg(long)]
    pub k: Option<u64>,
    /// K-tree groups per line (K = 2, MeshGEMV's G).
    #[arg(long)]
    pub groups: Option<u32>,
    /// K-tree levels (K) when `--groups` is not given.
    #[arg(long, default_value_t = 2)]
    pub levels: u32,
    /// Shift steps L.
    #[arg(long, default_value_t = 1)]
    pub steps: u32,
    /// Reduction algorithm: ktree, chain or ring.
    #[arg(long, default_value = "ktree")]
    pub algorithm: String,
    #[arg(long)]
    pub json: bool,
}

/// The cost parts of the requested kernel.
pub fn kernel_parts(spec: &WaferSpec, args: &Args) -> Result<Parts> {
    let shape: RegionShape = args.region.parse().context("--region")?;
    let (w, h) = (shape.width, shape.height);
    if w > spec.fabric.width_pes || h > spec.fabric.height_pes {
        bail!(
            "--region {shape} does not fit the {}x{} fabric of {}",
            spec.fabric.width_pes,
            spec.fabric.height_pes,
            spec.name
        );
    }
    let alg = Algorithm::parse(&args.algorithm, args.levels, args.groups)?;
    let act = spec.precision.activation_dtype.size_bytes();
    Ok(match args.kind {
        Kind::Gemv => matrix::mesh_gemv_cost(spec, w, h, args.m, args.n, alg),
        Kind::Gemm => {
            if w != h {
                bail!("--region {shape}: Cannon's GEMM needs a square region");
            }
            let k = args.k.context("`wafer kernel gemm` needs --k")?;
            matrix::mesh_gemm_cost(spec, w, args.m, k, args.n)
        }
        Kind::Shift => matrix::shift_broadcast_cost(spec, w, args.m, args.steps),
        Kind::Allreduce => vec![(
            "column allreduce",
            Line::new(h).allreduce_cost(spec, wavelets(spec, args.n, act), alg),
        )],
    })
}

pub fn run(args: Args) -> Result<()> {
    let spec = load_spec(&args.hw)?;
    let parts = kernel_parts(&spec, &args)?;
    let total = matrix::total(&parts);
    if args.json {
        let items: Vec<_> = parts
            .iter()
            .map(|(name, c)| {
                let mut o = json!({ "part": name, "cycles": c.total().get() });
                for cat in Category::ALL {
                    o[cat.name()] = json!(c.get(cat).get());
                }
                o
            })
            .collect();
        let mut cats = serde_json::Map::new();
        for cat in Category::ALL {
            cats.insert(cat.name().into(), json!(total.get(cat).get()));
        }
        let out = json!({
            "kernel": format!("{:?}", args.kind).to_lowercase(),
            "hw": spec.name,
            "region": args.region,
            "cycles": total.total().get(),
            "microseconds": total.total().seconds_at(spec.clock_hz) * 1e6,
            "breakdown": { "parts": items, "categories": cats },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:?} on {} ({}): {:.2} cycles ({:.3} us at {:.2} GHz)",
            args.kind,
            args.region,
            spec.name,
            total.total().get(),
            total.total().seconds_at(spec.clock_hz) * 1e6,
            spec.clock_hz / 1e9
        );
        println!(
            "{:<20} {:>12} {:>10} {:>10} {:>10}",
            "part", "cycles", "compute", "fabric", "sync"
        );
        for (name, c) in &parts {
            println!(
                "{:<20} {:>12.2} {:>10.2} {:>10.2} {:>10.2}",
                name,
                c.total().get(),
                c.compute.get(),
                c.fabric.get(),
                c.sync.get()
            );
        }
    }
    Ok(())
}
