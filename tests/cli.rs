//! The `wafer` binary on bad input: each case must end in a clear error (exit
//! code 1, a message naming the flag or file), never a panic, a silent wrong
//! answer or a damaged file.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

#[test]
fn prompt_files_are_bounded_before_they_are_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    // A sparse 17 MiB file: refused by its size, naming the size and the limit.
    let big = tmp.path().join("big.txt");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(17 << 20)
        .unwrap();
    let model = tmp.path().join("no-model");
    let (big_s, model_s) = (big.to_str().unwrap(), model.to_str().unwrap());
    fails(
        &["generate", "--model", model_s, "--prompt-file", big_s],
        &["--prompt-file", "17825792 bytes", "16777216"],
    );
    // An endless device: refused after reading just past the limit.
    if Path::new("/dev/zero").exists() {
        let t = std::time::Instant::now();
        fails(
            &["generate", "--model", model_s, "--prompt-file", "/dev/zero"],
            &["holds more than the 16777216 bytes"],
        );
        assert!(t.elapsed().as_secs() < 60, "{:?}", t.elapsed());
    }
    let bad = tmp.path().join("bad.txt");
    std::fs::write(&bad, b"ok \xff\xfe").unwrap();
    fails(
        &[
            "generate",
            "--model",
            model_s,
            "--prompt-file",
            bad.to_str().unwrap(),
        ],
        &["not UTF-8", "offset 3"],
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_without_tokenizing_it_all() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    // 4 MiB of text, about 4 million tokens for a context of 8192.
    let long = tmp.path().join("long.txt");
    std::fs::write(&long, "ab ".repeat((4 << 20) / 3)).unwrap();
    fails(
        &[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt-file",
            long.to_str().unwrap(),
        ],
        &[
            "the prompt has at least",
            "holds 8192",
            "max_position_embeddings",
        ],
    );
}

#[test]
fn tiny_temperatures_generate_what_greedy_does() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let run = |t: &str| {
        let o = succeeds(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "6",
            "--temperature",
            t,
            "--seed",
            "1",
            "--json",
        ]);
        json_lines(&o)
            .iter()
            .filter_map(|l| l.get("token_id").and_then(|v| v.as_u64()))
            .collect::<Vec<_>>()
    };
    let greedy = run("0");
    assert_eq!(greedy.len(), 6);
    for t in ["1e-39", "1e-45", "1e-30"] {
        assert_eq!(run(t), greedy, "--temperature {t}");
    }
    for t in ["nan", "-0.5", "inf"] {
        fails(
            &["generate", "--prompt", "x", "--temperature", t],
            &["--temperature"],
        );
    }
}

/// A model whose end-of-sequence id is the token it generates third: the
/// run stops where that token first comes, and with --ignore-eos it
/// generates every --max-tokens token, the same as with no end-of-sequence id.
#[test]
fn ignore_eos_generates_past_the_end_of_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "Hi",
            "--max-tokens",
            "6",
            "--json",
        ];
        args.extend_from_slice(extra);
        let lines = json_lines(&succeeds(&args));
        let ids: Vec<u64> = lines
            .iter()
            .filter_map(|l| l["token_id"].as_u64())
            .collect();
        (ids, lines.last().unwrap()["summary"].clone())
    };
    let (free, s) = run(&[]);
    assert_eq!((free.len(), &s["stop_reason"]), (6, &"max_tokens".into()));
    std::fs::write(
        model.join("generation_config.json"),
        format!("{{\"eos_token_id\": {}}}", free[2]),
    )
    .unwrap();
    let (stopped, s) = run(&[]);
    let first = free.iter().position(|&t| t == free[2]).unwrap();
    assert_eq!(stopped, free[..first], "{s}");
    assert_eq!(s["stop_reason"], "eos");
    let (ignored, s) = run(&["--ignore-eos"]);
    assert_eq!(ignored, free, "{s}");
    assert_eq!(s["stop_reason"], "max_tokens");
}

#[test]
fn one_generated_token_has_no_decode_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    // One token on `engine`: the JSON summary and stderr.
    let one_token = |engine: &str| {
        let o = succeeds(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "Hi",
            "--max-tokens",
            "1",
            "--engine",
            engine,
            "--json",
        ]);
        let summary = json_lines(&o).last().unwrap()["summary"].clone();
        (summary, stderr(&o))
    };
    let (s, err) = one_token("reference");
    assert_eq!(s["generated_tokens"], 1, "{s}");
    assert!(s["decode_tokens_per_s"].is_null(), "{s}");
    assert!(err.contains("decode: n/a"), "{err}");
    // The seed comes before any token's report, on the first line.
    assert!(err.lines().next().unwrap().contains("seed"), "{err}");
    // The mesh engine's own means over decode steps are null too, and its
    // summary line says n/a rather than 0.
    let (s, err) = one_token("mesh");
    for key in ["decode_cycles_per_token", "simulated_tokens_per_s"] {
        assert!(s[key].is_null(), "{key}: {s}");
    }
    assert!(s["ttft_cycles"].as_f64().unwrap() > 0.0, "{s}");
    assert!(err.contains("decode n/a (no decode step)"), "{err}");
}

#[test]
fn generate_refuses_contexts_and_token_counts_beyond_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let m = model.to_str().unwrap();
    fails(
        &[
            "generate",
            "--model",
            m,
            "--prompt",
            "Hi",
            "--max-tokens",
            "1000000000000",
        ],
        &[
            "--max-tokens 1000000000000",
            "8192",
            "max_position_embeddings",
        ],
    );
    fails(
        &[
            "generate",
            "--model",
            m,
            "--prompt",
            "Hi",
            "--engine",
            "mesh",
            "--context",
            "128k",
        ],
        &["--context 131072", "8192", "max_position_embeddings"],
    );
    fails(
        &["generate", "--model", "smollm2-135m", "--prompt", "Hi"],
        &["shape preset", "wafer models"],
    );
}

#[test]
fn generate_flags_that_do_nothing_are_refused() {
    for (args, needle) in [
        (vec!["--top-k", "5"], "--top-k only applies when sampling"),
        (vec!["--top-p", "0.5"], "--top-p only applies when sampling"),
        (vec!["--top-logprobs", "3"], "add --json"),
        (
            vec!["--hw", "wse2"],
            "--hw applies to --engine mesh or fabric only",
        ),
        (
            vec!["--context", "64"],
            "--context applies to --engine mesh or fabric only",
        ),
        (
            vec!["--engine", "mesh", "--weight-precision", "f32"],
            "--weight-precision f32: --engine mesh holds the weights at wse3's f16",
        ),
    ] {
        let mut a = vec!["generate", "--prompt", "Hi"];
        a.extend(args);
        fails(&a, &[needle]);
    }
}

#[test]
fn the_mesh_accepts_the_weight_precision_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let o = succeeds(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "Hi",
        "--max-tokens",
        "2",
        "--engine",
        "mesh",
        "--weight-precision",
        "f16",
        "--json",
    ]);
    let lines = json_lines(&o);
    let s = &lines.last().unwrap()["summary"];
    assert_eq!(s["generated_tokens"], 2, "{s}");
    assert!(s["decode_cycles_per_token"].as_f64().unwrap() > 0.0, "{s}");
}

#[cfg(unix)]
#[test]
fn generate_with_stdout_closed_fails() {
    let o = Command::new("sh")
        .args(["-c", "exec \"$0\" generate --prompt Hi >&-"])
        .arg(env!("CARGO_BIN_EXE_wafer"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("standard output is closed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn kernel_sizes_and_trees_are_checked() {
    let k = |extra: &[&str]| {
        let mut a = vec!["kernel"];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let cases: [(&[&str], &[&str]); 9] = [
        (
            &["gemm", "--region", "4", "--m", "0", "--n", "0", "--k", "0"],
            &["--m must be between 1 and 16777216, found 0"],
        ),
        (
            &["gemm", "--region", "4", "--m", "8", "--n", "8", "--k", "0"],
            &["--k must be between 1"],
        ),
        (
            &[
                "gemv", "--region", "16", "--m", "1", "--n", "1", "--groups", "0",
            ],
            &["--groups must be between 1 and the 16 PEs"],
        ),
        (
            &[
                "gemv", "--region", "16", "--m", "1", "--n", "1", "--groups", "1000",
            ],
            &["found 1000"],
        ),
        (
            &["shift", "--region", "1", "--steps", "5"],
            &["at least 2 PEs wide"],
        ),
        (
            &["shift", "--region", "8", "--steps", "0"],
            &["--steps must be at least 1, found 0"],
        ),
        (
            &["allreduce", "--region", "16", "--levels", "34"],
            &["--levels must be between 1 and 32, found 34"],
        ),
        (
            &["gemv", "--region", "16", "--k", "5"],
            &["--k does not apply to `wafer kernel gemv`"],
        ),
        (
            &[
                "allreduce",
                "--region",
                "16",
                "--algorithm",
                "chain",
                "--levels",
                "3",
            ],
            &["do not apply to --algorithm chain"],
        ),
    ];
    for (args, needles) in cases {
        let a = k(args);
        fails(&a.iter().map(String::as_str).collect::<Vec<_>>(), needles);
    }
    // In-range values are still priced.
    let o = succeeds(&[
        "kernel", "gemv", "--region", "16", "--m", "64", "--n", "64", "--groups", "4", "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["cycles"].as_f64().unwrap() > 0.0, "{v}");
    succeeds(&["kernel", "allreduce", "--region", "16", "--levels", "32"]);
    // More shift steps than PEs in the row is a measured case (C5: 256 on 144).
    succeeds(&["kernel", "shift", "--region", "144", "--steps", "256"]);
}

#[test]
fn sizes_take_the_k_suffix_everywhere_and_zero_is_refused() {
    let est = |ctx: &str| {
        let o = succeeds(&[
            "estimate",
            "--model",
            "llama-3.1-8b",
            "--context",
            ctx,
            "--prompt-tokens",
            "512",
            "--json",
        ]);
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    assert_eq!(est("8k"), est("8192"));
    fails(
        &[
            "estimate",
            "--model",
            "llama-3.1-8b",
            "--prompt-tokens",
            "0",
        ],
        &["--prompt-tokens", "at least 1"],
    );
    fails(
        &["estimate", "--model", "llama-3.1-8b", "--context", "0"],
        &["--context", "at least 1"],
    );
    // The default context is the same 8k as place's.
    let o = succeeds(&["estimate", "--model", "llama-3.1-8b", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["context"], 8192, "{v}");
    let o = succeeds(&["place", "--model", "llama-3.1-8b", "--json"]);
    assert!(stdout(&o).contains("8192"));
}

#[test]
fn contexts_past_the_model_warn_in_what_if_commands() {
    let o = succeeds(&[
        "estimate",
        "--model",
        "llama-2-13b",
        "--hw",
        "wse3",
        "--context",
        "16k",
        "--prompt-tokens",
        "512",
        "--wafers",
        "4",
    ]);
    let err = stderr(&o);
    assert!(
        err.contains("warning: --context 16,384") && err.contains("4,096"),
        "{err}"
    );
    let o = succeeds(&[
        "estimate",
        "--model",
        "llama-2-13b",
        "--context",
        "4096",
        "--prompt-tokens",
        "512",
    ]);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn sweep_keeps_points_that_do_not_fit_and_never_overwrites_its_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("plot.png");
    fails(
        &[
            "sweep",
            "--model",
            "llama-3.1-8b",
            "--context",
            "4k,8k",
            "--out",
            png.to_str().unwrap(),
        ],
        &["--out", "plot.png", "CSV"],
    );
    assert!(!png.exists());
    // One wafer holds llama-3.1-8b at 4k but not at 1M tokens.
    let csv = tmp.path().join("s.csv");
    let o = succeeds(&[
        "sweep",
        "--model",
        "llama-3.1-8b",
        "--wafers",
        "1",
        "--prompt-tokens",
        "512",
        "--context",
        "4k,1M",
        "--out",
        csv.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0][col("value")], "4096");
    assert_eq!(rows[0][col("fits_in_sram")], "true");
    assert_eq!(rows[1][col("value")], "1048576");
    assert_eq!(rows[1][col("fits_in_sram")], "false");
    assert_eq!(rows[1][col("decode_tokens_per_s")], "");
    assert!(stdout(&o).contains("does not fit"));
    assert!(tmp.path().join("s.png").is_file());
}

#[cfg(unix)]
#[test]
fn sweep_writes_its_files_even_when_nobody_reads_its_table() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("s.csv");
    let o = Command::new("sh")
        .args(["-c", "\"$0\" sweep --model llama-3.1-8b --prompt-tokens 512 --context 4k,8k,16k --out \"$1\" | true"])
        .arg(env!("CARGO_BIN_EXE_wafer"))
        .arg(&csv)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(csv.is_file() && tmp.path().join("s.png").is_file());
}

#[test]
fn place_checks_the_picture_name_before_touching_any_file() {
    let tmp = tempfile::tempdir().unwrap();
    let jpg = tmp.path().join("existing.jpg");
    std::fs::write(&jpg, "precious").unwrap();
    fails(
        &[
            "place",
            "--model",
            "llama-3.1-8b",
            "--png",
            jpg.to_str().unwrap(),
        ],
        &[
            "--png",
            "expected a .png file name",
            "found the extension .jpg",
        ],
    );
    assert_eq!(std::fs::read_to_string(&jpg).unwrap(), "precious");
    let png = tmp.path().join("p.png");
    let o = succeeds(&[
        "place",
        "--model",
        "llama-3.1-8b",
        "--png",
        png.to_str().unwrap(),
    ]);
    assert!(stdout(&o).contains("picture:"));
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
}

#[test]
fn kernel_sim_fabric_runs_beside_the_analytic_figure_and_refuses_what_it_cannot() {
    // A spec with the latencies fixed here: hop h = 1, ramp r = 2, and a
    // setup of S = 16 cycles to issue each send or receive.
    let tmp = tempfile::tempdir().unwrap();
    let hw = tmp.path().join("hw.toml");
    std::fs::write(
        &hw,
        "base = \"wse3\"\n[pe]\nfabric_op_setup_cycles = 16.0\n[router]\nhop_latency_cycles = 1.0\nramp_latency_cycles = 2.0\n",
    )
    .unwrap();
    let hw = hw.to_str().unwrap();
    let base = [
        "kernel",
        "allreduce",
        "--hw",
        hw,
        "--region",
        "1x8",
        "--n",
        "2",
        "--algorithm",
        "chain",
    ];
    let with = |extra: &[&'static str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        let o = succeeds(&a);
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    let fab = with(&["--sim", "fabric", "--json"]);
    let ana = with(&["--json"]);
    // A chain allreduce over a column of n = 8 PEs, one wavelet (two 16-bit
    // values) per PE, every step of a wavelet through a PE costing 1 cycle:
    // with no setup the root's add ends at R = 7 (h + 2r + 1) = 42 and the
    // root ends at 43; PE k receives the broadcast at R + 2r + k h and ends a
    // cycle later, at 47 + k. Mean: (43 + 7 * 47 + 28) / 8 = 50. The setups
    // that nothing hides are the leaf's send (it delays the whole reduction)
    // and the root's broadcast send: every PE ends 2S = 32 later, 82. Each
    // wavelet crosses 7 links toward the root and the broadcast crosses 7
    // back: 14 wavelet-hops.
    assert_eq!(fab["cycles"].as_f64(), Some(82.0), "{fab}");
    assert_eq!(fab["wavelet_hops"].as_u64(), Some(14), "{fab}");
    assert_eq!(fab["analytic_cycles"], ana["cycles"], "{fab} {ana}");
    assert!(fab["events"].as_u64().unwrap() > 14, "{fab}");
    assert!(fab["max_queue_occupancy"].as_u64().unwrap() >= 1, "{fab}");
    assert!(fab["wall_s"].as_f64().unwrap() >= 0.0, "{fab}");
    let o = succeeds(&[
        "kernel", "gemv", "--region", "16", "--m", "64", "--n", "64", "--sim", "fabric",
    ]);
    assert!(stdout(&o).contains("analytic model"), "{}", stdout(&o));
    let o = succeeds(&[
        "kernel", "shift", "--region", "8", "--m", "4", "--steps", "3", "--sim", "fabric", "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["cycles"].as_f64().unwrap() > 0.0, "{v}");
    let o = succeeds(&[
        "kernel", "gemm", "--region", "4", "--m", "8", "--n", "8", "--k", "8", "--sim", "fabric",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["cycles"].as_f64().unwrap() > 0.0, "{v}");
    // A ring allreduce over a column of 2 PEs, 4 16-bit values (a chunk of
    // one wavelet per PE, which fits the queues: pipelined), same spec: every
    // send and receive pays S = 16 to issue; a wavelet sent at t is received
    // by t + 2r + h + 1 = t + 6 if its receiver is ready. Each PE sends its
    // chunk at 16; issues its receive (17 .. 33), adds the other's (there
    // since 21) by 34 and passes the sum on at once; issues its last receive
    // (34 .. 50) and stores the other's sum (there at 39) by 51. Two
    // wavelets crossed the link each way.
    let ring = |extra: &[&str]| {
        let mut a = vec![
            "kernel",
            "allreduce",
            "--hw",
            hw,
            "--region",
            "1x2",
            "--n",
            "4",
            "--algorithm",
            "ring",
            "--json",
        ];
        a.extend_from_slice(extra);
        serde_json::from_str::<serde_json::Value>(&stdout(&succeeds(&a))).unwrap()
    };
    let v = ring(&["--sim", "fabric"]);
    assert_eq!(v["cycles"].as_f64(), Some(51.0), "{v}");
    assert_eq!(v["wavelet_hops"].as_u64(), Some(4), "{v}");
    let a = ring(&[]);
    assert_eq!(v["analytic_cycles"], a["cycles"], "{v} {a}");
    fails(
        &[
            "kernel",
            "gemv",
            "--region",
            "8",
            "--algorithm",
            "ring",
            "--sim",
            "fabric",
        ],
        &["ring is simulated on the fabric for `wafer kernel allreduce` only"],
    );
    fails(
        &[
            "kernel",
            "allreduce",
            "--region",
            "8",
            "--launch",
            "together",
        ],
        &["--launch applies to --sim fabric"],
    );
    fails(
        &[
            "kernel",
            "allreduce",
            "--region",
            "700",
            "--n",
            "4096",
            "--sim",
            "fabric",
        ],
        &["at most"],
    );
}

/// `--model FILE.gguf` runs the GGUF as stored and gives the tokens its converted
/// directory gives (both from `scripts/test.sh`'s `WAFER_TEST_GGUF` and
/// `WAFER_TEST_MODEL_DIR`); a truncated or foreign file is refused naming it.
#[test]
fn a_gguf_file_runs_as_its_converted_directory_and_bad_ones_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model").unwrap();
    let junk_s = junk.to_str().unwrap();
    fails(
        &["generate", "--model", junk_s, "Hi"],
        &["junk.gguf", "not a GGUF file"],
    );
    let (Some(gguf), Some(dir)) = (
        std::env::var_os("WAFER_TEST_GGUF"),
        std::env::var_os("WAFER_TEST_MODEL_DIR"),
    ) else {
        eprintln!("skipped the real-model part: set WAFER_TEST_GGUF and WAFER_TEST_MODEL_DIR (scripts/test.sh does)");
        return;
    };
    let (gguf, dir) = (gguf.to_str().unwrap(), dir.to_str().unwrap());
    let bytes = std::fs::read(gguf).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
    fails(
        &["generate", "--model", cut.to_str().unwrap(), "Hi"],
        &["cut.gguf", "tensor `"],
    );
    let run = |model: &str| {
        let o = succeeds(&[
            "generate",
            "--model",
            model,
            "--max-tokens",
            "6",
            "--json",
            "The capital of France is",
        ]);
        json_lines(&o)
            .iter()
            .filter_map(|l| l.get("token_id").and_then(|t| t.as_u64()))
            .collect::<Vec<_>>()
    };
    let (a, b) = (run(gguf), run(dir));
    assert_eq!(a.len(), 6);
    assert_eq!(a, b);
}

#[test]
fn users_are_bounded_and_one_user_is_the_plain_report() {
    for bad in ["0", "65537", "two"] {
        fails(
            &["estimate", "--model", "llama-3.1-8b", "--users", bad],
            &["--users"],
        );
        fails(
            &["place", "--model", "llama-3.1-8b", "--users", bad],
            &["--users"],
        );
    }
    for cmd in ["estimate", "place"] {
        let base = [cmd, "--model", "llama-3.1-8b", "--wafers", "1", "--json"];
        let plain = stdout(&succeeds(&base));
        let one = stdout(&succeeds(&[&base[..], &["--users", "1"]].concat()));
        assert_eq!(plain, one, "{cmd}");
        assert!(!plain.contains("\"users\""), "{cmd}");
    }
    // Two users: half the context per user, every existing key kept.
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&stdout(&succeeds(args))).unwrap()
    };
    let p1 = json(&[
        "place",
        "--model",
        "llama-3.1-8b",
        "--wafers",
        "1",
        "--json",
    ]);
    let p2 = json(&[
        "place",
        "--model",
        "llama-3.1-8b",
        "--wafers",
        "1",
        "--users",
        "2",
        "--json",
    ]);
    assert_eq!(p2["users"], 2);
    let (t1, t2) = (
        p1["max_context_tokens"].as_u64().unwrap(),
        p2["max_context_tokens"].as_u64().unwrap(),
    );
    assert!(t2 <= t1 / 2 && t2 + 1172 >= t1 / 2, "{t1} -> {t2}");
    let e1 = json(&[
        "estimate",
        "--model",
        "llama-3.1-8b",
        "--wafers",
        "1",
        "--json",
    ]);
    let e2 = json(&[
        "estimate",
        "--model",
        "llama-3.1-8b",
        "--wafers",
        "1",
        "--users",
        "2",
        "--json",
    ]);
    for k in e1.as_object().unwrap().keys() {
        assert!(e2.get(k).is_some(), "{k}");
    }
    assert_eq!(e2["users"], 2);
    let (per, agg) = (
        e2["per_user_tokens_per_s"].as_f64().unwrap(),
        e2["aggregate_tokens_per_s"].as_f64().unwrap(),
    );
    assert!((2.0 * per - agg).abs() < 1e-6 * agg, "{per} {agg}");
    assert!(e2["max_users"].as_u64().unwrap() >= 2);
    // More users than fit at the context on the wafers given: a clear error.
    fails(
        &[
            "estimate",
            "--model",
            "llama-3.1-8b",
            "--wafers",
            "1",
            "--context",
            "128k",
            "--users",
            "8",
        ],
        &["does not fit", "for 8 users"],
    );
    let text = stdout(&succeeds(&[
        "estimate",
        "--model",
        "llama-3.1-8b",
        "--wafers",
        "1",
        "--users",
        "4",
    ]));
    assert!(text.contains("users 4:"), "{text}");
}
