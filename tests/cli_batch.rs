//! `wafer generate --batch-prompts` through the binary on the tiny fixture
//! model: every sequence's tokens are those of its prompt run alone, on the
//! reference and the mesh engines; the summaries; clear errors for bad files
//! and modes that cannot run.

mod common;

use common::*;
use std::process::Output;

fn token_ids(o: &Output) -> Vec<u64> {
    json_lines(o)
        .iter()
        .filter_map(|l| l.get("token_id").and_then(|t| t.as_u64()))
        .collect()
}

/// Token ids of each sequence in a batch run's JSON lines.
fn batch_tokens(o: &Output, n: usize) -> Vec<Vec<u64>> {
    let mut seqs = vec![Vec::new(); n];
    for l in json_lines(o) {
        if let Some(t) = l.get("token_id").and_then(|t| t.as_u64()) {
            let s = l["sequence"].as_u64().unwrap() as usize;
            assert_eq!(l["index"].as_u64().unwrap() as usize, seqs[s].len());
            seqs[s].push(t);
        }
    }
    seqs
}

#[test]
fn batch_generation_gives_each_prompt_its_own_tokens_on_both_engines() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let model = model.to_str().unwrap();
    let prompts = ["hello there", "x", "a longer prompt with more bytes in it"];
    let file = tmp.path().join("prompts.txt");
    std::fs::write(&file, prompts.join("\n") + "\n").unwrap();
    let file = file.to_str().unwrap();
    let common = [
        "generate",
        "--model",
        model,
        "--json",
        "--max-tokens",
        "5",
        "--temperature",
        "0.8",
        "--seed",
        "9",
    ];
    for engine in ["reference", "mesh"] {
        let mut args = common.to_vec();
        args.extend(["--engine", engine, "--batch-prompts", file]);
        let o = succeeds(&args);
        let got = batch_tokens(&o, 3);
        for (i, p) in prompts.iter().enumerate() {
            let mut alone = common.to_vec();
            alone.extend(["--engine", engine, "--prompt", p]);
            assert_eq!(
                got[i],
                token_ids(&succeeds(&alone)),
                "{engine}: sequence {i}"
            );
        }
        let lines = json_lines(&o);
        let sums: Vec<&serde_json::Value> = lines.iter().filter_map(|l| l.get("summary")).collect();
        assert_eq!(sums.len(), 3);
        for (i, s) in sums.iter().enumerate() {
            assert_eq!(s["sequence"], i);
            assert_eq!(s["generated_tokens"], 5);
            assert_eq!(s["engine"], engine);
        }
        let b = &lines.last().unwrap()["batch_summary"];
        assert_eq!(b["sequences"], 3);
        assert_eq!(b["generated_tokens"], 15);
        if engine == "mesh" {
            let per = b["per_user_tokens_per_s"].as_f64().unwrap();
            let agg = b["aggregate_tokens_per_s"].as_f64().unwrap();
            assert!((3.0 * per - agg).abs() < 1e-9 * agg, "{b}");
        } else {
            assert!(b.get("aggregate_tokens_per_s").is_none());
        }
    }
    // Text mode: each sequence's text under its header.
    let o = succeeds(&[
        "generate",
        "--model",
        model,
        "--max-tokens",
        "3",
        "--batch-prompts",
        file,
    ]);
    let out = stdout(&o);
    for i in 0..3 {
        assert!(out.contains(&format!("--- sequence {i} ---")), "{out}");
    }
}

#[test]
fn bad_batch_files_and_modes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let model = model.to_str().unwrap();
    let blank = tmp.path().join("blank.txt");
    std::fs::write(&blank, "a\nb\n\nc\n").unwrap();
    let blank = blank.to_str().unwrap();
    fails(
        &["generate", "--model", model, "--batch-prompts", blank],
        &["--batch-prompts", "blank.txt", "line 3 is blank"],
    );
    let many = tmp.path().join("many.txt");
    std::fs::write(&many, "x\n".repeat(257)).unwrap();
    fails(
        &[
            "generate",
            "--model",
            model,
            "--batch-prompts",
            many.to_str().unwrap(),
        ],
        &["many.txt", "more than 256 prompts"],
    );
    fails(
        &[
            "generate",
            "--model",
            model,
            "--batch-prompts",
            "/nonexistent/p.txt",
        ],
        &["--batch-prompts /nonexistent/p.txt"],
    );
    let ok = tmp.path().join("ok.txt");
    std::fs::write(&ok, "a\n").unwrap();
    let ok = ok.to_str().unwrap();
    fails(
        &[
            "generate",
            "--model",
            model,
            "--batch-prompts",
            ok,
            "--engine",
            "fabric",
        ],
        &["--batch-prompts", "--engine mesh"],
    );
    fails(
        &[
            "generate",
            "--model",
            model,
            "--batch-prompts",
            ok,
            "--prompt",
            "hi",
        ],
        &["--batch-prompts", "--prompt"],
    );
    fails(
        &[
            "generate",
            "--model",
            model,
            "--batch-prompts",
            ok,
            "--speculate",
            "prompt-lookup",
        ],
        &["--batch-prompts", "--speculate"],
    );
}
