//! `wafer-fuzz`: runs one fuzz target for a number of executions, or writes
//! the seed corpora (see docs/fuzzing.md).

use std::time::Duration;
use wafer_fuzz::{fuzz, load_corpus, targets, Session};

const USAGE: &str = "usage: wafer-fuzz seeds
       wafer-fuzz <target> [--iters N] [--seed S] [--max-secs T] [--timeout-ms M]
       wafer-fuzz <target> --run FILE   (one input, e.g. a saved crash)
targets: gguf-header gguf-file safetensors config tokenizer hw-toml";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(first) = args.first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    if first == "seeds" {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let n = wafer_fuzz::seeds::write_all(&dir).expect("writing the corpus");
        println!("wrote {n} seed files under {}", dir.display());
        return;
    }
    let Some(target) = targets::by_name(first) else {
        eprintln!("unknown target `{first}`\n{USAGE}");
        std::process::exit(2);
    };
    if args.get(1).map(String::as_str) == Some("--run") {
        let Some(file) = args.get(2) else {
            eprintln!("{USAGE}");
            std::process::exit(2);
        };
        let data = std::fs::read(file).expect("reading the input");
        let dir = tempfile::tempdir().expect("a scratch directory");
        let t0 = std::time::Instant::now();
        let accepted = (target.run)(dir.path(), &data);
        println!(
            "{}: accepted = {accepted} in {:.1?}",
            target.name,
            t0.elapsed()
        );
        return;
    }
    let mut session = Session {
        iterations: 1_000_000,
        seed: 1,
        max_time: None,
        exec_timeout: Duration::from_secs(10),
        progress_every: 100_000,
    };
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let value: u64 = match it.next().map(|v| v.parse()) {
            Some(Ok(v)) => v,
            _ => {
                eprintln!("{flag}: expected a number\n{USAGE}");
                std::process::exit(2);
            }
        };
        match flag.as_str() {
            "--iters" => session.iterations = value,
            "--seed" => session.seed = value,
            "--max-secs" => session.max_time = Some(Duration::from_secs(value)),
            "--timeout-ms" => session.exec_timeout = Duration::from_millis(value),
            _ => {
                eprintln!("unknown flag {flag}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let corpus = load_corpus(target);
    let r = fuzz(target, corpus, &session);
    println!(
        "{}: {} executions in {:.1} s ({:.0}/s), {} accepted, corpus {} -> {}, slowest {:.1?}, {} crashes",
        r.target,
        r.executions,
        r.wall.as_secs_f64(),
        r.executions as f64 / r.wall.as_secs_f64(),
        r.accepted,
        r.corpus_start,
        r.corpus_end,
        r.slowest,
        r.crashes.len()
    );
    for c in &r.crashes {
        println!("  crash: {}\n    input: {}", c.message, c.input.display());
    }
    if !r.crashes.is_empty() {
        std::process::exit(1);
    }
}
