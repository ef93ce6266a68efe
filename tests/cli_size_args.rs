//! Fuzzing of the CLI's size arguments (`parse_tokens` / `parse_count` in
//! src/cli/common.rs, which live in the binary): a few hundred generated
//! `--context` and `--prompt-tokens` values through `wafer estimate`, each of
//! which must give a result or a clear error, never a panic or a signal.

use std::process::Command;

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Fixed edge cases, then random strings built from digits, separators,
/// suffixes, signs and multi-byte characters.
fn size_args() -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        " ",
        "k",
        "K",
        "m",
        "M",
        "0",
        "0k",
        "1",
        "1k",
        "8k",
        "128k",
        "1m",
        "1M",
        "_",
        "__1",
        "1_000",
        "-1",
        "+1",
        "-0",
        "1.5k",
        "1e3",
        "0x10",
        "８",
        "1８",
        "1é",
        "é",
        "1kk",
        "1km",
        "1g",
        "1 k",
        " 8k ",
        "\t8k",
        "18446744073709551615",
        "18446744073709551616",
        "18014398509481983k",
        "18014398509481984k",
        "17592186044415m",
        "17592186044416m",
        "9223372036854775807",
        "4294967295",
        "4294967296",
        "99999999999999999999999999",
        "1000000000000",
        "1000000000m",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let pieces = [
        "0", "1", "7", "9", "12", "999", "_", "k", "K", "m", "M", "-", "+", " ", ".", "e", "x",
        "é", "８", "\u{200b}",
    ];
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    while out.len() < 300 {
        let n = 1 + g.below(8);
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(pieces[g.below(pieces.len())]);
        }
        out.push(s);
    }
    out
}

#[test]
fn size_arguments_give_a_result_or_a_clear_error() {
    for (flag, fixed) in [
        ("--context", "--prompt-tokens"),
        ("--prompt-tokens", "--context"),
    ] {
        for arg in size_args() {
            let o = Command::new(env!("CARGO_BIN_EXE_wafer"))
                .args(["estimate", "--model", "smollm2-135m", fixed, "16", "--json"])
                .arg(format!("{flag}={arg}"))
                .output()
                .expect("running wafer");
            let stderr = String::from_utf8_lossy(&o.stderr);
            let code = o.status.code();
            assert!(
                !stderr.contains("panicked") && matches!(code, Some(0..=2)),
                "wafer estimate {flag}={arg:?}: exit {code:?}\n{stderr}"
            );
            if code != Some(0) {
                assert!(
                    stderr.contains("error"),
                    "wafer estimate {flag}={arg:?} failed without an error message:\n{stderr}"
                );
            }
        }
    }
}
