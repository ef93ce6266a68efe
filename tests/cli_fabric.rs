//! `wafer generate --engine fabric` and `wafer estimate --sim fabric` through
//! the binary: the tokens are the mesh's (and the reference's), the cycles are
//! the fabric simulator's with the analytic figure beside them, and one
//! simulation per distinct program gives the same figures as one per layer.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// A 48 x 40 wafer of 1 MiB PEs: small regions, so the fabric runs are quick.
fn small_hw(dir: &Path) -> PathBuf {
    let p = dir.join("small.toml");
    std::fs::write(
        &p,
        "base = \"wse3\"\n[fabric]\nwidth_pes = 48\nheight_pes = 40\n[pe]\nsram_bytes = 1048576\n",
    )
    .unwrap();
    p
}

/// Token ids and the summary of `wafer generate --json`.
fn generate(args: &[&str]) -> (Vec<u64>, serde_json::Value) {
    let o = succeeds(args);
    let mut ids = Vec::new();
    let mut summary = serde_json::Value::Null;
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(id) = v.get("token_id") {
            ids.push(id.as_u64().unwrap());
        } else if let Some(s) = v.get("summary") {
            summary = s.clone();
        }
    }
    (ids, summary)
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is a number in {v}"))
}

fn fabric_matches_mesh_and_reference(model: &str, hw: &str, prompt: &str, tokens: &str) {
    let common = [
        "generate",
        "--model",
        model,
        "--prompt",
        prompt,
        "--max-tokens",
        tokens,
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = common.to_vec();
        a.extend_from_slice(&["--temperature", "0", "--json"]);
        a.extend_from_slice(extra);
        generate(&a)
    };
    let (reference, _) = with(&["--engine", "reference"]);
    let (mesh, ms) = with(&["--engine", "mesh", "--hw", hw]);
    let (fabric, fs) = with(&["--engine", "fabric", "--hw", hw]);
    assert_eq!(fabric, mesh, "the fabric engine's values are the mesh's");
    assert_eq!(fabric, reference);
    assert_eq!(fs["engine"], "fabric");
    // The plan's figures, reported beside the simulation's, are the mesh engine's.
    assert_eq!(
        num(&fs, "analytic_decode_cycles_per_token"),
        num(&ms, "decode_cycles_per_token")
    );
    assert_eq!(num(&fs, "analytic_ttft_cycles"), num(&ms, "ttft_cycles"));
    // The simulation's own figures, and its speed.
    let d = num(&fs, "decode_cycles_per_token");
    assert!(d > 0.0 && d != num(&ms, "decode_cycles_per_token"));
    assert!(num(&fs, "ttft_cycles") > 0.0);
    assert!(num(&fs, "simulated_tokens_per_s") > 0.0);
    assert!(num(&fs, "wavelet_hops_per_wall_s") > 0.0);
    assert!(num(&fs, "fabric_simulations") >= 2.0);
}

#[test]
fn generate_on_the_fabric_gives_the_meshs_tokens_with_simulated_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let hw = small_hw(dir.path());
    fabric_matches_mesh_and_reference(model.to_str().unwrap(), hw.to_str().unwrap(), "abcabc", "6");
}

#[test]
fn smollm2_on_the_fabric_keeps_the_reference_tokens() {
    let Some(model) = real_model_dir() else {
        return;
    };
    let model = model.to_str().expect("a UTF-8 model path");
    let dir = tempfile::tempdir().unwrap();
    let hw = small_hw(dir.path());
    // Four prompts of different kinds, 16 greedy tokens each.
    for prompt in [
        "The capital of France is",
        "def fibonacci(n):",
        "Write a haiku about the sea.",
        "List three prime numbers:",
    ] {
        fabric_matches_mesh_and_reference(model, hw.to_str().unwrap(), prompt, "16");
    }
}

#[test]
fn estimate_on_the_fabric_reports_both_figures_and_memo_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let hw = small_hw(dir.path());
    let est = |extra: &[&str]| -> serde_json::Value {
        let mut a = vec![
            "estimate",
            "--model",
            model.to_str().unwrap(),
            "--hw",
            hw.to_str().unwrap(),
            "--context",
            "64",
            "--prompt-tokens",
            "8",
            "--json",
        ];
        a.extend_from_slice(extra);
        serde_json::from_slice(&succeeds(&a).stdout).unwrap()
    };
    let analytic = est(&[]);
    let fabric = est(&["--sim", "fabric"]);
    let every = est(&["--sim", "fabric", "--no-memo"]);
    assert_eq!(
        num(&fabric, "analytic_decode_cycles_per_token"),
        num(&analytic, "decode_cycles_per_token")
    );
    assert_eq!(
        num(&fabric, "decode_cycles_per_token"),
        num(&every, "decode_cycles_per_token")
    );
    let layers = fabric["fabric"]["layer_cycles"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        analytic["breakdown"]["decode"]["layers"]
            .as_array()
            .unwrap()
            .len()
    );
    // The token is its parts.
    let sum: f64 = layers.iter().map(|c| c.as_f64().unwrap()).sum::<f64>()
        + num(&fabric["fabric"], "head_cycles")
        + num(&fabric["fabric"], "transfer_cycles")
        + num(&fabric["fabric"], "analytic_rest_cycles");
    assert_eq!(num(&fabric, "decode_cycles_per_token"), sum);
    // The transfers run on the fabric too, with or without the memo.
    assert_eq!(
        num(&fabric["fabric"], "transfer_cycles"),
        num(&every["fabric"], "transfer_cycles")
    );
    assert!(num(&fabric["fabric"], "transfer_cycles") > 0.0);
    assert!(
        num(&every["fabric"], "transfer_simulations")
            >= num(&fabric["fabric"], "transfer_simulations")
    );
    assert!(num(&every["fabric"], "simulations") > num(&fabric["fabric"], "simulations"));
    for key in ["ttft_cycles", "decode_tokens_per_s"] {
        assert!(num(&fabric, key) > 0.0, "{key}");
    }
    // The prefill: simulated when its scheme can be (the analytic figure
    // beside it), else analytic with the reason; the memo changes nothing.
    assert_eq!(
        num(&fabric, "analytic_ttft_cycles"),
        num(&analytic, "ttft_cycles")
    );
    assert_eq!(num(&fabric, "ttft_cycles"), num(&every, "ttft_cycles"));
    let gemm = est(&["--sim", "fabric", "--prefill-scheme", "gemm"]);
    assert_eq!(gemm["ttft_source"], "fabric", "{gemm}");
    let p = &gemm["fabric"]["prefill"];
    assert_eq!(p["scheme"], "gemm");
    let sum = num(p, "layer_cycles")
        + num(p, "head_cycles")
        + num(p, "transfer_cycles")
        + num(p, "analytic_rest_cycles");
    assert_eq!(num(&gemm, "ttft_cycles"), sum);
    assert!(num(p, "events") > 0.0 && num(p, "wavelet_hops") > 0.0);
    let tbt = est(&["--sim", "fabric", "--prefill-scheme", "token-by-token"]);
    assert_eq!(tbt["ttft_source"], "analytic");
    assert_eq!(num(&tbt, "ttft_cycles"), num(&tbt, "analytic_ttft_cycles"));
    assert!(
        tbt["ttft_note"]
            .as_str()
            .unwrap()
            .contains("token_by_token"),
        "{tbt}"
    );
}
