//! `wafer place`: place a model on the wafer(s) and account for every PE's SRAM.
//! The placement rules live in `wafer_lower::placement`; this prints them.

use super::common::{
    check_png_path, group_thousands as g, load_model, load_spec, parse_tokens,
    warn_past_model_context, write_atomically, DEFAULT_CONTEXT,
};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use wafer_core::{Bytes, RegionShape};
use wafer_lower::placement::{place_for_users, PlaceOptions, Placement, Strategy, MAX_USERS};

/// `writeln!` into a `String`, which cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

#[derive(clap::Args)]
pub struct Args {
    /// A shape preset (see `wafer models`), a model directory (only config.json is read), or a GGUF file (only its metadata).
    #[arg(long)]
    model: String,
    /// Hardware: wse3, wse2, or a TOML file (see `wafer hw show`).
    #[arg(long, default_value = "wse3")]
    hw: String,
    /// Context length to account for: tokens, or with a k suffix (8k = 8192, 128k = 131072).
    #[arg(long, default_value = DEFAULT_CONTEXT, value_parser = parse_tokens)]
    context: u64,
    /// Region size WIDTHxHEIGHT in PEs (e.g. 420x420); automatic when omitted.
    #[arg(long)]
    region: Option<String>,
    /// Number of wafers of the pipeline; the smallest that fits when omitted.
    #[arg(long)]
    wafers: Option<u32>,
    /// `packed` (layers share a region while it has room) or `layer-per-region`.
    #[arg(long, default_value = "packed")]
    strategy: Strategy,
    /// Users in flight (1 to 65536): every layer holds each user's KV cache at the context.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=MAX_USERS))]
    users: u64,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
    /// Draw the wafer(s) to this PNG file (must end in .png): regions by layer, and SRAM fill per PE.
    #[arg(long)]
    png: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(path) = &args.png {
        check_png_path("--png", path)?;
    }
    let spec = load_spec(&args.hw)?;
    let (name, model) = load_model(&args.model)?;
    let region = match &args.region {
        Some(r) => Some(r.parse::<RegionShape>().context("--region")?),
        None => None,
    };
    warn_past_model_context(
        "--context",
        args.context,
        &name,
        model.max_position_embeddings,
    );
    let opts = PlaceOptions {
        context_tokens: args.context,
        region,
        wafers: args.wafers,
        strategy: args.strategy,
    };
    let p = place_for_users(&model, &spec, &opts, args.users)
        .with_context(|| format!("cannot place {name} on {}", spec.name))?;

    let mut out = String::new();
    if args.json {
        let json = to_json(&p, &name, &spec.name, model.max_position_embeddings);
        w!(out, "{json}");
    } else {
        write_report(
            &mut out,
            &p,
            &name,
            &spec.name,
            model.max_position_embeddings,
        );
    }
    if let Some(path) = &args.png {
        let title = format!(
            "{name} on {} x {} at {} tokens",
            p.wafers,
            spec.name,
            g(p.context_tokens)
        );
        // Drawn to a temporary file and renamed: a failure leaves any existing
        // file untouched, and the report is printed before the error.
        let drawn = write_atomically(path, |tmp| super::draw::draw_placement(&p, &title, tmp))
            .with_context(|| format!("cannot write {}", path.display()));
        if let Err(e) = drawn {
            emit(&out)?;
            return Err(e);
        }
        if !args.json {
            w!(out, "picture: {}", path.display());
        }
    }
    emit(&out)?;
    if !p.fits() {
        let o = p.advice.as_ref().map(|a| &a.overflow);
        let detail = o
            .map(|o| {
                format!(
                    "; PE {} of wafer {} needs {} bytes of {} ({} overflows first)",
                    o.pe,
                    o.wafer,
                    g(o.needed.total()),
                    g(o.available),
                    o.component
                )
            })
            .unwrap_or_default();
        bail!(
            "{name} does not fit on {} {} wafer(s) at {} tokens: the largest context this placement holds is {} tokens{detail}",
            p.wafers,
            spec.name,
            g(p.context_tokens),
            g(p.max_context_tokens)
        );
    }
    Ok(())
}

/// Writes the report to stdout; a closed pipe (`| head`) ends quietly.
fn emit(text: &str) -> Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

fn tokens(t: u64) -> String {
    if t == u64::MAX {
        "unbounded".into()
    } else {
        g(t)
    }
}

fn write_report(out: &mut String, p: &Placement, name: &str, hw: &str, model_max: usize) {
    let sram = p.sizes.sram;
    w!(
        out,
        "{name} on {hw} ({} PEs of {} bytes), context {} tokens",
        p.fabric,
        g(sram),
        g(p.context_tokens)
    );
    if p.users() > 1 {
        w!(
            out,
            "users: {} (every layer holds each user's KV cache; contexts are per user)",
            p.users()
        );
    }
    w!(
        out,
        "regions: {} grid of {} PE regions per wafer ({})",
        format_args!("{}x{}", p.grid.cols, p.grid.rows),
        p.grid.slot_shape(),
        if p.auto_region {
            "automatic: fewest wafers, near-square when that costs no wafer, then longest context, then squarest"
        } else {
            "--region"
        }
    );
    match p.wafers_requested {
        Some(n) if n > p.wafers => w!(
            out,
            "wafers used: {} of the {n} given (the model's layers spread over {} wafers at most; the others would hold nothing)",
            p.wafers,
            p.wafers
        ),
        _ => w!(out, "wafers used: {}", p.wafers),
    }
    w!(out, "");
    w!(
        out,
        "{:>3} {:>5}  {:<21} {:<22} {:>33} {:>8} {:>12}",
        "#",
        "wafer",
        "rectangle (x,y WxH)",
        "items",
        "max PE: weights+KV+buffers+reserve",
        "mean PE",
        "max context"
    );
    for i in 0..p.regions.len() {
        let r = p.region_report(i);
        let m = r.max_pe;
        w!(
            out,
            "{:>3} {:>5}  {:<21} {:<22} {:>33} {:>8.0} {:>12}{}",
            i,
            r.wafer,
            format!("{},{} {}x{}", r.x, r.y, r.width, r.height),
            r.items,
            format!(
                "{}+{}+{}+{} = {}",
                m.weights, m.kv, m.buffers, m.reserve, r.max_pe_total
            ),
            r.mean_pe_total,
            tokens(r.max_context_tokens),
            if r.fits { "" } else { "  OVERFLOW" }
        );
    }
    let (max, mean) = p.pe_summary();
    w!(out, "");
    w!(out, "per-PE bytes (of {} per PE):", g(sram));
    w!(
        out,
        "  max : weights {:>6}  KV {:>6}  buffers {:>5}  reserve {:>5}  total {:>6} ({:.1}%)",
        max.weights,
        max.kv,
        max.buffers,
        max.reserve,
        max.total(),
        100.0 * max.total() as f64 / sram as f64
    );
    w!(
        out,

        "  mean: weights {:>6.0}  KV {:>6.0}  buffers {:>5.0}  reserve {:>5.0}  total {:>6.0} ({:.1}%)",
        mean.weights,
        mean.kv,
        mean.buffers,
        mean.reserve,
        mean.total(),
        100.0 * mean.total() / sram as f64
    );
    w!(
        out,
        "model weights {} ({} bytes at 16 bits); KV cache at {} tokens {} ({} bytes)",
        Bytes(p.weight_bytes()),
        g(p.weight_bytes()),
        g(p.context_tokens),
        Bytes(p.kv_bytes()),
        g(p.kv_bytes())
    );
    w!(
        out,
        "wafer SRAM utilization: {:.1}% of {} ({} wafer(s)); {:.1}% of PEs are in regions",
        100.0 * p.sram_utilization(),
        Bytes(p.sram_bytes()),
        p.wafers,
        100.0 * p.pes_used() as f64 / (p.wafers as u64 * p.fabric.pes()) as f64
    );
    w!(
        out,
        "fits: {}",
        if p.fits() {
            "yes".to_string()
        } else {
            format!("NO, not at {} tokens", g(p.context_tokens))
        }
    );
    w!(
        out,

        "largest context that fits with this placement: {} tokens (the model itself is trained for {})",
        tokens(p.max_context_tokens),
        g(model_max as u64)
    );
    if let Some(a) = &p.advice {
        let o = &a.overflow;
        let r = p.region_report(o.region_index);
        w!(out, "");
        w!(
        out,

            "first overflow: region {} ({}) on wafer {}, PE {}: needs {} bytes (weights {}, KV {}, buffers {}, reserve {}) of {} available; the {} overflows",
            o.region_index,
            r.items,
            o.wafer,
            o.pe,
            g(o.needed.total()),
            g(o.needed.weights),
            g(o.needed.kv),
            g(o.needed.buffers),
            g(o.needed.reserve),
            g(o.available),
            o.component
        );
        w!(
            out,
            "in total the regions need {} bytes at this context; the {} wafer(s) hold {}",
            g(p.stored_bytes()),
            p.wafers,
            g(p.sram_bytes())
        );
        w!(out, "what would fit:");
        w!(
            out,
            "  - a shorter context: up to {} tokens (--context {})",
            tokens(p.max_context_tokens),
            p.max_context_tokens
        );
        if let Some(n) = a.wafers_needed {
            w!(
                out,
                "  - more wafers: {n} wafer(s) at {} tokens (--wafers {n})",
                g(p.context_tokens)
            );
        }
        if let Some((shape, t)) = a.auto_region {
            w!(
        out,

                "  - a different region: automatic {shape} regions on {} wafer(s) hold {} tokens (omit --region)",
                p.wafers,
                tokens(t)
            );
        }
    }
}

fn to_json(p: &Placement, name: &str, hw: &str, model_max: usize) -> serde_json::Value {
    let (max, mean) = p.pe_summary();
    let regions: Vec<_> = (0..p.regions.len()).map(|i| p.region_report(i)).collect();
    let mut v = json!({
        "model": name,
        "hw": hw,
        "context_tokens": p.context_tokens,
        "fits": p.fits(),
        "wafers": p.wafers,
        "wafers_requested": p.wafers_requested,
        "max_context_tokens": p.max_context_tokens,
        "model_max_position_embeddings": model_max,
        "weight_bytes": p.weight_bytes(),
        "kv_bytes": p.kv_bytes(),
        "stored_bytes": p.stored_bytes(),
        "sram_bytes": p.sram_bytes(),
        "sram_utilization": p.sram_utilization(),
        "sram_per_pe_bytes": p.sizes.sram,
        "region_grid": {
            "cols": p.grid.cols,
            "rows": p.grid.rows,
            "width": p.grid.slot_w,
            "height": p.grid.slot_h,
            "automatic": p.auto_region,
        },
        "max_pe": max,
        "mean_pe": mean,
        "regions": regions,
        "advice": p.advice,
    });
    // Only with more than one user, so one user's object is as before.
    if let (true, Some(m)) = (p.users() > 1, v.as_object_mut()) {
        m.insert("users".into(), json!(p.users()));
    }
    v
}
