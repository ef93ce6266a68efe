//! The memory of a long `wafer sweep`: it keeps each point's figures, not its
//! estimate's plans (tens of kilobytes a point), so thousands of points fit in a
//! few megabytes. When it kept the plans, the 2,340 contexts below peaked at
//! 213 MB; now about 9 MB (release build). The bound, 64 MB, leaves room for a
//! debug build and allocator slack, and still fails at a fraction of the old
//! per-point growth.
//!
//! The peak is the child's maximum resident set as the kernel reports it to its
//! parent (`getrusage(RUSAGE_CHILDREN)`), which is why this test has a file, and
//! so a process, of its own: no other child is counted.
#![cfg(target_os = "linux")]

use std::process::{Command, Stdio};

#[test]
fn a_sweep_over_thousands_of_contexts_stays_within_64_mb() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("s.csv");
    let contexts: Vec<String> = (0..2340).map(|i| (1000 + 50 * i).to_string()).collect();
    let status = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(["sweep", "--model", "llama-3.1-8b", "--context"])
        .arg(contexts.join(","))
        .arg("--out")
        .arg(&csv)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count();
    assert_eq!(rows, 2341, "a header and one row per context");
    // SAFETY: getrusage writes one `rusage` we own.
    let peak_kb = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage), 0);
        usage.ru_maxrss
    };
    // On Linux ru_maxrss is in kilobytes.
    assert!(peak_kb > 0);
    assert!(
        peak_kb < 64 * 1024,
        "the sweep peaked at {peak_kb} KB of resident memory"
    );
}
