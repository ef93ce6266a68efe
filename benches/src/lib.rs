//! Shared helpers for the criterion benchmarks in `benches/benches/`: seeded
//! random inputs with the shapes of the models the benchmarks stand for.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` values uniform in [-1, 1), reproducible from `seed`.
pub fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// SmolLM2-135M's shapes: (hidden, intermediate, vocab, heads, kv heads, head_dim).
pub const SMOLLM2: (usize, usize, usize, usize, usize, usize) = (576, 1536, 49152, 9, 3, 64);

/// A `rows x cols` matrix of random `ty` blocks (random quantized values, f16
/// scales uniform in [-0.05, 0.05)), as a GGUF stores it; reproducible from `seed`.
pub fn random_quant_matrix(
    ty: wafer_models::weights::QuantType,
    rows: usize,
    cols: usize,
    seed: u64,
) -> wafer_models::weights::Matrix {
    use wafer_models::weights::{matrix::MatrixData, Matrix, QuantData, QuantType, SharedBytes};
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut bytes = vec![0u8; rows * cols / ty.block_len() * ty.block_bytes()];
    rng.fill(&mut bytes[..]);
    let scales: &[usize] = match ty {
        QuantType::Q8_0 | QuantType::Q4_0 => &[0],
        QuantType::Q4_1 | QuantType::Q4_K => &[0, 2],
        QuantType::Q6_K => &[208],
    };
    for b in bytes.chunks_exact_mut(ty.block_bytes()) {
        for &at in scales {
            let s = half::f16::from_f32(rng.gen_range(-0.05f32..0.05));
            b[at..at + 2].copy_from_slice(&s.to_le_bytes());
        }
    }
    let q = QuantData::new(ty, rows, cols, SharedBytes::owned(bytes)).expect("whole blocks");
    Matrix {
        rows,
        cols,
        data: MatrixData::Quant(q),
    }
}
