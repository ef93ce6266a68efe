//! `wafer sweep`: the estimate over a list of region sizes, contexts or values of
//! one spec field, written as CSV (one row per configuration) and a PNG plot of
//! decode tokens/s against the swept variable.
//!
//! Exactly one of `--region`, `--context`, `--prompt-tokens` may hold a comma
//! list, or `--field cost.reduce_level_cycles --values 5,8,11` sweeps a spec field
//! (any numeric field of `wafer hw`'s TOML, by its dotted path).

use super::common::load_spec;
use super::estimate::{options, resolve_model, Args as EstimateArgs, Target};
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::io::Write;
use std::path::PathBuf;
use wafer_core::WaferSpec;
use wafer_models::estimate::estimate;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Region size, or a comma list of sizes to sweep (e.g. 360,480,600).
    #[arg(long)]
    pub region: Option<String>,
    /// KV length, or a comma list to sweep.
    #[arg(long, default_value = "4096")]
    pub context: String,
    /// Prompt length, or a comma list to sweep.
    #[arg(long, default_value = "4096")]
    pub prompt_tokens: String,
    /// A spec field to sweep by its dotted TOML path (with --values).
    #[arg(long)]
    pub field: Option<String>,
    /// Values of --field, comma separated.
    #[arg(long)]
    pub values: Option<String>,
    /// CSV output path; the plot goes beside it with a .png extension.
    #[arg(long, default_value = "sweep.csv")]
    pub out: PathBuf,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Sets a numeric field of the spec by dotted path, keeping its TOML type.
fn set_field(spec: &WaferSpec, path: &str, value: &str) -> Result<WaferSpec> {
    let mut table = toml::Table::try_from(spec)?;
    let keys: Vec<&str> = path.split('.').collect();
    let mut cur = &mut table;
    for k in &keys[..keys.len() - 1] {
        cur = match cur.get_mut(*k) {
            Some(toml::Value::Table(t)) => t,
            _ => bail!("--field {path}: `{k}` is not a section of the spec"),
        };
    }
    let last = keys[keys.len() - 1];
    let slot = cur
        .get_mut(last)
        .with_context(|| format!("--field {path}: the spec has no field `{last}`"))?;
    *slot = match slot {
        toml::Value::Integer(_) => toml::Value::Integer(
            value
                .parse()
                .with_context(|| format!("--values: `{value}` is not an integer for {path}"))?,
        ),
        toml::Value::Float(_) => toml::Value::Float(
            value
                .parse()
                .with_context(|| format!("--values: `{value}` is not a number for {path}"))?,
        ),
        _ => bail!("--field {path} is not numeric"),
    };
    let text = toml::to_string(&table)?;
    Ok(WaferSpec::from_toml_str(
        &text,
        &format!("--field {path}={value}"),
    )?)
}

pub fn run(args: Args) -> Result<()> {
    let base = load_spec(&args.target.hw)?;
    let cfg = resolve_model(&args.target.model)?;
    let regions = args.region.as_deref().map(list).unwrap_or_default();
    let contexts = list(&args.context);
    let prompts = list(&args.prompt_tokens);
    let lists = [
        regions.len() > 1,
        contexts.len() > 1,
        prompts.len() > 1,
        args.field.is_some(),
    ];
    if lists.iter().filter(|b| **b).count() != 1 {
        bail!("give exactly one swept variable: a comma list in --region, --context or --prompt-tokens, or --field with --values");
    }
    let first = |v: &Vec<String>| v.first().cloned();
    let (name, values): (String, Vec<String>) = if regions.len() > 1 {
        ("region".into(), regions.clone())
    } else if contexts.len() > 1 {
        ("context".into(), contexts.clone())
    } else if prompts.len() > 1 {
        ("prompt_tokens".into(), prompts.clone())
    } else {
        let field = args.field.clone().expect("checked above");
        let values = list(args.values.as_deref().context("--field needs --values")?);
        (field, values)
    };
    let mut rows = Vec::new();
    for v in &values {
        let mut spec = base.clone();
        let mut ea = EstimateArgs {
            target: args.target.clone(),
            region: first(&regions),
            context: first(&contexts)
                .unwrap_or_default()
                .parse()
                .context("--context")?,
            prompt_tokens: first(&prompts)
                .unwrap_or_default()
                .parse()
                .context("--prompt-tokens")?,
            json: true,
        };
        match name.as_str() {
            "region" => ea.region = Some(v.clone()),
            "context" => ea.context = v.parse().with_context(|| format!("--context: `{v}`"))?,
            "prompt_tokens" => {
                ea.prompt_tokens = v
                    .parse()
                    .with_context(|| format!("--prompt-tokens: `{v}`"))?
            }
            field => spec = set_field(&base, field, v)?,
        }
        let e = estimate(&spec, &cfg, &options(&ea)?)?;
        rows.push((v.clone(), e));
    }
    let mut csv = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    writeln!(
        csv,
        "variable,value,region,wafers,context,prompt_tokens,decode_cycles_per_token,decode_tokens_per_s,ttft_cycles,prefill_tokens_per_s,fits_in_sram"
    )?;
    for (v, e) in &rows {
        writeln!(
            csv,
            "{name},{v},{},{},{},{},{:.1},{:.2},{:.1},{:.2},{}",
            e.region,
            e.wafers,
            e.context,
            e.prompt_tokens,
            e.decode_cycles_per_token.get(),
            e.decode_tokens_per_s,
            e.ttft_cycles.get(),
            e.prefill_tokens_per_s,
            e.sram.fits
        )?;
    }
    println!(
        "{name:>16} {:>18} {:>14} {:>16}",
        "decode cyc/token", "decode tok/s", "prefill tok/s"
    );
    for (v, e) in &rows {
        println!(
            "{v:>16} {:>18.0} {:>14.1} {:>16.1}",
            e.decode_cycles_per_token.get(),
            e.decode_tokens_per_s,
            e.prefill_tokens_per_s
        );
    }
    let png = args.out.with_extension("png");
    let xs: Vec<f64> = rows
        .iter()
        .map(|(v, e)| {
            if name == "region" {
                e.region.width as f64
            } else {
                v.parse().unwrap_or(0.0)
            }
        })
        .collect();
    let ys: Vec<f64> = rows.iter().map(|(_, e)| e.decode_tokens_per_s).collect();
    plot(&png, &name, &args.target.model, &xs, &ys)
        .with_context(|| format!("cannot draw {}", png.display()))?;
    println!("wrote {} and {}", args.out.display(), png.display());
    Ok(())
}

fn plot(path: &std::path::Path, xname: &str, model: &str, xs: &[f64], ys: &[f64]) -> Result<()> {
    // The font is compiled in, so the plot renders the same on any machine.
    let _ = plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        epaint_default_fonts::UBUNTU_LIGHT,
    );
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
    let y1 = ys.iter().cloned().fold(0.0, f64::max) * 1.1;
    let pad = ((x1 - x0) * 0.05).max(1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{model}: decode tokens/s vs {xname}"),
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), 0.0..y1.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc(xname)
        .y_desc("decode tokens/s")
        .draw()?;
    let pts: Vec<(f64, f64)> = xs.iter().copied().zip(ys.iter().copied()).collect();
    chart.draw_series(LineSeries::new(pts.clone(), &BLUE))?;
    chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
    root.present()?;
    Ok(())
}
