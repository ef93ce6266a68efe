//! `wafer sweep`: the estimate over a list of region sizes, contexts, prompt
//! lengths, reduction-tree K values or values of one spec field, written as CSV
//! (one row per configuration) and a PNG plot of tokens/s against the swept
//! variable (prefill tokens/s when sweeping the prompt length, decode otherwise).
//!
//! Exactly one of `--region`, `--context`, `--prompt-tokens`, `--k` (the
//! reduction tree's K) may hold a comma list, or
//! `--field cost.reduce_level_cycles --values 5,8,11` sweeps a spec field (any
//! numeric field of `wafer hw`'s TOML, by its dotted path). The CSV records the
//! K and the prefill scheme of every row.

use super::common::load_spec;
use super::estimate::{options, plan_options, resolve_model, Args as EstimateArgs, Target};
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use wafer_core::WaferSpec;
use wafer_models::estimate::{estimate_with, Estimate};
use wafer_models::ModelConfig;

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
    /// K of the reduction trees (1 = chain), or a comma list to sweep; default 2.
    #[arg(long)]
    pub k: Option<String>,
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

/// The swept variable's name and one estimate per value, in the order given.
pub fn sweep(
    args: &Args,
    base: &WaferSpec,
    cfg: &ModelConfig,
) -> Result<(String, Vec<(String, Estimate)>)> {
    let regions = args.region.as_deref().map(list).unwrap_or_default();
    let contexts = list(&args.context);
    let prompts = list(&args.prompt_tokens);
    let ks = args.k.as_deref().map(list).unwrap_or_default();
    let lists = [
        regions.len() > 1,
        contexts.len() > 1,
        prompts.len() > 1,
        ks.len() > 1,
        args.field.is_some(),
    ];
    if lists.iter().filter(|b| **b).count() != 1 {
        bail!("give exactly one swept variable: a comma list in --region, --context, --prompt-tokens or --k, or --field with --values");
    }
    let first = |v: &Vec<String>| v.first().cloned();
    let parse_k = |v: &str| -> Result<u32> {
        v.parse()
            .with_context(|| format!("--k: `{v}` is not a whole number"))
    };
    // Every K is checked before anything is estimated.
    for k in &ks {
        plan_options(Some(parse_k(k)?))?;
    }
    let fixed_k = match first(&ks) {
        Some(k) if ks.len() == 1 => Some(parse_k(&k)?),
        _ => None,
    };
    let (name, values): (String, Vec<String>) = if regions.len() > 1 {
        ("region".into(), regions.clone())
    } else if contexts.len() > 1 {
        ("context".into(), contexts.clone())
    } else if prompts.len() > 1 {
        ("prompt_tokens".into(), prompts.clone())
    } else if ks.len() > 1 {
        ("k".into(), ks.clone())
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
            k: fixed_k,
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
            "k" => ea.k = Some(parse_k(v)?),
            field => spec = set_field(base, field, v)?,
        }
        let e = estimate_with(&spec, cfg, &options(&ea)?, &plan_options(ea.k)?)?;
        rows.push((v.clone(), e));
    }
    Ok((name, rows))
}

/// One CSV row per estimate, with a header.
pub fn write_csv(path: &Path, name: &str, rows: &[(String, Estimate)]) -> Result<()> {
    let mut csv =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(
        csv,
        "variable,value,region,wafers,context,prompt_tokens,decode_cycles_per_token,decode_tokens_per_s,ttft_cycles,prefill_tokens_per_s,fits_in_sram,k,prefill_scheme"
    )?;
    for (v, e) in rows {
        writeln!(
            csv,
            "{name},{v},{},{},{},{},{:.1},{:.2},{:.1},{:.2},{},{},{}",
            e.region,
            e.wafers,
            e.context,
            e.prompt_tokens,
            e.decode_cycles_per_token.get(),
            e.decode_tokens_per_s,
            e.ttft_cycles.get(),
            e.prefill_tokens_per_s,
            e.sram.fits,
            e.reduce_k,
            e.prefill_scheme.name()
        )?;
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    let base = load_spec(&args.target.hw)?;
    let cfg = resolve_model(&args.target.model)?;
    let (name, rows) = sweep(&args, &base, &cfg)?;
    write_csv(&args.out, &name, &rows)?;
    println!(
        "{name:>16} {:>18} {:>14} {:>16} {:>15}",
        "decode cyc/token", "decode tok/s", "prefill tok/s", "prefill scheme"
    );
    for (v, e) in &rows {
        println!(
            "{v:>16} {:>18.0} {:>14.1} {:>16.1} {:>15}",
            e.decode_cycles_per_token.get(),
            e.decode_tokens_per_s,
            e.prefill_tokens_per_s,
            e.prefill_scheme.name()
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
    // The prompt length changes only the prefill; everything else moves decode.
    let (ys, yname): (Vec<f64>, &str) = if name == "prompt_tokens" {
        (
            rows.iter().map(|(_, e)| e.prefill_tokens_per_s).collect(),
            "prefill tokens/s",
        )
    } else {
        (
            rows.iter().map(|(_, e)| e.decode_tokens_per_s).collect(),
            "decode tokens/s",
        )
    };
    let xlabel = if name == "k" {
        "K of the reduction trees (1 = chain)"
    } else {
        name.as_str()
    };
    plot(&png, xlabel, yname, &args.target.model, &xs, &ys)
        .with_context(|| format!("cannot draw {}", png.display()))?;
    println!("wrote {} and {}", args.out.display(), png.display());
    Ok(())
}

fn plot(
    path: &std::path::Path,
    xname: &str,
    yname: &str,
    model: &str,
    xs: &[f64],
    ys: &[f64],
) -> Result<()> {
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
        .caption(format!("{model}: {yname} vs {xname}"), ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), 0.0..y1.max(1.0))?;
    chart.configure_mesh().x_desc(xname).y_desc(yname).draw()?;
    let pts: Vec<(f64, f64)> = xs.iter().copied().zip(ys.iter().copied()).collect();
    chart.draw_series(LineSeries::new(pts.clone(), &BLUE))?;
    chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::spec::wse3;

    fn args(out: PathBuf) -> Args {
        Args {
            target: Target {
                model: "llama-3.1-8b".into(),
                hw: "wse3".into(),
                wafers: None,
                strategy: "packed".into(),
            },
            region: Some("360x360".into()),
            context: "4096".into(),
            prompt_tokens: "4096".into(),
            k: Some("1,2,3,4".into()),
            field: None,
            values: None,
            out,
        }
    }

    #[test]
    fn a_sweep_over_k_writes_one_row_per_k() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path().join("k.csv"));
        let cfg = resolve_model(&a.target.model).unwrap();
        let (name, rows) = sweep(&a, &wse3(), &cfg).unwrap();
        assert_eq!(name, "k");
        write_csv(&a.out, &name, &rows).unwrap();
        let text = std::fs::read_to_string(&a.out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        let header: Vec<&str> = lines[0].split(',').collect();
        let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
        let (k, decode) = (col("k"), col("decode_cycles_per_token"));
        let cells: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
        let ks: Vec<&str> = cells.iter().map(|c| c[k]).collect();
        assert_eq!(ks, ["1", "2", "3", "4"]);
        assert!(cells
            .iter()
            .all(|c| c[0] == "k" && c[col("prefill_scheme")] == "gemm"));
        let cycles: Vec<f64> = cells.iter().map(|c| c[decode].parse().unwrap()).collect();
        // The chain is the slowest reduction on 360-PE lines.
        assert!(cycles[0] > cycles[1], "{cycles:?}");
        // K = 2 is the default estimate.
        let mut one = args(dir.path().join("x.csv"));
        one.k = None;
        one.context = "4096,8192".into();
        let (_, rows) = sweep(&one, &wse3(), &cfg).unwrap();
        // (the CSV keeps one decimal)
        assert!((rows[0].1.decode_cycles_per_token.get() - cycles[1]).abs() < 0.05);
    }

    #[test]
    fn bad_k_values_are_refused_before_estimating() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path().join("k.csv"));
        a.k = Some("2,0".into());
        let cfg = resolve_model(&a.target.model).unwrap();
        let err = format!("{:#}", sweep(&a, &wse3(), &cfg).unwrap_err());
        assert!(err.contains("--k 0") && err.contains("K = 0"), "{err}");
        a.k = Some("2,two".into());
        let err = format!("{:#}", sweep(&a, &wse3(), &cfg).unwrap_err());
        assert!(err.contains("`two`"), "{err}");
        a.k = Some("2,3".into());
        a.context = "4096,8192".into();
        let err = format!("{:#}", sweep(&a, &wse3(), &cfg).unwrap_err());
        assert!(err.contains("exactly one swept variable"), "{err}");
    }
}
