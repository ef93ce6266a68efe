//! `wafer trace`: the trace and heat map of a kernel on the fabric simulator
//! agree with `wafer kernel --sim fabric` for the same options, the files
//! parse and decode, the budget samples the tracks, and bad paths or budgets
//! are clear errors that leave no file behind and overwrite nothing.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_gemv_trace_matches_the_kernel_run_and_its_files_open() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gemv.json");
    let png = dir.path().join("heat.png");
    let (o, p) = (out.to_str().unwrap(), png.to_str().unwrap());
    let size = ["--region", "16", "--m", "16", "--n", "16"];
    let mut args = vec!["trace", "gemv"];
    args.extend(size);
    args.extend(["--out", o, "--png", p, "--json"]);
    let t = ok_json(&args);
    // The same run as `wafer kernel gemv ... --sim fabric`.
    let mut args = vec!["kernel", "gemv"];
    args.extend(size);
    args.extend(["--sim", "fabric", "--json"]);
    let k = ok_json(&args);
    for key in [
        "cycles",
        "span_cycles",
        "wavelet_hops",
        "events",
        "max_queue_occupancy",
    ] {
        assert_eq!(t[key], k[key], "{key}");
    }
    assert_eq!(t["analytic_cycles"], k["analytic_cycles"]);
    assert_eq!(files_in(dir.path()), vec!["gemv.json", "heat.png"]);

    let text = std::fs::read(&out).unwrap();
    assert_eq!(t["trace"]["bytes"], text.len() as u64);
    let v: Value = serde_json::from_slice(&text).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    assert_eq!(t["trace"]["events"], events.len() as u64);
    assert_eq!(t["trace"]["sample_stride"], 1);
    assert_eq!(v["otherData"]["time_unit"], "cycle");
    assert_eq!(v["otherData"]["kernel"], "gemv");
    assert_eq!(v["otherData"]["wavelet_hops"], k["wavelet_hops"]);
    // One process per PE of the 16 x 16 region, and the links.
    let procs = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .count();
    assert_eq!(procs, 256 + 1);
    // The link tracks' busy cycles add up to the wavelet-hops.
    let link_pid = &events
        .iter()
        .find(|e| e["ph"] == "M" && e["args"]["name"] == "links")
        .unwrap()["pid"];
    let busy: u64 = events
        .iter()
        .filter(|e| e["ph"] == "X" && &e["pid"] == link_pid)
        .map(|e| e["dur"].as_u64().unwrap())
        .sum();
    assert_eq!(Value::from(busy), k["wavelet_hops"]);

    // The heat map: two 480-pixel panels (16 PEs of 30 px) with 24 px
    // around them, under a 76 + 22 px title band, above 92 px of legend.
    let img = image::open(&png).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (2 * 480 + 3 * 24, 76 + 22 + 480 + 92)
    );
}

#[test]
fn a_small_budget_samples_every_kth_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.json");
    let o = out.to_str().unwrap();
    let t = ok_json(&[
        "trace",
        "allreduce",
        "--region",
        "32",
        "--n",
        "8",
        "--out",
        o,
        "--max-events",
        "3000",
        "--json",
    ]);
    let k = t["trace"]["sample_stride"].as_u64().unwrap();
    assert!(k >= 2 && k.is_power_of_two(), "stride {k}");
    let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    assert!(events.len() <= 3000, "{} events", events.len());
    assert_eq!(v["otherData"]["sample_stride"], k);
    // Every PE track is at a multiple of k in both coordinates.
    for e in events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
    {
        let name = e["args"]["name"].as_str().unwrap();
        if let Some(xy) = name.strip_prefix("PE (") {
            let xy: Vec<u64> = xy
                .trim_end_matches(')')
                .split(',')
                .map(|s| s.parse().unwrap())
                .collect();
            assert!(
                xy[0].is_multiple_of(k) && xy[1].is_multiple_of(k),
                "{name} at stride {k}"
            );
        }
    }
    // The aggregates still count every wavelet-hop.
    assert_eq!(v["otherData"]["wavelet_hops"], t["wavelet_hops"]);
}

#[test]
fn bad_paths_and_budgets_are_errors_that_leave_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kernel = ["trace", "gemv", "--region", "16", "--m", "16", "--n", "16"];
    fn with<'a>(kernel: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = kernel.to_vec();
        a.extend_from_slice(extra);
        a
    }
    // A directory that does not exist.
    let missing = d.join("no/such/dir/t.json");
    fails(
        &with(&kernel, &["--out", missing.to_str().unwrap()]),
        &["cannot write --out", "no/such/dir"],
    );
    // The target is a directory.
    fails(
        &with(&kernel, &["--out", d.to_str().unwrap()]),
        &["--out", "is a directory"],
    );
    // A file that is not a trace is not overwritten.
    let notes = d.join("notes.json");
    std::fs::write(&notes, "my notes").unwrap();
    fails(
        &with(&kernel, &["--out", notes.to_str().unwrap()]),
        &["--out", "notes.json", "is not a trace"],
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes");
    let good = d.join("t.json");
    let g = good.to_str().unwrap();
    fails(
        &with(&kernel, &["--out", g, "--png", notes.to_str().unwrap()]),
        &["--png", "is not a PNG"],
    );
    // A PNG that cannot be written: nothing is written, the trace neither.
    fails(
        &with(&kernel, &["--out", g, "--png", missing.to_str().unwrap()]),
        &["cannot write --png"],
    );
    assert!(!good.exists());
    // Budgets.
    for bad in ["0", "6000001"] {
        fails(
            &with(&kernel, &["--out", g, "--max-events", bad]),
            &["--max-events must be between 1 and 6000000"],
        );
    }
    // An earlier trace survives a failed run over it.
    wafer(&with(&kernel, &["--out", g]));
    let before = std::fs::read(&good).unwrap();
    assert!(before.starts_with(b"{\"traceEvents\":["));
    fails(
        &with(&kernel, &["--out", g, "--max-events", "10"]),
        &[
            "--region 16",
            "trace budget of 10 events",
            "raise --max-events",
        ],
    );
    assert_eq!(std::fs::read(&good).unwrap(), before);
    assert_eq!(files_in(d), vec!["notes.json", "t.json"]);
    // The kernel's own checks apply.
    fails(
        &with(&kernel, &["--out", g, "--k", "4"]),
        &["--k does not apply to `wafer kernel gemv`"],
    );
    fails(
        &[
            "trace",
            "gemv",
            "--region",
            "16",
            "--algorithm",
            "ring",
            "--out",
            g,
        ],
        &["--algorithm ring is simulated on the fabric for `wafer kernel allreduce` only"],
    );
    fails(&["trace", "gemv", "--region", "16"], &["--out"]);
}
