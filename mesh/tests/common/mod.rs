//! Helpers the mesh crate's tests share.

use std::path::PathBuf;

/// The real model dir, or `None` with the reason printed.
pub fn real_model_dir() -> Option<PathBuf> {
    match std::env::var_os("WAFER_TEST_MODEL_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the real-model tests: scripts/test.sh sets WAFER_TEST_MODEL_DIR"
            );
            eprintln!("skipping: set WAFER_TEST_MODEL_DIR to a converted SmolLM2-135M directory to run this test");
            None
        }
    }
}
