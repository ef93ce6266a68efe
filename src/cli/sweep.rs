//! `wafer sweep`: the estimate over a list of region sizes, contexts, prompt
//! lengths, reduction-tree K values or values of one spec field, written as CSV
//! (one row per configuration) and a PNG plot of tokens/s against the swept
//! variable (prefill tokens/s when sweeping the prompt length, decode otherwise).
//!
//! Exactly one of `--region`, `--context`, `--prompt-tokens`, `--k` (the
//! reduction tree's K), `--users` (users in flight) may hold a comma list, or
//! `--field cost.reduce_level_cycles --values 5,8,11` sweeps a spec field (any
//! numeric field of `wafer hw`'s TOML, by its dotted path). The CSV records the
//! K, the prefill scheme and the users of every row, with per-user and
//! aggregate tokens/s (the plot shows aggregate tokens/s when sweeping users).

use super::common::{
    load_spec, parse_positive_count, warn_past_model_context, write_atomically, DEFAULT_CONTEXT,
};
use super::estimate::{options, plan_options, resolve_model, Args as EstimateArgs, Target};
use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use wafer_core::{Cycles, RegionShape, WaferSpec};
use wafer_lower::cost::PrefillScheme;
use wafer_lower::estimate::{estimate_for_users, Estimate};
use wafer_lower::placement::{place_for_users, PlaceOptions, MAX_USERS};
use wafer_models::ModelConfig;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Region size, or a comma list of sizes to sweep (e.g. 360,480,600).
    #[arg(long)]
    pub region: Option<String>,
    /// KV length (tokens, or with a k suffix: 8k = 8192), or a comma list to sweep.
    #[arg(long, default_value = DEFAULT_CONTEXT)]
    pub context: String,
    /// Prompt length (tokens or with a k suffix), or a comma list to sweep.
    #[arg(long, default_value = "4096")]
    pub prompt_tokens: String,
    /// K of the reduction trees (1 = chain), or a comma list to sweep; default 2.
    #[arg(long)]
    pub k: Option<String>,
    /// Users in flight (each with its own KV cache), or a comma list to sweep.
    #[arg(long, default_value = "1")]
    pub users: String,
    /// A spec field to sweep by its dotted TOML path (with --values).
    #[arg(long)]
    pub field: Option<String>,
    /// Values of --field, comma separated.
    #[arg(long)]
    pub values: Option<String>,
    /// CSV output path (not .png); the plot goes beside it with a .png extension.
    /// A point whose model does not fit in SRAM is a row with fits_in_sram=false
    /// and empty figures.
    #[arg(long, default_value = "sweep.csv")]
    pub out: PathBuf,
}

/// The figures of one estimate a sweep reports. A sweep keeps these, not the
/// estimate's plans (tens of kilobytes a point), so its memory does not grow
/// with the plans of every point.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub region: RegionShape,
    pub wafers: u32,
    pub context: usize,
    pub prompt_tokens: usize,
    pub decode_cycles_per_token: Cycles,
    pub decode_tokens_per_s: f64,
    pub ttft_cycles: Cycles,
    pub prefill_tokens_per_s: f64,
    pub fits: bool,
    pub reduce_k: u32,
    pub prefill_scheme: PrefillScheme,
    pub users: u64,
    pub per_user_tokens_per_s: f64,
    pub aggregate_tokens_per_s: f64,
}

impl From<&Estimate> for Figures {
    fn from(e: &Estimate) -> Figures {
        Figures {
            region: e.region,
            wafers: e.wafers,
            context: e.context,
            prompt_tokens: e.prompt_tokens,
            decode_cycles_per_token: e.decode_cycles_per_token,
            decode_tokens_per_s: e.decode_tokens_per_s,
            ttft_cycles: e.ttft_cycles,
            prefill_tokens_per_s: e.prefill_tokens_per_s,
            fits: e.sram.fits,
            reduce_k: e.reduce_k,
            prefill_scheme: e.prefill_scheme,
            // One user: the plain decode rate.
            users: e.users.as_ref().map_or(1, |u| u.users),
            per_user_tokens_per_s: e
                .users
                .as_ref()
                .map_or(e.decode_tokens_per_s, |u| u.per_user_tokens_per_s),
            aggregate_tokens_per_s: e
                .users
                .as_ref()
                .map_or(e.decode_tokens_per_s, |u| u.aggregate_tokens_per_s),
        }
    }
}

/// One point of a sweep: its figures, or, when the model does not fit in SRAM
/// there, what was asked and where the placement overflowed.
#[derive(Debug)]
pub enum Point {
    Fits(Figures),
    DoesNotFit {
        region: Option<RegionShape>,
        wafers: u32,
        context: usize,
        prompt_tokens: usize,
        k: u32,
        users: u64,
    },
}

impl Point {
    pub fn figures(&self) -> Option<&Figures> {
        match self {
            Point::Fits(e) => Some(e),
            Point::DoesNotFit { .. } => None,
        }
    }
}

/// A `--context` or `--prompt-tokens` value of the sweep, as a count.
fn count(flag: &str, v: &str) -> Result<usize> {
    parse_positive_count(v).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

/// The estimate of one point; a model that does not fit is a point, not an error.
fn point(spec: &WaferSpec, cfg: &ModelConfig, ea: &EstimateArgs) -> Result<Point> {
    let opts = options(ea)?;
    let plan_opts = plan_options(ea.k)?
        .with_prefill_scheme(super::estimate::prefill_scheme(&ea.prefill_scheme));
    match estimate_for_users(spec, cfg, &opts, &plan_opts, ea.users) {
        Ok(e) => Ok(Point::Fits(Figures::from(&e))),
        Err(err) => {
            let placed = place_for_users(
                cfg,
                spec,
                &PlaceOptions {
                    context_tokens: opts.context.max(opts.prompt_tokens) as u64,
                    region: opts.region,
                    wafers: opts.wafers,
                    strategy: opts.strategy,
                },
                ea.users,
            );
            match placed {
                Ok(p) if !p.fits() => Ok(Point::DoesNotFit {
                    region: p.layout().layers.first().map(|l| l.region.shape),
                    wafers: p.wafers,
                    context: opts.context,
                    prompt_tokens: opts.prompt_tokens,
                    k: plan_opts.reduce_k(),
                    users: ea.users,
                }),
                _ => Err(err),
            }
        }
    }
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
) -> Result<(String, Vec<(String, Point)>)> {
    let regions = args.region.as_deref().map(list).unwrap_or_default();
    let contexts = list(&args.context);
    let prompts = list(&args.prompt_tokens);
    let ks = args.k.as_deref().map(list).unwrap_or_default();
    let users = list(&args.users);
    let lists = [
        regions.len() > 1,
        contexts.len() > 1,
        prompts.len() > 1,
        ks.len() > 1,
        users.len() > 1,
        args.field.is_some(),
    ];
    if lists.iter().filter(|b| **b).count() != 1 {
        bail!("give exactly one swept variable: a comma list in --region, --context, --prompt-tokens, --k or --users, or --field with --values");
    }
    let parse_users = |v: &str| -> Result<u64> {
        match v.parse::<u64>() {
            Ok(b) if (1..=MAX_USERS).contains(&b) => Ok(b),
            _ => bail!("--users: `{v}` is not a count of users in 1..={MAX_USERS}"),
        }
    };
    // Every user count is checked before anything is estimated.
    let users_n = users
        .iter()
        .map(|v| parse_users(v))
        .collect::<Result<Vec<_>>>()?;
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
    } else if users.len() > 1 {
        ("users".into(), users.clone())
    } else {
        let field = args.field.clone().expect("checked above");
        let values = list(args.values.as_deref().context("--field needs --values")?);
        (field, values)
    };
    // Every context and prompt length is checked before anything is estimated.
    let contexts = contexts
        .iter()
        .map(|v| count("context", v))
        .collect::<Result<Vec<_>>>()?;
    let prompts = prompts
        .iter()
        .map(|v| count("prompt-tokens", v))
        .collect::<Result<Vec<_>>>()?;
    let model_max = cfg.max_position_embeddings;
    let mut warned = std::collections::BTreeSet::new();
    let mut rows = Vec::new();
    for v in &values {
        let mut spec = base.clone();
        let mut ea = EstimateArgs {
            target: args.target.clone(),
            region: first(&regions),
            context: contexts.first().copied().context("--context is empty")?,
            prompt_tokens: prompts
                .first()
                .copied()
                .context("--prompt-tokens is empty")?,
            k: fixed_k,
            prefill_scheme: "auto".into(),
            users: users_n.first().copied().context("--users is empty")?,
            sim: "analytic".into(),
            no_memo: false,
            json: true,
            client: Default::default(),
            speculate: Default::default(),
        };
        // The value column holds the count itself (8k is written 8192).
        let mut value = v.clone();
        match name.as_str() {
            "region" => ea.region = Some(v.clone()),
            "context" => {
                ea.context = count("context", v)?;
                value = ea.context.to_string();
            }
            "prompt_tokens" => {
                ea.prompt_tokens = count("prompt-tokens", v)?;
                value = ea.prompt_tokens.to_string();
            }
            "k" => ea.k = Some(parse_k(v)?),
            "users" => ea.users = parse_users(v)?,
            field => spec = set_field(base, field, v)?,
        }
        for (flag, n) in [
            ("--context", ea.context),
            ("--prompt-tokens", ea.prompt_tokens),
        ] {
            if warned.insert((flag, n)) {
                warn_past_model_context(flag, n as u64, &args.target.model, model_max);
            }
        }
        rows.push((value, point(&spec, cfg, &ea)?));
    }
    Ok((name, rows))
}

/// One CSV row per point, with a header. A point that does not fit has
/// fits_in_sram=false and empty figures.
pub fn write_csv(path: &Path, name: &str, rows: &[(String, Point)]) -> Result<()> {
    let mut text = String::from(
        "variable,value,region,wafers,context,prompt_tokens,decode_cycles_per_token,decode_tokens_per_s,ttft_cycles,prefill_tokens_per_s,fits_in_sram,k,prefill_scheme,users,per_user_tokens_per_s,aggregate_tokens_per_s\n",
    );
    for (v, p) in rows {
        let line = match p {
            Point::Fits(e) => format!(
                "{name},{v},{},{},{},{},{:.1},{:.2},{:.1},{:.2},{},{},{},{},{:.2},{:.2}",
                e.region,
                e.wafers,
                e.context,
                e.prompt_tokens,
                e.decode_cycles_per_token.get(),
                e.decode_tokens_per_s,
                e.ttft_cycles.get(),
                e.prefill_tokens_per_s,
                e.fits,
                e.reduce_k,
                e.prefill_scheme.name(),
                e.users,
                e.per_user_tokens_per_s,
                e.aggregate_tokens_per_s
            ),
            Point::DoesNotFit {
                region,
                wafers,
                context,
                prompt_tokens,
                k,
                users,
            } => format!(
                "{name},{v},{},{wafers},{context},{prompt_tokens},,,,,false,{k},,{users},,",
                region.map(|r| r.to_string()).unwrap_or_default()
            ),
        };
        text.push_str(&line);
        text.push('\n');
    }
    write_atomically(path, |tmp| {
        std::fs::write(tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

pub fn run(args: Args) -> Result<()> {
    let png = args.out.with_extension("png");
    if png == args.out {
        bail!(
            "--out {}: that is where the plot goes; give the CSV path (e.g. sweep.csv) and the plot is written beside it as .png",
            args.out.display()
        );
    }
    let base = load_spec(&args.target.hw)?;
    let cfg = resolve_model(&args.target.model)?;
    let (name, rows) = sweep(&args, &base, &cfg)?;
    // Both files are written before the table is printed, so a reader that stops
    // early (`| head -1`) cannot keep them from being written.
    write_csv(&args.out, &name, &rows)?;
    let fitting: Vec<(&String, &Figures)> = rows
        .iter()
        .filter_map(|(v, p)| p.figures().map(|e| (v, e)))
        .collect();
    let xs: Vec<f64> = fitting
        .iter()
        .map(|(v, e)| {
            if name == "region" {
                e.region.width as f64
            } else {
                v.parse().unwrap_or(0.0)
            }
        })
        .collect();
    // The prompt length changes only the prefill; users change the aggregate
    // rate; everything else moves decode.
    let (ys, yname): (Vec<f64>, &str) = if name == "users" {
        (
            fitting
                .iter()
                .map(|(_, e)| e.aggregate_tokens_per_s)
                .collect(),
            "aggregate decode tokens/s",
        )
    } else if name == "prompt_tokens" {
        (
            fitting
                .iter()
                .map(|(_, e)| e.prefill_tokens_per_s)
                .collect(),
            "prefill tokens/s",
        )
    } else {
        (
            fitting.iter().map(|(_, e)| e.decode_tokens_per_s).collect(),
            "decode tokens/s",
        )
    };
    let xlabel = if name == "k" {
        "K of the reduction trees (1 = chain)"
    } else {
        name.as_str()
    };
    let drew = !fitting.is_empty();
    if drew {
        write_atomically(&png, |tmp| {
            plot(tmp, xlabel, yname, &args.target.model, &xs, &ys)
        })
        .with_context(|| format!("cannot draw {}", png.display()))?;
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{name:>16} {:>18} {:>14} {:>16} {:>15}\n",
        "decode cyc/token", "decode tok/s", "prefill tok/s", "prefill scheme"
    ));
    for (v, p) in &rows {
        out.push_str(&match p {
            Point::Fits(e) => format!(
                "{v:>16} {:>18.0} {:>14.1} {:>16.1} {:>15}\n",
                e.decode_cycles_per_token.get(),
                e.decode_tokens_per_s,
                e.prefill_tokens_per_s,
                e.prefill_scheme.name()
            ),
            Point::DoesNotFit { .. } => format!(
                "{v:>16} {:>18} {:>14} {:>16} {:>15}\n",
                "n/a", "n/a", "n/a", "does not fit"
            ),
        });
    }
    if name == "users" {
        out.push_str(&format!(
            "{:>16} {:>18} {:>14}\n",
            "users", "tok/s per user", "aggregate tok/s"
        ));
        for (v, p) in &rows {
            if let Point::Fits(e) = p {
                out.push_str(&format!(
                    "{v:>16} {:>18.1} {:>14.1}\n",
                    e.per_user_tokens_per_s, e.aggregate_tokens_per_s
                ));
            }
        }
    }
    if drew {
        out.push_str(&format!(
            "wrote {} and {}\n",
            args.out.display(),
            png.display()
        ));
    } else {
        out.push_str(&format!(
            "wrote {} (no plot: the model fits at none of the points)\n",
            args.out.display()
        ));
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
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
            users: "1".into(),
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
        let e = rows[0].1.figures().unwrap();
        assert!((e.decode_cycles_per_token.get() - cycles[1]).abs() < 0.05);
    }

    /// Users each bring a KV cache and share the pipeline: below its bound the
    /// aggregate rate is the users times one user's, each user's is unchanged,
    /// and a count whose caches do not fit is a row that does not fit.
    #[test]
    fn a_sweep_over_users_scales_the_aggregate_until_the_caches_no_longer_fit() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path().join("u.csv"));
        a.k = None;
        a.region = None;
        a.target.wafers = Some(1);
        a.context = "8192".into();
        a.users = "1,2,4,65536".into();
        let cfg = resolve_model(&a.target.model).unwrap();
        let (name, rows) = sweep(&a, &wse3(), &cfg).unwrap();
        assert_eq!(name, "users");
        let f: Vec<&Figures> = rows.iter().filter_map(|(_, p)| p.figures()).collect();
        assert_eq!(f.len(), 3, "65,536 users' caches cannot fit one wafer");
        assert!(matches!(rows[3].1, Point::DoesNotFit { users: 65536, .. }));
        for (e, b) in f.iter().zip([1.0, 2.0, 4.0]) {
            assert_eq!(e.per_user_tokens_per_s, f[0].decode_tokens_per_s);
            assert!((e.aggregate_tokens_per_s - b * f[0].decode_tokens_per_s).abs() < 1e-6);
        }
        write_csv(&a.out, &name, &rows).unwrap();
        let text = std::fs::read_to_string(&a.out).unwrap();
        assert!(text
            .lines()
            .next()
            .unwrap()
            .ends_with(",users,per_user_tokens_per_s,aggregate_tokens_per_s"));
        assert!(
            text.lines().last().unwrap().ends_with(",false,2,,65536,,"),
            "{text}"
        );
        a.users = "1,0".into();
        let err = format!("{:#}", sweep(&a, &wse3(), &cfg).unwrap_err());
        assert!(err.contains("--users: `0`"), "{err}");
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
