//! Ctrl-C during `wafer convert`: the conversion writes into a partial directory
//! beside `--out` and renames it into place at the end; interrupted mid-way, it
//! leaves neither `--out` nor the partial directory behind.
//!
//! A real conversion takes long enough to be interrupted reliably, so this uses
//! the SmolLM2 GGUF in the cache (`$WAFER_HOME/gguf`, default `~/.cache/wafer/gguf`,
//! filled by `wafer fetch`) or the file `WAFER_TEST_GGUF` names; without one it
//! prints why and returns.
#![cfg(unix)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cached_gguf() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WAFER_TEST_GGUF") {
        return Some(PathBuf::from(p));
    }
    let home = match std::env::var_os("WAFER_HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/wafer"),
    };
    std::fs::read_dir(home.join("gguf"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "gguf"))
}

#[test]
fn ctrl_c_during_convert_leaves_no_partial_output() {
    let Some(gguf) = cached_gguf() else {
        eprintln!("skipping: no GGUF in the cache (run `wafer fetch`) and WAFER_TEST_GGUF unset");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .arg("convert")
        .arg("--gguf")
        .arg(&gguf)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let partial = tmp.path().join(format!(".m.partial-{}", child.id()));
    // Wait until the conversion is writing into its partial directory.
    let start = Instant::now();
    loop {
        if std::fs::read_dir(&partial).is_ok_and(|mut d| d.next().is_some()) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the conversion ended before it could be interrupted"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no partial directory"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: kill(2) with a child's pid and SIGINT has no memory effects.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!out.exists(), "--out appeared: {stderr}");
    assert!(
        !partial.exists(),
        "the partial directory was left: {stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
