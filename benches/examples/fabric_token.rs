//! Runs each distinct region program of one decode token on the fabric
//! simulator, one after another on one thread, and prints each program's
//! size, events, wavelet-hops and wall time: which program bounds
//! `wafer estimate --sim fabric` (the CLI runs them in parallel).
//!
//! Run: `cargo run --release -p wafer-benches --example fabric_token -- [MODEL] [CONTEXT]`
//! (default `smollm2-135m 1024`); a further argument picks one program by
//! index (the last one is the LM head).

use std::time::Instant;
use wafer_core::spec::wse3;
use wafer_lower::cost::PlanOptions;
use wafer_lower::estimate::{estimate, EstimateOptions};
use wafer_lower::fabric::token_programs;
use wafer_sim::fabric::{simulate_region, RunOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map_or("smollm2-135m", |s| s.as_str());
    let context: usize = args.get(1).map_or(1024, |s| s.parse().expect("CONTEXT"));
    let only: Option<usize> = args.get(2).map(|s| s.parse().expect("INDEX"));
    let spec = wse3();
    let cfg = wafer_models::presets::lookup(model).expect("a preset model");
    let opts = EstimateOptions {
        wafers: None,
        region: None,
        strategy: Default::default(),
        context,
        prompt_tokens: 1,
    };
    let e = estimate(&spec, &cfg, &opts).expect("estimate");
    let token = token_programs(&spec, &cfg, &e.layout, context, &PlanOptions::default());
    let mut seen = Vec::new();
    for (i, (_, p)) in token.runs.iter().enumerate() {
        if seen.contains(&p) || only.is_some_and(|o| o != i) {
            continue;
        }
        seen.push(p);
        let t = Instant::now();
        let r = simulate_region(&spec, p, &RunOptions::default()).expect("a run");
        let wall = t.elapsed().as_secs_f64();
        println!(
            "program {i}: {}x{} {} steps: span {} cycles, {} events, {} wavelet-hops, {:.2} s, {:.2} M events/s",
            p.width,
            p.height,
            p.steps.len(),
            r.span,
            r.events,
            r.wavelet_hops,
            wall,
            r.events as f64 / wall / 1e6
        );
    }
}
