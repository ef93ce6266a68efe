//! Speed of placement: the whole search (region grid, wafer count, and the largest
//! context) for the biggest preset at a 128k context. Goal: well under a second.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use wafer_core::WaferSpec;
use wafer_lower::placement::{place, PlaceOptions, Strategy};
use wafer_models::presets;

fn bench_place(c: &mut Criterion) {
    let spec = WaferSpec::preset("wse3").expect("wse3 preset");
    let model = presets::lookup("llama-3.1-405b").expect("405b preset");
    let auto = PlaceOptions {
        context_tokens: 131_072,
        region: None,
        wafers: None,
        strategy: Strategy::Packed,
    };
    c.bench_function(
        "place llama-3.1-405b 131072 tokens (auto region, auto wafers)",
        |b| b.iter(|| place(black_box(&model), &spec, black_box(&auto)).expect("places")),
    );
    let fixed = PlaceOptions {
        wafers: Some(32),
        ..auto.clone()
    };
    c.bench_function("place llama-3.1-405b 131072 tokens on 32 wafers", |b| {
        b.iter(|| place(black_box(&model), &spec, black_box(&fixed)).expect("places"))
    });
    let model8 = presets::lookup("llama-3.1-8b").expect("8b preset");
    let one = PlaceOptions {
        context_tokens: 131_072,
        region: None,
        wafers: Some(1),
        strategy: Strategy::Packed,
    };
    c.bench_function(
        "place llama-3.1-8b on 1 wafer (largest-context search)",
        |b| b.iter(|| place(black_box(&model8), &spec, black_box(&one)).expect("places")),
    );
}

criterion_group!(benches, bench_place);
criterion_main!(benches);
