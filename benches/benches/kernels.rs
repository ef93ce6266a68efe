//! Criterion benchmarks of the reference engine's quantized CPU kernels (the
//! GGUF run as stored) at SmolLM2-135M's shapes, each reported in bytes/s of
//! weights streamed, next to a plain streaming read of memory that gives the
//! machine's bandwidth to compare them with (see BENCHMARKS.md).
//!
//! Run: `cargo bench -p wafer-benches --bench kernels`.
//!
//! - `stream`: the sum of a 256 MiB buffer of u64 (one thread; both threads
//!   through rayon): DRAM read bandwidth.
//! - `row_dot/<type>/<path>/<shape>`: every row's dot product on one thread
//!   with each kernel this CPU runs (`qdot::kernels`: portable, avx2,
//!   avx512), i.e. one core's kernel throughput.
//! - `gemv/<type>/<shape>`: the engine's GEMV (`ops::gemv`, rows split over
//!   rayon's threads).
//! - `decode/<type>`: dequantizing a 1536x576 matrix to f32 (`qdot::decode`,
//!   prefill's tile widening), bytes of blocks read per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use std::hint::black_box;
use wafer_benches::{random_f32, random_quant_matrix, SMOLLM2};
use wafer_models::reference::{ops, qdot};
use wafer_models::weights::{matrix::MatrixData, QuantType};

/// The (name, rows, cols) GEMV shapes of one SmolLM2 decode step.
fn shapes() -> Vec<(&'static str, usize, usize)> {
    let (d, ffn, vocab, ..) = SMOLLM2;
    vec![
        ("q_o_576x576", d, d),
        ("up_1536x576", ffn, d),
        ("down_576x1536", d, ffn),
        ("lm_head_49152x576", vocab, d),
    ]
}

fn bench_stream(c: &mut Criterion) {
    const BYTES: usize = 256 << 20;
    let buf: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let mut g = c.benchmark_group("stream");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(BYTES as u64));
    g.bench_function("read_256MiB_1_thread", |b| {
        b.iter(|| black_box(&buf).iter().fold(0u64, |a, &v| a.wrapping_add(v)))
    });
    g.bench_function("read_256MiB_rayon", |b| {
        b.iter(|| {
            black_box(&buf)
                .par_chunks(1 << 16)
                .map(|c| c.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
                .reduce(|| 0, u64::wrapping_add)
        })
    });
    g.finish();
}

fn bench_row_dot_and_gemv(c: &mut Criterion) {
    for (group, parallel) in [("row_dot", false), ("gemv", true)] {
        let mut g = c.benchmark_group(group);
        g.sample_size(20);
        for ty in [
            QuantType::Q4_1,
            QuantType::Q8_0,
            QuantType::Q4_K,
            QuantType::Q6_K,
        ] {
            for (name, rows, cols) in shapes() {
                // The 256-element K-quants need 256-element rows: skip 576 columns.
                if cols % ty.block_len() != 0 {
                    continue;
                }
                let w = random_quant_matrix(ty, rows, cols, 1);
                let x = random_f32(cols, 2);
                let mut out = vec![0.0f32; rows];
                g.throughput(Throughput::Bytes(w.size_bytes() as u64));
                let MatrixData::Quant(q) = &w.data else {
                    unreachable!("a quantized matrix")
                };
                let (bytes, rb) = (q.bytes.as_slice(), q.row_bytes(cols));
                if parallel {
                    g.bench_function(BenchmarkId::new(ty.name(), name), |b| {
                        b.iter(|| ops::gemv(&w, &x, &mut out))
                    });
                    continue;
                }
                // Every kernel this CPU runs (portable, avx2, avx512), on one thread.
                for (path, dot) in qdot::kernels(ty) {
                    let id = BenchmarkId::new(format!("{}/{path}", ty.name()), name);
                    g.bench_function(id, |b| {
                        b.iter(|| {
                            for (o, row) in out.iter_mut().zip(bytes.chunks_exact(rb)) {
                                *o = dot(row, &x);
                            }
                        })
                    });
                }
            }
        }
        g.finish();
    }
}

fn bench_decode(c: &mut Criterion) {
    let (d, ffn, ..) = SMOLLM2;
    let mut g = c.benchmark_group("decode");
    g.sample_size(20);
    for ty in [QuantType::Q4_1, QuantType::Q8_0] {
        let w = random_quant_matrix(ty, ffn, d, 3);
        let mut out = vec![0.0f32; ffn * d];
        g.throughput(Throughput::Bytes(w.size_bytes() as u64));
        let MatrixData::Quant(q) = &w.data else {
            unreachable!("a quantized matrix")
        };
        g.bench_function(BenchmarkId::new("simd", ty.name()), |b| {
            b.iter(|| qdot::decode(ty, q.bytes.as_slice(), &mut out))
        });
        g.bench_function(BenchmarkId::new("scalar", ty.name()), |b| {
            b.iter(|| ty.decode(q.bytes.as_slice(), &mut out))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_stream, bench_row_dot_and_gemv, bench_decode);
criterion_main!(benches);
