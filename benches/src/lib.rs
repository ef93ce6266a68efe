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
