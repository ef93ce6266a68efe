//! `wafer trace`: runs a kernel on the fabric simulator with the trace
//! recorder on, writes the Chrome trace-event JSON (open it in
//! ui.perfetto.dev) and optionally the link and queue heat map as a PNG, and
//! prints a short summary (`docs/trace-tutorial.md`).
//!
//! The kernel and its options are `wafer kernel`'s ([`KernelArgs`]); the
//! tracing itself ([`trace_program`]) takes any fabric program and run
//! options, so other programs (whole layers) trace the same way.
//!
//! Files are written to a temporary file beside the target and renamed over it
//! at the end, so an error never leaves a half-written file; an existing file
//! that is not a trace (or a PNG, for `--png`) is never overwritten.

use super::common::load_spec;
use super::heatmap;
use super::kernel::{fabric_kernel, kind_name, KernelArgs, KERNEL_AFTER_HELP};
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

#[derive(clap::Args)]
#[command(after_help = KERNEL_AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Where to write the Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing).
    #[arg(long)]
    pub out: PathBuf,
    /// Also draw the heat map of link utilisation and peak queue occupancy to this PNG.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// The most trace events the JSON may hold (1 to 6,000,000; 100 to 120
    /// bytes each). Past it, PE and link tracks are sampled every k-th row
    /// and column, k the smallest power of two that fits.
    #[arg(long, default_value_t = DEFAULT_TRACE_EVENTS)]
    pub max_events: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if !(1..=MAX_TRACE_EVENTS).contains(&args.max_events) {
        bail!(
            "--max-events must be between 1 and {MAX_TRACE_EVENTS}, found {}",
            args.max_events
        );
    }
    let a = &args.kernel;
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
    report(&spec, &title, &t, &args, fk.analytic.get())
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
    let topts = TraceOptions {
        max_events: o.max_events,
    };
    let (run, trace) = match run_traced(spec, program, opts, &topts) {
        Ok(r) => r,
        Err(TraceError::Budget { budget }) => bail!(
            "{} is too large for the trace budget of {budget} events (--max-events): even PE (0,0)'s track does not fit; raise --max-events (at most {MAX_TRACE_EVENTS})",
            o.title
        ),
        Err(e) => return Err(e.into()),
    };
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

/// A temporary file in `path`'s directory, after checking `path` is not a
/// directory and, if it exists, starts with `magic` (is `what`).
fn temp_beside(path: &Path, flag: &str, magic: &[u8], what: &str) -> Result<NamedTempFile> {
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
fn persist(tmp: NamedTempFile, path: &Path, flag: &str) -> Result<u64> {
    let file = tmp
        .persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {flag} {}", path.display()))?;
    Ok(file.metadata()?.len())
}

fn sampling(trace: &Trace) -> String {
    match trace.stride {
        1 => "every PE and link".to_string(),
        k => format!("one PE in {k} along each row and column, and its links"),
    }
}

fn report(spec: &WaferSpec, title: &str, t: &Traced, args: &Args, analytic: f64) -> Result<()> {
    let (run, trace) = (&t.run, &t.trace);
    let span = run.span.max(1) as f64;
    let busiest = trace.busiest_link();
    let peak = trace.peak_queue().filter(|q| q.peak > 0);
    if args.json {
        let o = json!({
            "program": title,
            "kernel": kind_name(args.kernel.kind),
            "hw": spec.name,
            "region": args.kernel.region,
            "cycles": run.cycles.get(),
            "analytic_cycles": analytic,
            "span_cycles": run.span,
            "events": run.events,
            "wavelet_hops": run.wavelet_hops,
            "max_queue_occupancy": run.max_queue_occupancy,
            "busiest_link": busiest.map(|b| json!({
                "x": b.x, "y": b.y, "dir": dir_name(b.dir), "wavelets": b.wavelets,
                "utilisation": b.wavelets as f64 / span,
            })),
            "peak_queue": peak.map(|q| json!({
                "x": q.x, "y": q.y, "colour": q.colour.0, "queue": role_name(q.role),
                "peak": q.peak, "capacity": q.capacity,
            })),
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
        println!("{}", serde_json::to_string_pretty(&o)?);
        return Ok(());
    }
    println!(
        "{title}: {:.2} cycles (mean per PE; analytic {analytic:.2}), span {} cycles",
        run.cycles.get(),
        run.span
    );
    println!(
        "  {} events, {} wavelet-hops, {:.3} s wall",
        run.events, run.wavelet_hops, t.wall_s
    );
    match busiest {
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
    if let Some(q) = peak {
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
    Ok(())
}
