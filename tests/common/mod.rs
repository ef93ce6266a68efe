//! Helpers the CLI tests share: run the `wafer` binary, check its exit and
//! messages, and build the tiny fixture model directory.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn wafer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the wafer binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `wafer ARGS`, expects an error exit (1, or 2 for a value the argument
/// parser refuses; never a panic's 101) and stderr containing every needle;
/// returns stderr.
pub fn fails(args: &[&str], needles: &[&str]) -> String {
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

pub fn succeeds(args: &[&str]) -> Output {
    let o = wafer(args);
    assert!(o.status.success(), "wafer {args:?}: {}", stderr(&o));
    o
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// A runnable model directory: the tiny Llama 3 fixture (vocabulary 256, context
/// 8192) with a byte-level tokenizer of its 256 ids.
pub fn tiny_model(dir: &Path) -> PathBuf {
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

pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `wafer ARGS`, expects success, and parses stdout as one JSON value.
pub fn ok_json(args: &[&str]) -> serde_json::Value {
    let o = succeeds(args);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("wafer {args:?}: {e}"))
}

/// `WAFER_TEST_MODEL_DIR` (the converted SmolLM2 directory), or `None` with
/// the reason printed; under CI its absence is a failure, not a skip.
pub fn real_model_dir() -> Option<PathBuf> {
    match std::env::var_os("WAFER_TEST_MODEL_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the real-model tests: scripts/test.sh sets WAFER_TEST_MODEL_DIR"
            );
            eprintln!("skipping: set WAFER_TEST_MODEL_DIR to a converted SmolLM2-135M directory to run this test");
            None
        }
    }
}
