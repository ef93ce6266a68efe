//! `wafer plan` end to end: every candidate's `estimate_args`, run through
//! `wafer estimate --json`, prints the figures the plan reported (client
//! latency and fixed `--region` shapes included); an impossible target prints
//! no candidate and its reason; bad flags are refused by name.

mod common;

use common::*;

/// A plan candidate's `estimate_args`.
fn estimate_args(c: &serde_json::Value) -> Vec<&str> {
    c["estimate_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// `wafer estimate` run with a candidate's flags, as JSON.
fn reestimate(c: &serde_json::Value) -> serde_json::Value {
    let mut args = vec!["estimate"];
    args.extend(estimate_args(c));
    args.push("--json");
    ok_json(&args)
}

#[test]
fn candidates_reproduce_through_wafer_estimate() {
    let plan = ok_json(&[
        "plan",
        "--models",
        "smollm2-135m,llama-3.2-1b",
        "--tokens-per-s",
        "800",
        "--context",
        "8k",
        "--prompt-tokens",
        "256",
        "--users",
        "2",
        "--max-wafers",
        "3",
        "--rtt-ms",
        "20",
        "--per-token-overhead-us",
        "150",
        "--answer-tokens",
        "100",
        "--json",
    ]);
    assert_eq!(plan["targets"]["context"], 8192);
    let candidates = plan["candidates"].as_array().unwrap();
    assert!(!candidates.is_empty(), "{plan}");
    // Fixed shapes are among the candidates, and their flags carry them.
    let mut fixed = 0;
    for c in candidates {
        let args = c["estimate_args"].as_array().unwrap();
        let i = args.iter().position(|a| a == "--region");
        match &c["fixed_region"] {
            serde_json::Value::Null => assert!(i.is_none(), "{c}"),
            r => {
                fixed += 1;
                assert_eq!(&args[i.expect("--region in the flags") + 1], r, "{c}");
            }
        }
    }
    assert!(fixed >= 1, "{plan}");
    assert!(plan["configurations_meeting_rate"].as_u64().unwrap() >= candidates.len() as u64);
    for c in candidates {
        let e = reestimate(c);
        // Two users: the rate each user sees.
        assert_eq!(e["per_user_tokens_per_s"], c["decode_tokens_per_s"], "{c}");
        assert_eq!(e["ttft_ms"], c["ttft_ms"], "{c}");
        assert_eq!(e["wafers"], c["wafers"], "{c}");
        assert_eq!(e["region"], c["region"], "{c}");
        assert_eq!(e["users"], c["users"]);
        assert_eq!(e["max_users"], c["max_users"]);
        for k in ["client_ttft_ms", "answer_ms", "client_tokens_per_s"] {
            assert_eq!(e[k], c["client"][k], "{k}: {c}");
        }
        assert!(c["decode_tokens_per_s"].as_f64().unwrap() >= 800.0);
        for key in [
            "model", "wafers", "region", "strategy", "k", "users", "ttft_ms",
        ] {
            assert!(!c[key].is_null(), "{key} missing in {c}");
        }
    }
}

#[test]
fn an_impossible_target_has_no_candidate_and_says_why() {
    // 405B at 2 bytes a weight (810 GB) on at most 2 wafers (2 x 43.9 GB of SRAM).
    let plan = ok_json(&[
        "plan",
        "--models",
        "llama-3.1-405b",
        "--tokens-per-s",
        "10",
        "--max-wafers",
        "2",
        "--json",
    ]);
    assert_eq!(plan["candidates"].as_array().unwrap().len(), 0);
    let misses = plan["misses"].as_array().unwrap();
    assert_eq!(misses.len(), 1);
    assert_eq!(misses[0]["model"], "llama-3.1-405b");
    assert_eq!(misses[0]["limited_by"], "sram");
    assert!(misses[0]["best"].is_null());
    let text = wafer(&[
        "plan",
        "--models",
        "llama-3.1-405b",
        "--tokens-per-s",
        "10",
        "--max-wafers",
        "2",
    ]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("no configuration of these models meets the target"),
        "{out}"
    );
    assert!(out.contains("limited by sram"), "{out}");
}

#[test]
fn bad_flags_are_refused_by_name() {
    for (args, needle) in [
        (vec!["--tokens-per-s=-5"], "--tokens-per-s"),
        (
            vec!["--tokens-per-s", "10", "--max-wafers", "0"],
            "--max-wafers",
        ),
        (
            vec!["--tokens-per-s", "10", "--max-wafers", "100000"],
            "--max-wafers",
        ),
        (
            vec!["--tokens-per-s", "10", "--models", "no-such-model"],
            "no-such-model",
        ),
        (vec!["--tokens-per-s", "10", "--rtt-ms=-1"], "--rtt-ms"),
        (vec!["--tokens-per-s", "10", "--png", "out.jpg"], "--png"),
        (vec!["--tokens-per-s", "10", "--top", "0"], "--top"),
        (
            vec!["--tokens-per-s", "10", "--users", "several"],
            "--users",
        ),
        (vec!["--tokens-per-s", "10", "--users", "0"], "--users"),
    ] {
        let mut a = vec!["plan"];
        a.extend(args.iter());
        let o = wafer(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(matches!(o.status.code(), Some(1 | 2)), "{a:?}: {err}");
        assert!(!err.contains("panicked"), "{a:?}: {err}");
        assert!(err.contains(needle), "{a:?}: expected {needle} in {err}");
    }
}

#[test]
fn a_model_directory_plans_and_reproduces_by_its_path() {
    // A small Llama-shaped config.json: only the shape is read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type":"llama","vocab_size":4096,"hidden_size":512,"intermediate_size":1536,
            "num_hidden_layers":4,"num_attention_heads":8,"num_key_value_heads":4,
            "max_position_embeddings":8192}"#,
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let plan = ok_json(&[
        "plan",
        "--models",
        path,
        "--tokens-per-s",
        "100",
        "--context",
        "4k",
        "--max-wafers",
        "2",
        "--json",
    ]);
    let c = &plan["candidates"][0];
    assert_eq!(c["model"], path);
    let e = reestimate(c);
    assert_eq!(e["decode_tokens_per_s"], c["decode_tokens_per_s"]);
    assert_eq!(e["ttft_ms"], c["ttft_ms"]);
    assert_eq!(c["trained_positions"], 8192);
}

#[test]
fn speculative_candidates_reproduce_through_wafer_estimate() {
    let plan = ok_json(&[
        "plan",
        "--models",
        "smollm2-135m",
        "--tokens-per-s",
        "1500",
        "--context",
        "8k",
        "--max-wafers",
        "2",
        "--speculate",
        "4",
        "--acceptance",
        "0.6",
        "--json",
    ]);
    let candidates = plan["candidates"].as_array().unwrap();
    assert!(!candidates.is_empty(), "{plan}");
    for c in candidates {
        let args = estimate_args(c);
        assert!(args.contains(&"--speculate") && args.contains(&"--acceptance"));
        let e = reestimate(c);
        // The rate the plan judged is the estimate's speculative rate, and
        // the plain rate beside it is the estimate's decode rate.
        assert_eq!(
            e["speculative_tokens_per_s"], c["decode_tokens_per_s"],
            "{c}"
        );
        let s = &c["speculation"];
        assert_eq!(
            s["plain_decode_tokens_per_s"], e["decode_tokens_per_s"],
            "{c}"
        );
        let (rate, plain) = (
            c["decode_tokens_per_s"].as_f64().unwrap(),
            s["plain_decode_tokens_per_s"].as_f64().unwrap(),
        );
        assert!((s["speedup"].as_f64().unwrap() - rate / plain).abs() < 1e-9);
        assert!(rate >= 1500.0);
    }
    // Speculation prices one user; an acceptance outside 0..=1 is refused.
    for (extra, needle) in [
        (vec!["--users", "2"], "--speculate prices one user"),
        (
            vec!["--acceptance", "1.5"],
            "--acceptance must be from 0 to 1",
        ),
    ] {
        let mut a = vec![
            "plan",
            "--models",
            "smollm2-135m",
            "--tokens-per-s",
            "1000",
            "--speculate",
            "4",
        ];
        if !extra.contains(&"--acceptance") {
            a.extend(["--acceptance", "0.6"]);
        }
        a.extend(extra.iter().copied());
        let o = wafer(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{a:?}: {err}");
        assert!(err.contains(needle), "{a:?}: {err}");
    }
}

#[test]
fn users_auto_candidates_reproduce_at_their_users() {
    let plan = ok_json(&[
        "plan",
        "--models",
        "smollm2-135m",
        "--tokens-per-s",
        "1000",
        "--context",
        "8k",
        "--max-wafers",
        "1",
        "--users",
        "auto",
        "--json",
    ]);
    assert_eq!(plan["targets"]["users"], "auto");
    let candidates = plan["candidates"].as_array().unwrap();
    assert!(!candidates.is_empty(), "{plan}");
    assert!(candidates.iter().any(|c| c["users"].as_u64().unwrap() > 1));
    for c in candidates {
        let e = reestimate(c);
        if c["users"] == 1 {
            assert_eq!(e["decode_tokens_per_s"], c["decode_tokens_per_s"], "{c}");
        } else {
            assert_eq!(e["users"], c["users"], "{c}");
            assert_eq!(e["per_user_tokens_per_s"], c["decode_tokens_per_s"], "{c}");
            assert_eq!(e["aggregate_tokens_per_s"], c["aggregate_tokens_per_s"]);
        }
        assert!(c["decode_tokens_per_s"].as_f64().unwrap() >= 1000.0);
    }
}
