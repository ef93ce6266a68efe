//! Helpers the models crate's tests share.

use std::path::{Path, PathBuf};

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
