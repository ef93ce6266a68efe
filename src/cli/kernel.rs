//! `wafer kernel`: one kernel on one region, estimated with the same costs as
//! `wafer estimate` — the microbenchmarks of `shared/calibration.md` (C5-C7), which
//! researchers also use to compare collective algorithms.
//!
//! The figure is the one the measurements define: the mean over PEs of each PE's
//! own start-to-end cycles (see `docs/cost-model.md` for how the model reads it).
//! With `--sim fabric` the allreduce, the GEMV, the shift and the GEMM run instead, timing-only, on
//! the discrete-event fabric simulator (`wafer_sim::fabric`, `docs/fabric.md`),
//! whose figure is the same mean, printed beside the analytic one.

use super::common::load_spec;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::time::Instant;
use wafer_core::{Cycles, RegionShape, WaferSpec};
use wafer_sim::collective::{wavelets, Algorithm, Line};
use wafer_sim::fabric;
use wafer_sim::matrix::{self, Parts};
use wafer_sim::{Category, TreeShape};

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

/// The largest `--m`, `--n` or `--k`: 2^24 (16,777,216), beyond any model
/// dimension, and small enough that products of tile sizes stay exact.
pub const MAX_SIZE: u64 = 1 << 24;
/// The most K-tree levels: a tree of more levels of 2 would cover more than 2^32 PEs.
pub const MAX_LEVELS: u32 = 32;

/// Said under `--help` of the commands that take [`KernelArgs`].
pub const KERNEL_AFTER_HELP: &str = "Flags the chosen kernel or algorithm does not read (e.g. gemv --k, --levels with --algorithm chain) are refused, not ignored.";

#[derive(clap::Args)]
#[command(after_help = KERNEL_AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// How to estimate: the analytic cost model, or the fabric simulator
    /// (allreduce, gemv, shift and gemm; timing-only, wavelet by wavelet).
    #[arg(long, value_enum, default_value = "analytic")]
    pub sim: Sim,
    #[arg(long)]
    pub json: bool,
}

/// The kernel, its region and its options: shared by `wafer kernel` and
/// `wafer trace`, so both take the same flags.
#[derive(clap::Args)]
pub struct KernelArgs {
    pub kind: Kind,
    /// Hardware preset (wse3, wse2) or a TOML spec file.
    #[arg(long, default_value = "wse3")]
    pub hw: String,
    /// Region size WIDTHxHEIGHT (or one number for a square).
    #[arg(long)]
    pub region: String,
    /// GEMV/GEMM rows M; shift: values per PE (1 to 16,777,216; default 1).
    #[arg(long)]
    pub m: Option<u64>,
    /// GEMV/GEMM columns N; allreduce: values per PE (1 to 16,777,216; default 1).
    #[arg(long)]
    pub n: Option<u64>,
    /// GEMM inner dimension K (1 to 16,777,216; GEMM only).
    #[arg(long)]
    pub k: Option<u64>,
    /// K-tree groups per line (K = 2, MeshGEMV's G): 1 to the line's length in PEs.
    #[arg(long)]
    pub groups: Option<u32>,
    /// K-tree levels (K, 1 to 32) when `--groups` is not given; default 2.
    #[arg(long)]
    pub levels: Option<u32>,
    /// Shift steps L: at least 1, on a region at least 2 PEs wide (shift only; default 1).
    #[arg(long)]
    pub steps: Option<u32>,
    /// Reduction algorithm: ktree, chain or ring.
    #[arg(long, default_value = "ktree")]
    pub algorithm: String,
    /// On the fabric: when each PE starts — all at cycle 0, or as a launch
    /// wavefront from the north-west PE at one hop latency per hop.
    #[arg(long, value_enum)]
    pub launch: Option<LaunchArg>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sim {
    /// The closed-form cost model (`docs/cost-model.md`).
    Analytic,
    /// The discrete-event fabric simulator (`docs/fabric.md`).
    Fabric,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LaunchArg {
    Together,
    Wavefront,
}

/// The most PEs x wavelets per PE `--sim fabric` runs (each wavelet is a few
/// events per router it crosses).
pub const MAX_FABRIC_WAVELETS: u64 = 1 << 24;

/// Checks `--FLAG value` is a size in 1..=[`MAX_SIZE`].
fn size(flag: &str, v: Option<u64>) -> Result<u64> {
    let v = v.unwrap_or(1);
    if !(1..=MAX_SIZE).contains(&v) {
        bail!("--{flag} must be between 1 and {MAX_SIZE}, found {v}");
    }
    Ok(v)
}

/// Refuses a flag given to a kernel that does not use it.
fn unused(given: bool, flag: &str, kind: Kind) -> Result<()> {
    if given {
        bail!(
            "--{flag} does not apply to `wafer kernel {}`",
            format!("{kind:?}").to_lowercase()
        );
    }
    Ok(())
}

/// A kernel request whose flags have been checked.
struct Checked {
    shape: RegionShape,
    w: u32,
    h: u32,
    m: u64,
    n: u64,
    alg: Algorithm,
}

/// Checks the flags of the requested kernel against the spec.
fn check(spec: &WaferSpec, args: &KernelArgs) -> Result<Checked> {
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
    let kind = args.kind;
    if w == 0 || h == 0 {
        bail!("--region {shape}: a region needs at least one PE in each direction");
    }
    // Which flags each kernel reads: M, N, K, steps, and a reduction along the column.
    let (uses_m, uses_n, uses_k, uses_steps, reduces) = match kind {
        Kind::Gemv => (true, true, false, false, true),
        Kind::Gemm => (true, true, true, false, false),
        Kind::Shift => (true, false, false, true, false),
        Kind::Allreduce => (false, true, false, false, true),
    };
    unused(!uses_m && args.m.is_some(), "m", kind)?;
    unused(!uses_n && args.n.is_some(), "n", kind)?;
    unused(!uses_k && args.k.is_some(), "k", kind)?;
    unused(!uses_steps && args.steps.is_some(), "steps", kind)?;
    let (m, n) = (size("m", args.m)?, size("n", args.n)?);
    let alg = if reduces {
        let levels = args.levels.unwrap_or(2);
        if !(1..=MAX_LEVELS).contains(&levels) {
            bail!("--levels must be between 1 and {MAX_LEVELS}, found {levels}");
        }
        if let Some(g) = args.groups {
            // The reduction runs along each column: a line of `h` PEs.
            if !(1..=h).contains(&g) {
                bail!(
                    "--groups must be between 1 and the {h} PEs of a column of --region {shape}, found {g}"
                );
            }
        }
        let alg = Algorithm::parse(&args.algorithm, levels, args.groups)?;
        let tree = matches!(alg, Algorithm::KTree { .. } | Algorithm::MidKTree { .. });
        if !tree && (args.levels.is_some() || args.groups.is_some()) {
            bail!(
                "--levels and --groups shape a K-tree; they do not apply to --algorithm {}",
                args.algorithm
            );
        }
        if let Some(g) = args.groups {
            if levels != 2 {
                bail!("--groups applies to a K = 2 tree, found --levels {levels} (groups {g})");
            }
        }
        alg
    } else {
        unused(args.groups.is_some(), "groups", kind)?;
        unused(args.levels.is_some(), "levels", kind)?;
        unused(args.algorithm != "ktree", "algorithm", kind)?;
        Algorithm::Chain
    };
    Ok(Checked {
        shape,
        w,
        h,
        m,
        n,
        alg,
    })
}

/// The analytic cost parts of the requested kernel.
fn parts(spec: &WaferSpec, args: &KernelArgs, c: &Checked) -> Result<Parts> {
    let Checked {
        shape,
        w,
        h,
        m,
        n,
        alg,
    } = *c;
    let kind = args.kind;
    let act = spec.precision.activation_dtype.size_bytes();
    Ok(match kind {
        Kind::Gemv => matrix::mesh_gemv_cost(spec, w, h, m, n, alg),
        Kind::Gemm => {
            if w != h {
                bail!("--region {shape}: Cannon's GEMM needs a square region");
            }
            let k = size("k", Some(args.k.context("`wafer kernel gemm` needs --k")?))?;
            matrix::mesh_gemm_cost(spec, w, m, k, n)
        }
        Kind::Shift => {
            let steps = args.steps.unwrap_or(1);
            if w < 2 {
                bail!("--region {shape}: a shift needs a region at least 2 PEs wide");
            }
            // Steps are synchronous neighbour exchanges; there may be more of them
            // than PEs in the row (C5 measures 256 on a 144-wide region).
            if steps == 0 {
                bail!("--steps must be at least 1, found 0");
            }
            matrix::shift_broadcast_cost(spec, w, m, steps)
        }
        Kind::Allreduce => vec![(
            "column allreduce",
            Line::new(h).allreduce_cost(spec, wavelets(spec, n, act), alg),
        )],
    })
}

pub fn run(args: Args) -> Result<()> {
    let a = &args.kernel;
    let spec = load_spec(&a.hw)?;
    if args.sim == Sim::Analytic && a.launch.is_some() {
        bail!("--launch applies to --sim fabric only");
    }
    if args.sim == Sim::Fabric {
        return run_fabric(&spec, &args);
    }
    let checked = check(&spec, a)?;
    let parts = parts(&spec, a, &checked)?;
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
            "kernel": kind_name(a.kind),
            "hw": spec.name,
            "region": a.region,
            "cycles": total.total().get(),
            "microseconds": total.total().seconds_at(spec.clock_hz) * 1e6,
            "breakdown": { "parts": items, "categories": cats },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:?} on {} ({}): {:.2} cycles ({:.3} us at {:.2} GHz)",
            a.kind,
            a.region,
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

pub fn kind_name(kind: Kind) -> String {
    format!("{kind:?}").to_lowercase()
}

/// A kernel's fabric program, ready to run, and the analytic figure for it.
pub struct FabricKernel {
    pub program: fabric::FabricProgram,
    pub opts: fabric::RunOptions,
    /// The analytic model's cycles for the same options.
    pub analytic: Cycles,
    /// `together` or `wavefront`.
    pub launch: String,
}

/// Checks the kernel's flags and builds its step of the placed program as a
/// fabric program (timing-only), with the run options its flags ask for.
pub fn fabric_kernel(spec: &WaferSpec, args: &KernelArgs) -> Result<FabricKernel> {
    let c = &check(spec, args)?;
    let analytic = matrix::total(&parts(spec, args, c)?).total();
    if c.alg == Algorithm::Ring && !matches!(args.kind, Kind::Allreduce) {
        bail!("--algorithm ring is simulated on the fabric for `wafer kernel allreduce` only");
    }
    let act = spec.precision.activation_dtype.size_bytes();
    let pes = c.w as u64 * c.h as u64;
    // Values per PE and how many times each PE sends them.
    let gemm = match args.kind {
        Kind::Gemm => {
            let k = size("k", args.k)?;
            Some(matrix::mesh_gemm_program(spec, c.w, c.m, k, c.n))
        }
        _ => None,
    };
    let sent = match (&gemm, args.kind) {
        (Some(g), _) => {
            let cannon = g.steps[0]
                .cannon
                .context("a MeshGEMM step has Cannon rounds")?;
            let per_round =
                wavelets(spec, cannon.a_values, act) + wavelets(spec, cannon.b_values, act);
            pes.saturating_mul(per_round)
                .saturating_mul(cannon.p as u64)
        }
        (None, Kind::Shift) => pes
            .saturating_mul(wavelets(spec, c.m, act))
            .saturating_mul(args.steps.unwrap_or(1) as u64 + 1),
        // MeshGEMV: each PE reduces its tile of ceil(n / width) outputs.
        (None, Kind::Gemv) => pes.saturating_mul(wavelets(spec, c.n.div_ceil(c.w as u64), act)),
        (None, _) => pes.saturating_mul(wavelets(spec, c.n, act)),
    };
    if sent > MAX_FABRIC_WAVELETS {
        bail!(
            "--sim fabric on --region {} sends {sent} wavelets; at most {MAX_FABRIC_WAVELETS} (use a smaller region, fewer values or steps)",
            c.shape
        );
    }
    let program = match args.kind {
        Kind::Gemv => {
            let tree = TreeShape::new(c.h, c.alg)?;
            let step = matrix::mesh_gemv_program(spec, c.w, c.h, c.m, c.n, tree)
                .steps
                .swap_remove(0);
            fabric::step_program(spec, c.w, c.h, &step)?
        }
        Kind::Allreduce if c.alg == Algorithm::Ring => fabric::ring_allreduce_program(
            spec,
            c.w,
            c.h,
            wafer_sim::tiling::Axis::Column,
            c.n,
            act,
        )?,
        Kind::Allreduce => {
            let tree = TreeShape::new(c.h, c.alg)?;
            let step = fabric::column_allreduce_step(tree, c.n, act);
            fabric::step_program(spec, c.w, c.h, &step)?
        }
        Kind::Shift => {
            let steps = args.steps.unwrap_or(1);
            fabric::programs::row_shift_program(spec, c.w, c.h, c.m, act, steps, true)?
        }
        Kind::Gemm => {
            let g = gemm.context("the MeshGEMM program")?;
            fabric::programs::cannon_program(spec, c.w, c.h, &g.steps[0])?
        }
    };
    let launch = match args.launch.unwrap_or(LaunchArg::Together) {
        LaunchArg::Together => fabric::Launch::Together,
        LaunchArg::Wavefront => fabric::Launch::Wavefront { x: 0, y: 0 },
    };
    let opts = fabric::RunOptions {
        launch,
        ..fabric::RunOptions::default()
    };
    Ok(FabricKernel {
        program: program.program,
        opts,
        analytic,
        launch: format!("{:?}", args.launch.unwrap_or(LaunchArg::Together)).to_lowercase(),
    })
}

/// `--sim fabric`: the kernel's step of the placed program, simulated
/// timing-only wavelet by wavelet, beside the analytic figure.
fn run_fabric(spec: &WaferSpec, kargs: &Args) -> Result<()> {
    let args = &kargs.kernel;
    let FabricKernel {
        program,
        opts,
        analytic,
        launch: launch_name,
    } = fabric_kernel(spec, args)?;
    let t0 = Instant::now();
    let out = fabric::run(spec, &program, &opts)?;
    let wall_s = t0.elapsed().as_secs_f64();
    if kargs.json {
        let o = json!({
            "kernel": kind_name(args.kind),
            "hw": spec.name,
            "region": args.region,
            "sim": "fabric",
            "mode": "timing",
            "launch": launch_name,
            "cycles": out.cycles.get(),
            "analytic_cycles": analytic.get(),
            "span_cycles": out.span,
            "microseconds": out.cycles.seconds_at(spec.clock_hz) * 1e6,
            "events": out.events,
            "wavelet_hops": out.wavelet_hops,
            "max_queue_occupancy": out.max_queue_occupancy,
            "wall_s": wall_s,
        });
        println!("{}", serde_json::to_string_pretty(&o)?);
    } else {
        println!(
            "{:?} on {} ({}), fabric simulation (timing-only, launch {launch_name}): {:.2} cycles ({:.3} us at {:.2} GHz)",
            args.kind,
            args.region,
            spec.name,
            out.cycles.get(),
            out.cycles.seconds_at(spec.clock_hz) * 1e6,
            spec.clock_hz / 1e9
        );
        println!("  analytic model:       {:.2} cycles", analytic.get());
        println!("  span (first start to last end): {} cycles", out.span);
        println!(
            "  events {}, wavelet-hops {}, max queue occupancy {} wavelets, {:.3} s wall",
            out.events, out.wavelet_hops, out.max_queue_occupancy, wall_s
        );
    }
    Ok(())
}
