//! Mesh engine decode speed against the reference engine, SmolLM2-135M on the
//! full `wse3` fabric (wall-clock of the simulation, not simulated cycles).
//! Needs the model: `WAFER_TEST_MODEL_DIR=/path/to/smollm2 cargo bench -p wafer-benches --bench mesh`.
//! Without it the bench prints why and does nothing.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::{Duration, Instant};
use wafer_core::{DType, WaferSpec};
use wafer_mesh::{MeshEngine, MeshSetup};
use wafer_models::engine::Engine;
use wafer_models::reference::ReferenceModel;
use wafer_models::weights::LlamaWeights;
use wafer_models::ModelConfig;

/// Decode positions before the cache is reset (keeps attention cost bounded).
const WINDOW: usize = 128;
const PROMPT: [u32; 8] = [504, 3458, 282, 4649, 314, 253, 1345, 28];

/// Times `iters` decode steps, re-prefilling whenever the window is full.
fn decode_steps(engine: &mut dyn Engine, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut logits = engine.prefill(&PROMPT).unwrap();
    for _ in 0..iters {
        if engine.position() >= WINDOW {
            logits = engine.prefill(&PROMPT).unwrap();
        }
        let next = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0 as u32;
        let t = Instant::now();
        logits = engine.decode(next).unwrap();
        total += t.elapsed();
    }
    total
}

fn bench(c: &mut Criterion) {
    let Some(dir) = std::env::var_os("WAFER_TEST_MODEL_DIR") else {
        eprintln!("mesh bench skipped: set WAFER_TEST_MODEL_DIR to a SmolLM2-135M directory");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let config = ModelConfig::from_dir(&dir).unwrap();
    let weights = LlamaWeights::load_dir(&dir, &config, Some(DType::F16)).unwrap();
    let setup = MeshSetup {
        spec: WaferSpec::preset("wse3").unwrap(),
        region: None,
        wafers: None,
        context: WINDOW + PROMPT.len(),
        options: Default::default(),
    };
    let mut mesh = MeshEngine::place_and_build(config.clone(), &weights, &setup).unwrap();
    let mut reference = ReferenceModel::new(config, weights);
    let mut g = c.benchmark_group("smollm2_decode_token");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("reference_f16", |b| {
        b.iter_custom(|n| decode_steps(&mut reference, n))
    });
    g.bench_function("mesh_wse3", |b| {
        b.iter_custom(|n| decode_steps(&mut mesh, n))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
