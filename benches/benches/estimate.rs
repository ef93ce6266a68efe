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
use wafer_models::{ModelConfig, RopeScaling};

fn llama_405b() -> ModelConfig {
    ModelConfig {
        model_type: "llama".into(),
        vocab_size: 128_256,
        hidden_size: 16_384,
        intermediate_size: 53_248,
        num_hidden_layers: 126,
        num_attention_heads: 128,
        num_key_value_heads: 8,
        head_dim: 128,
        max_position_embeddings: 131_072,
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_scaling: RopeScaling::Default,
        tie_word_embeddings: false,
        attention_bias: false,
        bos_token_id: Some(128_000),
        eos_token_ids: vec![128_001],
    }
}

fn bench(c: &mut Criterion) {
    let spec = wse3();
    let cfg = llama_405b();
    let given = EstimateOptions {
        wafers: 32,
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
