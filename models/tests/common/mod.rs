//! Helpers the models crate's tests share.

#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use wafer_core::DType;
use wafer_models::reference::ReferenceModel;
use wafer_models::tokenizer::Tokenizer;
use wafer_models::weights::LlamaWeights;
use wafer_models::ModelConfig;

/// `WAFER_TEST_MODEL_DIR`, or None with the reason printed.
pub fn real_model_dir() -> Option<PathBuf> {
    match std::env::var_os("WAFER_TEST_MODEL_DIR") {
        Some(d) if Path::new(&d).join("config.json").exists() => Some(PathBuf::from(d)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the real-model tests: scripts/test.sh sets WAFER_TEST_MODEL_DIR"
            );
            eprintln!("skipping: set WAFER_TEST_MODEL_DIR to a SmolLM2-135M-Instruct HF directory to run this test");
            None
        }
    }
}

/// The reference model of the directory `dir`, its weights rounded to
/// `precision` (kept as converted if None).
pub fn load(dir: &Path, precision: Option<DType>) -> ReferenceModel {
    let config = ModelConfig::from_dir(dir).unwrap();
    let weights = LlamaWeights::load_dir(dir, &config, precision).unwrap();
    ReferenceModel::new(config, weights)
}

/// The prompt generator of make_fixtures.py (a 31-bit LCG): `n` ids below `vocab`.
pub fn lcg_ids(n: usize, vocab: u64, seed: u64) -> Vec<u32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = (x * 1103515245 + 12345) % (1 << 31);
            ((x >> 16) % vocab) as u32
        })
        .collect()
}

/// A byte-level BPE tokenizer of only the 256 single-byte tokens (the tiny
/// model's vocabulary), written to `dir`: every multi-byte character spans
/// several tokens.
pub fn byte_tokenizer(dir: &Path) -> Tokenizer {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let mut chars: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    chars.sort();
    let vocab: tokenizers::models::bpe::Vocab = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .unwrap();
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    t.with_decoder(Some(ByteLevel::default()));
    t.save(dir.join("tokenizer.json"), false).unwrap();
    Tokenizer::from_dir(dir).unwrap()
}
