//! `wafer trace --model M --layer N` and `--token`: a small model on a small
//! wafer traces to the cycles `wafer estimate --sim fabric` reports for the
//! same options (a layer's span; the token's layers and head one after
//! another), its tracks sit at wafer coordinates, and bad flag combinations
//! are clear errors.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A small Llama-shaped model of `layers` layers and a 24 x 20 wafer of
/// wse3 PEs, in `dir`: (model dir, hw TOML).
fn small(dir: &Path, layers: usize) -> (PathBuf, PathBuf) {
    let m = dir.join("model");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(
        m.join("config.json"),
        format!(
            r#"{{"model_type":"llama","vocab_size":64,"hidden_size":32,"intermediate_size":48,
                "num_hidden_layers":{layers},"num_attention_heads":4,"num_key_value_heads":2,
                "head_dim":8,"max_position_embeddings":256}}"#
        ),
    )
    .unwrap();
    let hw = dir.join("small.toml");
    std::fs::write(
        &hw,
        "base = \"wse3\"\n[fabric]\nwidth_pes = 24\nheight_pes = 20\n",
    )
    .unwrap();
    (m, hw)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `wafer estimate --sim fabric --json` for the placement options `opts`
/// (the prompt no longer than the context, so the placement is the one
/// `wafer trace` and `wafer program` use).
fn estimate(model: &Path, hw: &Path, opts: &[&str]) -> Value {
    let mut a = vec![
        "estimate",
        "--model",
        s(model),
        "--hw",
        s(hw),
        "--prompt-tokens",
        "8",
        "--sim",
        "fabric",
        "--json",
    ];
    a.extend(opts);
    ok_json(&a)
}

fn trace_events(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_layer_trace_spans_the_layer_cycles_of_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let (model, hw) = small(dir.path(), 3);
    let out = dir.path().join("layer.json");
    let png = dir.path().join("layer.png");
    for strategy in ["packed", "layer-per-region"] {
        let opts = ["--wafers", "1", "--context", "40", "--strategy", strategy];
        let e = estimate(&model, &hw, &opts);
        let layers = e["fabric"]["layer_cycles"].as_array().unwrap().clone();
        assert_eq!(layers.len(), 3);
        for n in ["0", "2"] {
            let mut a = vec![
                "trace",
                "--model",
                s(&model),
                "--hw",
                s(&hw),
                "--layer",
                n,
                "--out",
                s(&out),
                "--png",
                s(&png),
                "--json",
            ];
            a.extend(opts);
            let t = ok_json(&a);
            let i: usize = n.parse().unwrap();
            assert_eq!(
                t["span_cycles"].as_f64().unwrap(),
                layers[i].as_f64().unwrap(),
                "{strategy} layer {n}"
            );
            let v = trace_events(&out);
            assert_eq!(v["otherData"]["span_cycles"], t["span_cycles"]);
            assert_eq!(v["otherData"]["layer"], i);
            // Every PE track lies in the region, every span in the layer's span.
            let region = &t["region"];
            let (w, h) = (
                region["width"].as_u64().unwrap(),
                region["height"].as_u64().unwrap(),
            );
            let span = t["span_cycles"].as_u64().unwrap();
            let events = v["traceEvents"].as_array().unwrap();
            let mut tasks = 0;
            for ev in events {
                if ev["ph"] == "X" && ev["cat"] == "task" {
                    tasks += 1;
                    let end = ev["ts"].as_u64().unwrap() + ev["dur"].as_u64().unwrap();
                    assert!(end <= span, "{ev}");
                    let pid = ev["pid"].as_u64().unwrap() - 1;
                    assert!(pid < w * h, "{ev}");
                }
            }
            assert!(tasks > 0);
            let img = image::open(&png).unwrap();
            assert!(img.width() > 0 && img.height() > 0);
        }
    }
}

#[test]
fn a_token_trace_runs_the_layers_and_head_one_after_another() {
    let dir = tempfile::tempdir().unwrap();
    let (model, hw) = small(dir.path(), 3);
    let out = dir.path().join("token.json");
    let png = dir.path().join("token.png");
    for strategy in ["packed", "layer-per-region"] {
        let opts = ["--wafers", "1", "--context", "40", "--strategy", strategy];
        let e = estimate(&model, &hw, &opts);
        let f = &e["fabric"];
        let mut a = vec![
            "trace",
            "--model",
            s(&model),
            "--hw",
            s(&hw),
            "--token",
            "--out",
            s(&out),
            "--png",
            s(&png),
            "--json",
        ];
        a.extend(opts);
        let t = ok_json(&a);
        // The token's simulated part is the estimate's token less its
        // analytic rest.
        let decode = e["decode_cycles_per_token"].as_f64().unwrap();
        let rest = f["analytic_rest_cycles"].as_f64().unwrap();
        let moved = f["transfer_cycles"].as_f64().unwrap();
        let total = t["simulated_cycles"].as_f64().unwrap();
        assert!(
            (total - (decode - rest - moved)).abs() <= 1e-9 * decode,
            "{strategy}: {total} vs {decode} - {rest} - {moved}"
        );
        assert_eq!(t["analytic_rest_cycles"].as_f64().unwrap(), rest);
        assert_eq!(t["transfer_cycles"].as_f64().unwrap(), moved);
        assert_eq!(t["wavelet_hops"], f["token_wavelet_hops"], "{strategy}");
        // Runs: the layers, then the head, each starting where the last ended.
        let runs = t["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 4);
        let mut start = 0;
        for (i, r) in runs.iter().enumerate() {
            assert_eq!(r["start"].as_u64().unwrap(), start, "{strategy} run {i}");
            let span = r["span_cycles"].as_f64().unwrap();
            let want = if i < 3 {
                f["layer_cycles"][i].as_f64().unwrap()
            } else {
                f["head_cycles"].as_f64().unwrap()
            };
            assert_eq!(span, want, "{strategy} run {i}");
            start += span as u64;
        }
        assert_eq!(runs[3]["name"], "LM head");

        let v = trace_events(&out);
        let other = &v["otherData"];
        assert_eq!(other["simulated_cycles"], t["simulated_cycles"]);
        assert_eq!(other["wavelet_hops"], f["token_wavelet_hops"]);
        assert_eq!(other["width"], 24);
        assert_eq!(other["height"], 20);
        let events = v["traceEvents"].as_array().unwrap();
        // The token track: one slice per run at its start.
        let token_pid = 24 * 20 + 2;
        let phases: Vec<&Value> = events
            .iter()
            .filter(|ev| ev["ph"] == "X" && ev["pid"] == token_pid)
            .collect();
        assert_eq!(phases.len(), 4);
        for (p, r) in phases.iter().zip(runs) {
            assert_eq!(p["ts"], r["start"]);
            assert_eq!(p["dur"], r["span_cycles"]);
            assert!(p["name"]
                .as_str()
                .unwrap()
                .starts_with(r["name"].as_str().unwrap()));
        }
        // Each program's tracks sit on its first run's region, in its time.
        let programs = t["programs"].as_array().unwrap();
        for (j, p) in programs.iter().enumerate() {
            let first = runs
                .iter()
                .position(|r| r["program"] == j)
                .expect("a run of each program");
            let reg = &runs[first]["region"];
            let (x0, y0) = (reg["x"].as_u64().unwrap(), reg["y"].as_u64().unwrap());
            let (w, h) = (
                reg["width"].as_u64().unwrap(),
                reg["height"].as_u64().unwrap(),
            );
            let t0 = runs[first]["start"].as_u64().unwrap();
            let span = p["span_cycles"].as_u64().unwrap();
            let mut n = 0;
            for ev in events.iter().filter(|ev| {
                ev["ph"] == "X"
                    && ev["cat"] == "task"
                    && ev["tid"].as_u64().unwrap() >> 16 == j as u64
            }) {
                n += 1;
                let pe = ev["pid"].as_u64().unwrap() - 1;
                let (x, y) = (pe % 24, pe / 24);
                assert!(
                    x >= x0 && x < x0 + w && y >= y0 && y < y0 + h,
                    "{strategy} {ev}"
                );
                let ts = ev["ts"].as_u64().unwrap();
                assert!(
                    ts >= t0 && ts + ev["dur"].as_u64().unwrap() <= t0 + span,
                    "{ev}"
                );
            }
            assert!(n > 0, "{strategy}: program {j} has task spans");
        }
        // Layer-per-region: three layers of one shape share one program
        // traced once; the head has its own.
        if strategy == "layer-per-region" {
            assert_eq!(programs.len(), 2, "{programs:?}");
            assert_eq!(programs[0]["runs"], "layers 0-2");
            assert_eq!(programs[1]["runs"], "LM head");
        }
        // The events written are the ones counted, within the budget.
        assert_eq!(t["trace"]["events"], events.len() as u64);
        assert!(events.len() as u64 <= t["trace"]["max_events"].as_u64().unwrap());
        let img = image::open(&png).unwrap();
        assert!(img.width() > 0);
    }
}

#[test]
fn a_small_budget_samples_the_token_and_a_tiny_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (model, hw) = small(dir.path(), 2);
    let out = dir.path().join("token.json");
    let base = [
        "trace",
        "--model",
        s(&model),
        "--hw",
        s(&hw),
        "--token",
        "--wafers",
        "1",
        "--context",
        "40",
        "--out",
        s(&out),
        "--json",
    ];
    let mut a = base.to_vec();
    a.extend(["--max-events", "3000"]);
    let t = ok_json(&a);
    let events = trace_events(&out)["traceEvents"].as_array().unwrap().len() as u64;
    assert!(events <= 3000, "{events}");
    assert_eq!(t["trace"]["events"], events);
    assert!(t["programs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["sample_stride"].as_u64().unwrap() > 1));
    let mut a = base.to_vec();
    a.extend(["--max-events", "5"]);
    fails(
        &a,
        &["--max-events 5", "overview track", "raise --max-events"],
    );
}

#[test]
fn bad_flag_combinations_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (model, hw) = small(dir.path(), 2);
    let out = dir.path().join("t.json");
    let (m, h, o) = (s(&model), s(&hw), s(&out));
    fails(
        &[
            "trace", "gemv", "--region", "8", "--model", m, "--layer", "0", "--out", o,
        ],
        &["a kernel or --model, not both"],
    );
    fails(&["trace", "--out", o], &["nothing to trace", "--model"]);
    fails(
        &["trace", "--model", m, "--hw", h, "--out", o],
        &["--model needs --layer N", "--token"],
    );
    fails(
        &[
            "trace", "--model", m, "--hw", h, "--layer", "0", "--token", "--out", o,
        ],
        &["--layer N or --token, not both"],
    );
    fails(
        &[
            "trace", "--model", m, "--hw", h, "--layer", "0", "--m", "4", "--launch", "together",
            "--out", o,
        ],
        &["--m, --launch only apply to a kernel"],
    );
    fails(
        &[
            "trace",
            "gemv",
            "--region",
            "8",
            "--layer",
            "0",
            "--context",
            "8",
            "--out",
            o,
        ],
        &["--layer, --context only apply with --model"],
    );
    fails(&["trace", "gemv", "--out", o], &["needs --region"]);
    fails(
        &[
            "trace",
            "--model",
            m,
            "--hw",
            h,
            "--wafers",
            "1",
            "--context",
            "40",
            "--layer",
            "2",
            "--out",
            o,
        ],
        &["--layer 2", "2 decoder layers"],
    );
    fails(
        &[
            "trace",
            "--model",
            m,
            "--hw",
            h,
            "--layer",
            "0",
            "--strategy",
            "diagonal",
            "--out",
            o,
        ],
        &["--strategy diagonal"],
    );
    assert!(!out.exists());
}
