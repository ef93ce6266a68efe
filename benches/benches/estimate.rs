//! `wafer estimate` speed: a 405B-shaped model (Llama-3.1-405B's config) at a KV
//! length of 131,072 on wse3 must take well under 100 ms, both with a given
//! region and with the automatic region search.
//!
//! Run: `cargo bench -p wafer-benches --bench estimate`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use wafer_core::spec::wse3;
use wafer_core::RegionShape;
use wafer_models::estimate::{estimate, EstimateOptions};

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
