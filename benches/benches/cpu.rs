//! Criterion benchmarks of the reference engine's hot kernels at SmolLM2-135M's
//! shapes: GEMV (decode) at each weight precision, batched GEMM (prefill) and
//! attention over a KV cache. Run: `cargo bench -p wafer-benches --bench cpu`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array2, ArrayView2};
use wafer_benches::{random_f32, SMOLLM2};
use wafer_core::DType;
use wafer_models::reference::model::attention;
use wafer_models::reference::ops::{gemm, gemv};
use wafer_models::weights::Matrix;
use wafer_models::ModelConfig;

fn bench_gemv(c: &mut Criterion) {
    let (d, ffn, vocab, ..) = SMOLLM2;
    let mut g = c.benchmark_group("gemv");
    for (name, rows, cols) in [
        ("qo_576x576", d, d),
        ("up_1536x576", ffn, d),
        ("lm_head_49152x576", vocab, d),
    ] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let w = Matrix::from_f32(rows, cols, random_f32(rows * cols, 1), dtype);
            let x = random_f32(cols, 2);
            let mut out = vec![0.0; rows];
            // Bytes of weights streamed per call: decode is bandwidth-bound.
            g.throughput(Throughput::Bytes(w.size_bytes() as u64));
            g.bench_function(BenchmarkId::new(name, dtype), |b| {
                b.iter(|| gemv(&w, &x, &mut out))
            });
        }
    }
    g.finish();
}

fn bench_gemm(c: &mut Criterion) {
    let (d, ffn, ..) = SMOLLM2;
    let mut g = c.benchmark_group("gemm");
    g.sample_size(20);
    for n in [32usize, 256] {
        for dtype in [DType::F32, DType::F16] {
            let w = Matrix::from_f32(ffn, d, random_f32(ffn * d, 3), dtype);
            let x = random_f32(n * d, 4);
            let xa = ArrayView2::from_shape((n, d), &x).unwrap();
            let mut out = Array2::<f32>::zeros((n, ffn));
            g.throughput(Throughput::Elements((2 * n * d * ffn) as u64));
            g.bench_function(BenchmarkId::new(format!("up_{n}x576x1536"), dtype), |b| {
                b.iter(|| gemm(&w, xa, out.view_mut()))
            });
        }
    }
    g.finish();
}

fn bench_attention(c: &mut Criterion) {
    let (d, ffn, vocab, heads, kv_heads, hd) = SMOLLM2;
    let config = ModelConfig::from_json_str(&format!(
        r#"{{"vocab_size":{vocab},"hidden_size":{d},"intermediate_size":{ffn},"num_hidden_layers":1,
            "num_attention_heads":{heads},"num_key_value_heads":{kv_heads},"head_dim":{hd},"max_position_embeddings":8192}}"#
    ))
    .unwrap();
    let mut g = c.benchmark_group("attention");
    g.sample_size(20);
    for (name, queries, ctx) in [
        ("decode_1q_ctx1024", 1usize, 1024usize),
        ("prefill_256q", 256, 256),
    ] {
        let k = random_f32(ctx * config.kv_dim(), 5);
        let v = random_f32(ctx * config.kv_dim(), 6);
        let q = random_f32(queries * config.q_dim(), 7);
        let qa = ArrayView2::from_shape((queries, config.q_dim()), &q).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| attention(&config, qa, &k, &v, ctx - queries))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_gemv, bench_gemm, bench_attention);
criterion_main!(benches);
