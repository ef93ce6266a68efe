//! `wafer generate --batch-prompts` through the binary on the tiny fixture
//! model: every sequence's tokens are those of its prompt run alone, on the
//! reference and the mesh engines; the summaries; clear errors for bad files
//! and modes that cannot run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn wafer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the wafer binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `wafer ARGS`, expects an error exit (1, or 2 for a value the argument
/// parser refuses; never a panic's 101) and stderr containing every needle;
/// returns stderr.
fn fails(args: &[&str], needles: &[&str]) -> String {
    let o = wafer(args);
    let err = stderr(&o);
    assert!(
        matches!(o.status.code(), Some(1 | 2)),
        "wafer {args:?}: {:?} {err}",
        o.status
    );
    assert!(!err.contains("panicked"), "wafer {args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "wafer {args:?}: expected {n:?} in: {err}");
    }
    err
}

fn succeeds(args: &[&str]) -> Output {
    let o = wafer(args);
    assert!(o.status.success(), "wafer {args:?}: {}", stderr(&o));
    o
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// A runnable model directory: the tiny Llama 3 fixture (vocabulary 256, context
/// 8192) with a byte-level tokenizer of its 256 ids.
fn tiny_model(dir: &Path) -> PathBuf {
    let m = dir.join("tiny");
    std::fs::create_dir_all(&m).unwrap();
    let src = fixture("reference/tiny-llama3");
    std::fs::copy(src.join("model.safetensors"), m.join("model.safetensors")).unwrap();
    // Without an end-of-sequence id, every run generates exactly --max-tokens.
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("eos_token_id");
    std::fs::write(m.join("config.json"), config.to_string()).unwrap();
    // GPT-2's printable stand-ins for the 256 bytes.
    let mut vocab = serde_json::Map::new();
    let mut n = 0;
    for b in 0..=255u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
        let c = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
        vocab.insert(c.to_string(), b.into());
    }
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []},
    });
    std::fs::write(m.join("tokenizer.json"), tok.to_string()).unwrap();
    m
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

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
