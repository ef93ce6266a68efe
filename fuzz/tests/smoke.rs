//! A short run of every fuzz target from its committed seed corpus, so the
//! ordinary test suite keeps the parsers (and the harness) honest; the long
//! runs and their numbers are in docs/fuzzing.md.

use std::time::Duration;
use wafer_fuzz::{fuzz, load_corpus, targets, Session};

#[test]
fn every_target_survives_a_short_fuzz_run() {
    let mut failures = Vec::new();
    for target in targets::ALL {
        let corpus = load_corpus(target);
        assert!(!corpus.is_empty(), "{}: no seed corpus", target.name);
        let n_seeds = corpus.len() as u64;
        let session = Session {
            iterations: 1500,
            seed: 7,
            max_time: Some(Duration::from_secs(5)),
            exec_timeout: Duration::from_secs(30),
            progress_every: 0,
        };
        let r = fuzz(target, corpus, &session);
        // Every seed is valid: the first pass runs them unchanged.
        assert!(
            r.accepted >= n_seeds,
            "{}: only {} of {} seeds accepted",
            target.name,
            r.accepted,
            n_seeds
        );
        for c in r.crashes {
            failures.push(format!(
                "{}: {} (input {})",
                target.name,
                c.message,
                c.input.display()
            ));
        }
    }
    assert!(failures.is_empty(), "crashes:\n{}", failures.join("\n"));
}
