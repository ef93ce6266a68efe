//! `wafer estimate` speed: a 405B-shaped model (Llama-3.1-405B's config) at a KV
//! length of 131,072 on wse3 must take well under 100 ms, both with a given
//! region and with the automatic region search; also with a short prompt (the
//! token-by-token prefill is then costed in full) and a 131,072-token prompt
//! (its lower bound rules it out).
//!
//! Run: `cargo bench -p wafer-benches --bench estimate`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use wafer_core::spec::wse3;
use wafer_core::RegionShape;
use wafer_lower::estimate::{estimate, EstimateOptions};

fn bench(c: &mut Criterion) {
    let spec = wse3();
    let cfg = wafer_models::presets::lookup("llama-3.1-405b").expect("preset exists");
    let given = EstimateOptions {
        wafers: None,
        strategy: Default::default(),
        region: Some(RegionShape::square(360).unwrap()),
        context: 131_072,
        prompt_tokens: 4096,
    };
    c.bench_function("estimate 405B @131072, region 360x360", |b| {
        b.iter(|| estimate(black_box(&spec), black_box(&cfg), black_box(&given)).unwrap())
    });
    let short = EstimateOptions {
        prompt_tokens: 512,
        ..given.clone()
    };
    c.bench_function(
        "estimate 405B @131072, region 360x360, 512-token prompt",
        |b| b.iter(|| estimate(black_box(&spec), black_box(&cfg), black_box(&short)).unwrap()),
    );
    let long = EstimateOptions {
        prompt_tokens: 131_072,
        ..given.clone()
    };
    c.bench_function(
        "estimate 405B @131072, region 360x360, 131072-token prompt",
        |b| b.iter(|| estimate(black_box(&spec), black_box(&cfg), black_box(&long)).unwrap()),
    );
    let auto = EstimateOptions {
        region: None,
        ..given
    };
    c.bench_function("estimate 405B @131072, auto region", |b| {
        b.iter(|| estimate(black_box(&spec), black_box(&cfg), black_box(&auto)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
