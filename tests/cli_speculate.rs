//! `wafer generate --speculate` and `wafer estimate --speculate` through the
//! binary: the summary keys, the same tokens as without speculation on both
//! engines (the tiny fixture model), and clear errors for what cannot run.

mod common;

use common::*;
use std::path::Path;
use std::process::Output;

fn summary(o: &Output) -> serde_json::Value {
    json_lines(o).last().unwrap()["summary"].clone()
}

fn token_ids(o: &Output) -> Vec<u64> {
    json_lines(o)
        .iter()
        .filter_map(|l| l.get("token_id").and_then(|t| t.as_u64()))
        .collect()
}

#[test]
fn speculative_generation_reports_acceptance_and_keeps_the_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tiny_model(tmp.path());
    let m = m.to_str().unwrap();
    for engine in ["reference", "mesh"] {
        let base = [
            "generate",
            "--model",
            m,
            "--engine",
            engine,
            "--prompt",
            "a b a b a b a",
            "--max-tokens",
            "12",
            "--temperature",
            "0",
            "--json",
        ];
        let plain = succeeds(&base);
        for k in ["prompt-lookup", "prompt-lookup:2", "prompt-lookup:8"] {
            let o = succeeds(&[&base[..], &["--speculate", k]].concat());
            assert_eq!(token_ids(&o), token_ids(&plain), "{engine} {k}");
            let s = summary(&o);
            for key in [
                "accepted_per_step",
                "acceptance_rate",
                "speculate_steps",
                "simulated_decode_tokens_per_s",
                "simulated_speculative_tokens_per_s",
            ] {
                assert!(s.get(key).is_some(), "{engine} {k}: no {key} in {s}");
            }
            let (steps, drafted, accepted) = (
                s["speculate_steps"].as_f64().unwrap(),
                s["drafted_tokens"].as_f64().unwrap(),
                s["accepted_tokens"].as_f64().unwrap(),
            );
            assert!(steps >= 1.0 && accepted <= drafted);
            assert_eq!(s["accepted_per_step"].as_f64().unwrap(), accepted / steps);
            // Every token after the first came from a verification step.
            assert_eq!(steps + accepted, 11.0, "{engine} {k}");
        }
    }
    // A draft model: the same tiny model from another directory.
    let d = tmp.path().join("draft");
    std::fs::create_dir_all(&d).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(Path::new(m).join(f), d.join(f)).unwrap();
    }
    let base = [
        "generate",
        "--model",
        m,
        "--prompt",
        "xyz",
        "--max-tokens",
        "10",
        "--temperature",
        "0",
        "--json",
    ];
    let plain = succeeds(&base);
    let spec = format!("draft:{}:3", d.display());
    let o = succeeds(&[&base[..], &["--speculate", &spec]].concat());
    assert_eq!(token_ids(&o), token_ids(&plain));
    assert_eq!(summary(&o)["speculate"], "draft");
    // Its summary is what estimate --acceptance-from reads.
    let out = tmp.path().join("run.jsonl");
    std::fs::write(&out, &o.stdout).unwrap();
    let rate = summary(&o)["acceptance_rate"].as_f64().unwrap();
    let e = succeeds(&[
        "estimate",
        "--model",
        "smollm2-135m",
        "--context",
        "512",
        "--speculate",
        "3",
        "--acceptance-from",
        out.to_str().unwrap(),
        "--json",
    ]);
    let e: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert_eq!(e["acceptance"].as_f64().unwrap(), rate);
}

#[test]
fn speculation_that_cannot_run_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tiny_model(tmp.path());
    let m = m.to_str().unwrap();
    let run = [
        "generate",
        "--model",
        m,
        "--prompt",
        "ab",
        "--max-tokens",
        "4",
    ];
    fails(
        &[
            &run[..],
            &["--temperature", "0.7", "--speculate", "prompt-lookup"],
        ]
        .concat(),
        &["--speculate", "greedy only", "--temperature 0"],
    );
    fails(
        &[&run[..], &["--speculate", "prompt-lookup:0"]].concat(),
        &["--speculate", "1 to 64"],
    );
    fails(
        &[&run[..], &["--speculate", "ngram"]].concat(),
        &["prompt-lookup[:K]"],
    );
    // A draft whose vocabulary differs.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(
        Path::new(m).join("model.safetensors"),
        other.join("model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(m).join("config.json")).unwrap())
            .unwrap();
    config["vocab_size"] = 300.into();
    std::fs::write(other.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(
        Path::new(m).join("tokenizer.json"),
        other.join("tokenizer.json"),
    )
    .unwrap();
    let spec = format!("draft:{}", other.display());
    fails(
        &[&run[..], &["--speculate", &spec]].concat(),
        &[
            "vocabulary has 300 tokens",
            "256",
            "share the target's tokenizer",
        ],
    );
    // Same size, other ids: "a" and "b" swapped.
    config["vocab_size"] = 256.into();
    std::fs::write(other.join("config.json"), config.to_string()).unwrap();
    let mut tok: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(m).join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    let vocab = &mut tok["model"]["vocab"];
    let (a, b) = (vocab["a"].clone(), vocab["b"].clone());
    vocab["a"] = b;
    vocab["b"] = a;
    std::fs::write(other.join("tokenizer.json"), tok.to_string()).unwrap();
    fails(
        &[&run[..], &["--speculate", &spec]].concat(),
        &["other token ids", "share the target's tokenizer"],
    );
}

#[test]
fn estimate_prices_speculation_from_an_acceptance_rate() {
    let base = [
        "estimate",
        "--model",
        "smollm2-135m",
        "--context",
        "2048",
        "--json",
    ];
    let o = succeeds(&[&base[..], &["--speculate", "4", "--acceptance", "0.5"]].concat());
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // 1 + 0.5 + 0.25 + 0.125 + 0.0625
    assert_eq!(e["tokens_per_verify"].as_f64().unwrap(), 1.9375);
    let (decode, verify) = (
        e["decode_cycles_per_token"].as_f64().unwrap(),
        e["verify_cycles"].as_f64().unwrap(),
    );
    assert!(
        verify > decode && verify < 5.0 * decode,
        "{verify} vs {decode}"
    );
    let want = e["decode_tokens_per_s"].as_f64().unwrap() * decode / verify * 1.9375;
    let got = e["speculative_tokens_per_s"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
    assert_eq!(e["draft_cycles"].as_f64().unwrap(), 0.0);
    fails(
        &[&base[..], &["--acceptance", "0.5"]].concat(),
        &["--acceptance", "add --speculate"],
    );
    fails(
        &[&base[..], &["--speculate", "4"]].concat(),
        &["--acceptance A", "--acceptance-from"],
    );
    fails(
        &[&base[..], &["--speculate", "4", "--acceptance", "1.5"]].concat(),
        &["--acceptance 1.5", "0 to 1"],
    );
    fails(
        &[&base[..], &["--speculate", "65", "--acceptance", "0.5"]].concat(),
        &["--speculate 65", "1 to 64"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("plain.jsonl");
    std::fs::write(&f, "{\"summary\":{\"generated_tokens\":3}}\n").unwrap();
    fails(
        &[
            &base[..],
            &["--speculate", "4", "--acceptance-from", f.to_str().unwrap()],
        ]
        .concat(),
        &["--acceptance-from", "no acceptance_rate"],
    );
}
