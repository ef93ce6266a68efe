//! `wafer trace`: runs a kernel, or a model's layer or whole decode token
//! ([`model`]), on the fabric simulator with the trace recorder on, writes the
//! Chrome trace-event JSON (open it in ui.perfetto.dev) and optionally the
//! link and queue heat map as a PNG, and prints a short summary
//! (`docs/trace-tutorial.md`).
//!
//! A kernel's options are `wafer kernel`'s ([`KernelArgs`]); the tracing
//! itself ([`trace_program`]) takes any fabric program and run options, so
//! whole layers trace the same way.
//!
//! Files are written to a temporary file beside the target and renamed over it
//! at the end, so an error never leaves a half-written file; an existing file
//! that is not a trace (or a PNG, for `--png`) is never overwritten.

mod model;

use super::common::{load_spec, parse_positive_count};
use super::heatmap;
use super::kernel::{fabric_kernel, kind_name, KernelArgs, Kind, LaunchArg};
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tempfile::NamedTempFile;
use wafer_core::WaferSpec;
use wafer_sim::fabric::trace::chrome::{dir_name, role_name, write_chrome};
use wafer_sim::fabric::trace::{
    run_traced, Trace, TraceError, TraceOptions, DEFAULT_TRACE_EVENTS, MAX_TRACE_EVENTS,
};
use wafer_sim::fabric::{FabricProgram, FabricRun, RunOptions};

/// Said under `--help`.
const AFTER_HELP: &str = "Give a kernel (its flags are `wafer kernel`'s) or --model with --layer N or --token, not both. \
Flags the chosen kernel, algorithm or mode does not read (e.g. gemv --k, --levels with --algorithm chain, --m with --model) are refused, not ignored.";

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The kernel to trace; or give --model instead.
    #[arg(value_enum)]
    pub kernel: Option<Kind>,
    /// Trace a model's decode step instead of a kernel: a preset name, a
    /// directory holding config.json, or a GGUF file (its metadata). With
    /// --layer N or --token.
    #[arg(long)]
    pub model: Option<String>,
    /// With --model: the decoder layer whose decode program to trace (0-based).
    #[arg(long)]
    pub layer: Option<usize>,
    /// With --model: trace one whole decode token (every layer, then the LM head).
    #[arg(long)]
    pub token: bool,
    /// Hardware preset (wse3, wse2) or a TOML spec file.
    #[arg(long, default_value = "wse3")]
    pub hw: String,
    /// Region size WIDTHxHEIGHT (or one number for a square); a kernel needs
    /// it; with --model, the region per pipeline stage (default: the
    /// placement search's choice).
    #[arg(long)]
    pub region: Option<String>,
    /// GEMV/GEMM rows M; shift: values per PE (1 to 16,777,216; default 1).
    #[arg(long)]
    pub m: Option<u64>,
    /// GEMV/GEMM columns N; allreduce: values per PE (1 to 16,777,216; default 1).
    #[arg(long)]
    pub n: Option<u64>,
    /// A GEMM's inner dimension K (1 to 16,777,216); with --model, K of every
    /// reduction tree (levels of chains; 1 = chain; default 2).
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
    /// A kernel's reduction algorithm: ktree (default), chain or ring.
    #[arg(long)]
    pub algorithm: Option<String>,
    /// A kernel's launch: when each PE starts — all at cycle 0, or as a
    /// launch wavefront from the north-west PE at one hop latency per hop.
    #[arg(long, value_enum)]
    pub launch: Option<LaunchArg>,
    /// With --model: wafers in the pipeline (default: the fewest that hold
    /// the model at the context).
    #[arg(long)]
    pub wafers: Option<u32>,
    /// With --model: how layers share regions, `packed` (default) or `layer-per-region`.
    #[arg(long)]
    pub strategy: Option<String>,
    /// With --model: KV length of the decode step (tokens, or with a k
    /// suffix; default 8k); the placement holds it.
    #[arg(long, value_parser = parse_positive_count)]
    pub context: Option<usize>,
    /// Where to write the Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing).
    #[arg(long)]
    pub out: PathBuf,
    /// Also draw the heat map of link utilisation and peak queue occupancy to this PNG.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// The most trace events the JSON may hold (1 to 6,000,000; 100 to 120
    /// bytes each). Past it, PE and link tracks are sampled every k-th row
    /// and column, k the smallest power of two that fits (with --token, the
    /// budget is shared by the programs traced).
    #[arg(long, default_value_t = DEFAULT_TRACE_EVENTS)]
    pub max_events: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Refuses the flags in `given` that are set: they belong to the other mode.
fn refuse(given: &[(&str, bool)], why: &str) -> Result<()> {
    let set: Vec<&str> = given.iter().filter(|(_, g)| *g).map(|(f, _)| *f).collect();
    if !set.is_empty() {
        bail!("{} {why}", set.join(", "));
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    if !(1..=MAX_TRACE_EVENTS).contains(&args.max_events) {
        bail!(
            "--max-events must be between 1 and {MAX_TRACE_EVENTS}, found {}",
            args.max_events
        );
    }
    match (args.kernel, &args.model) {
        (Some(_), Some(_)) => bail!(
            "give a kernel or --model, not both (a kernel traces one kernel; --model traces a layer or a token of a model)"
        ),
        (None, None) => bail!(
            "nothing to trace: give a kernel (allreduce, gemv, shift, gemm) or --model M with --layer N or --token"
        ),
        (Some(kind), None) => {
            refuse(
                &[
                    ("--layer", args.layer.is_some()),
                    ("--token", args.token),
                    ("--wafers", args.wafers.is_some()),
                    ("--strategy", args.strategy.is_some()),
                    ("--context", args.context.is_some()),
                ],
                "only apply with --model, not to a kernel",
            )?;
            let Some(region) = args.region.clone() else {
                bail!("a kernel needs --region WIDTHxHEIGHT");
            };
            let ka = KernelArgs {
                kind,
                hw: args.hw.clone(),
                region,
                m: args.m,
                n: args.n,
                k: args.k,
                groups: args.groups,
                levels: args.levels,
                steps: args.steps,
                algorithm: args.algorithm.clone().unwrap_or_else(|| "ktree".into()),
                launch: args.launch,
            };
            run_kernel(&ka, &args)
        }
        (None, Some(_)) => {
            refuse(
                &[
                    ("--m", args.m.is_some()),
                    ("--n", args.n.is_some()),
                    ("--groups", args.groups.is_some()),
                    ("--levels", args.levels.is_some()),
                    ("--steps", args.steps.is_some()),
                    ("--algorithm", args.algorithm.is_some()),
                    ("--launch", args.launch.is_some()),
                ],
                "only apply to a kernel, not with --model",
            )?;
            model::run(&args)
        }
    }
}

fn run_kernel(a: &KernelArgs, args: &Args) -> Result<()> {
    let spec = load_spec(&a.hw)?;
    let fk = fabric_kernel(&spec, a)?;
    let title = format!(
        "wafer trace {} --region {} ({}, launch {})",
        kind_name(a.kind),
        a.region,
        spec.name,
        fk.launch
    );
    let mut other = Map::new();
    other.insert("program".into(), json!(title));
    other.insert("kernel".into(), json!(kind_name(a.kind)));
    other.insert("hw".into(), json!(spec.name));
    other.insert("region".into(), json!(a.region));
    other.insert("launch".into(), json!(fk.launch));
    other.insert("analytic_cycles".into(), json!(fk.analytic.get()));
    let t = trace_program(
        &spec,
        &fk.program,
        &fk.opts,
        &Outputs {
            title: &title,
            other,
            out: &args.out,
            png: args.png.as_deref(),
            max_events: args.max_events,
        },
    )?;
    report(&spec, &title, &t, a, args, fk.analytic.get())
}

/// Where and how a traced run is written.
pub struct Outputs<'a> {
    /// Names the program (the PNG's title, `otherData.program`).
    pub title: &'a str,
    /// Added to the JSON's `otherData`.
    pub other: Map<String, Value>,
    pub out: &'a Path,
    pub png: Option<&'a Path>,
    pub max_events: u64,
}

/// A traced run and what it wrote.
pub struct Traced {
    pub run: FabricRun,
    pub trace: Trace,
    pub json_bytes: u64,
    pub png_bytes: Option<u64>,
    pub wall_s: f64,
}

/// Runs `program` with the trace recorder and writes the JSON (and the PNG):
/// both to temporary files first, renamed into place once both are written.
pub fn trace_program(
    spec: &WaferSpec,
    program: &FabricProgram,
    opts: &RunOptions,
    o: &Outputs,
) -> Result<Traced> {
    // Check the targets before a possibly long run.
    let mut json_tmp = temp_beside(o.out, "--out", b"{\"traceEvents\":[", "a trace")?;
    let mut png_tmp = match o.png {
        Some(p) => Some(temp_beside(p, "--png", b"\x89PNG\r\n\x1a\n", "a PNG")?),
        None => None,
    };
    let t0 = Instant::now();
    let (run, trace) = traced(spec, program, opts, o.title, o.max_events)?;
    let wall_s = t0.elapsed().as_secs_f64();
    let mut other = o.other.clone();
    other.insert("cycles".into(), json!(run.cycles.get()));
    other.insert("sim_events".into(), json!(run.events));
    let mut w = BufWriter::new(json_tmp.as_file_mut());
    write_chrome(&trace, other, &mut w)
        .and_then(|_| w.flush())
        .with_context(|| format!("cannot write --out {}", o.out.display()))?;
    drop(w);
    if let (Some(tmp), Some(path)) = (png_tmp.as_mut(), o.png) {
        let subtitle = format!(
            "{} x {} PEs, {} cycles from first start to last end, {} wavelet-hops",
            trace.width, trace.height, run.span, run.wavelet_hops
        );
        let img = heatmap::render(&trace.heat(), o.title, &subtitle)?;
        let mut w = BufWriter::new(tmp.as_file_mut());
        img.write_to(&mut w, image::ImageFormat::Png)
            .context("encoding the PNG")
            .and_then(|_| w.flush().context("flushing"))
            .with_context(|| format!("cannot write --png {}", path.display()))?;
    }
    let json_bytes = persist(json_tmp, o.out, "--out")?;
    let png_bytes = match (png_tmp, o.png) {
        (Some(tmp), Some(path)) => Some(persist(tmp, path, "--png")?),
        _ => None,
    };
    Ok(Traced {
        run,
        trace,
        json_bytes,
        png_bytes,
        wall_s,
    })
}

/// Runs `program` with the trace recorder under a budget of `max_events`;
/// `what` names it in the error when even one PE's track does not fit.
pub(super) fn traced(
    spec: &WaferSpec,
    program: &FabricProgram,
    opts: &RunOptions,
    what: &str,
    max_events: u64,
) -> Result<(FabricRun, Trace)> {
    match run_traced(spec, program, opts, &TraceOptions { max_events }) {
        Ok(r) => Ok(r),
        Err(TraceError::Budget { budget }) => bail!(
            "{what} is too large for the trace budget of {budget} events (--max-events, shared by the programs traced): even PE (0,0)'s track does not fit; raise --max-events (at most {MAX_TRACE_EVENTS})"
        ),
        Err(e) => Err(e.into()),
    }
}

/// A temporary file in `path`'s directory, after checking `path` is not a
/// directory and, if it exists, starts with `magic` (is `what`).
pub(super) fn temp_beside(
    path: &Path,
    flag: &str,
    magic: &[u8],
    what: &str,
) -> Result<NamedTempFile> {
    if path.is_dir() {
        bail!("{flag} {} is a directory", path.display());
    }
    if path.exists() {
        let mut head = vec![0u8; magic.len()];
        let n = File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .with_context(|| format!("{flag} {} exists and cannot be read", path.display()))?;
        if head[..n] != *magic {
            bail!(
                "{flag} {} exists and is not {what}; it is left as it is (remove it or choose another path)",
                path.display()
            );
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut b = tempfile::Builder::new();
    b.prefix(".wafer-trace-");
    // Like any file the command creates: 0o666 less the umask (not 0o600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(dir).with_context(|| {
        format!(
            "cannot write {flag} {}: cannot create a file in {}",
            path.display(),
            dir.display()
        )
    })
}

/// Renames the finished temporary file onto `path`; returns its size.
pub(super) fn persist(tmp: NamedTempFile, path: &Path, flag: &str) -> Result<u64> {
    let file = tmp
        .persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {flag} {}", path.display()))?;
    Ok(file.metadata()?.len())
}

pub(super) fn sampling(trace: &Trace) -> String {
    match trace.stride {
        1 => "every PE and link".to_string(),
        k => format!("one PE in {k} along each row and column, and its links"),
    }
}

fn report(
    spec: &WaferSpec,
    title: &str,
    t: &Traced,
    a: &KernelArgs,
    args: &Args,
    analytic: f64,
) -> Result<()> {
    let run = &t.run;
    if args.json {
        let o = json!({
            "program": title,
            "kernel": kind_name(a.kind),
            "hw": spec.name,
            "region": a.region,
            "cycles": run.cycles.get(),
            "analytic_cycles": analytic,
        });
        print_json(o, t, args)?;
        return Ok(());
    }
    println!(
        "{title}: {:.2} cycles (mean per PE; analytic {analytic:.2}), span {} cycles",
        run.cycles.get(),
        run.span
    );
    print_run(t, args);
    Ok(())
}

/// Prints `summary` with the figures every traced run reports (span, events,
/// hops, the busiest link and queue, the files written), as pretty JSON.
pub(super) fn print_json(mut summary: Value, t: &Traced, args: &Args) -> Result<()> {
    let (run, trace) = (&t.run, &t.trace);
    let more = json!({
        "span_cycles": run.span,
        "events": run.events,
        "wavelet_hops": run.wavelet_hops,
        "max_queue_occupancy": run.max_queue_occupancy,
        "busiest_link": busiest_json(trace),
        "peak_queue": peak_json(trace),
        "trace": {
            "path": args.out,
            "bytes": t.json_bytes,
            "events": trace.events,
            "max_events": trace.max_events,
            "sample_stride": trace.stride,
        },
        "png": args.png.as_ref().map(|p| json!({ "path": p, "bytes": t.png_bytes })),
        "wall_s": t.wall_s,
    });
    if let (Some(m), Value::Object(more)) = (summary.as_object_mut(), more) {
        m.extend(more);
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// The text lines every traced run reports after its title: events and
/// hops, the busiest link and queue, the files written.
pub(super) fn print_run(t: &Traced, args: &Args) {
    let (run, trace) = (&t.run, &t.trace);
    println!(
        "  {} events, {} wavelet-hops, {:.3} s wall",
        run.events, run.wavelet_hops, t.wall_s
    );
    print_hot(trace);
    println!(
        "  trace: {} ({} bytes, {} events of at most {}; {})",
        args.out.display(),
        t.json_bytes,
        trace.events,
        trace.max_events,
        sampling(trace)
    );
    if let (Some(p), Some(bytes)) = (&args.png, t.png_bytes) {
        println!("  heat map: {} ({bytes} bytes)", p.display());
    }
}

/// The busiest link of `trace`, for the JSON summary.
pub(super) fn busiest_json(trace: &Trace) -> Value {
    let span = trace.span.max(1) as f64;
    json!(trace.busiest_link().map(|b| json!({
        "x": b.x, "y": b.y, "dir": dir_name(b.dir), "wavelets": b.wavelets,
        "utilisation": b.wavelets as f64 / span,
    })))
}

/// The fullest queue of `trace` (none when no queue held a wavelet).
pub(super) fn peak_json(trace: &Trace) -> Value {
    json!(trace.peak_queue().filter(|q| q.peak > 0).map(|q| json!({
        "x": q.x, "y": q.y, "colour": q.colour.0, "queue": role_name(q.role),
        "peak": q.peak, "capacity": q.capacity,
    })))
}

/// Prints the busiest link and the fullest queue of `trace`.
pub(super) fn print_hot(trace: &Trace) {
    let span = trace.span.max(1) as f64;
    match trace.busiest_link() {
        Some(b) => println!(
            "  busiest link: ({},{}) -> {}, {} wavelets, busy {:.1}% of the span",
            b.x,
            b.y,
            dir_name(b.dir),
            b.wavelets,
            100.0 * b.wavelets as f64 / span
        ),
        None => println!("  no link carried a wavelet"),
    }
    if let Some(q) = trace.peak_queue().filter(|q| q.peak > 0) {
        println!(
            "  peak queue: {} of {} wavelets, the {} of colour {} at PE ({},{})",
            q.peak,
            q.capacity,
            role_name(q.role),
            q.colour.0,
            q.x,
            q.y
        );
    }
}
