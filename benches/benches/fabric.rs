//! Fabric simulator speed (wall-clock of the discrete-event engine, not
//! simulated cycles): MeshGEMV's program (m = 144, n = 5,760, 8 groups) on a
//! 144 x 144 region, run as a region program, and one SmolLM2-135M decode layer's whole program at KV length 1024 on a
//! 96 x 96 region (timing-only, as `wafer estimate --sim fabric` runs it).
//! The full decode token is `examples/fabric_token.rs` (seconds per run).
//!
//! Run: `cargo bench -p wafer-benches --bench fabric`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use wafer_core::spec::wse3;
use wafer_lower::cost::PlanOptions;
use wafer_lower::decode_layer_program;
use wafer_sim::collective::Algorithm;
use wafer_sim::fabric::{simulate_region, RunOptions};
use wafer_sim::matrix::mesh_gemv_program;
use wafer_sim::schedule::TreeShape;

fn bench(c: &mut Criterion) {
    let spec = wse3();
    let mut g = c.benchmark_group("fabric");
    g.sample_size(10);
    let tree = TreeShape::new(
        144,
        Algorithm::KTree {
            k: 2,
            groups: Some(8),
        },
    )
    .expect("a tree");
    let gemv = mesh_gemv_program(&spec, 144, 144, 144, 5760, tree);
    g.bench_function("gemv 144x144 m144 n5760 groups 8", |b| {
        b.iter(|| simulate_region(&spec, black_box(&gemv), &RunOptions::default()).unwrap())
    });
    let cfg = wafer_models::presets::lookup("smollm2-135m").expect("preset exists");
    let layer = decode_layer_program(&spec, &cfg, 96, 96, 1024, &PlanOptions::default());
    g.bench_function("smollm2-135m decode layer @1024, 96x96 region", |b| {
        b.iter(|| simulate_region(&spec, black_box(&layer), &RunOptions::default()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
