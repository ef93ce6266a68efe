#!/usr/bin/env bash
# Measures prompt-lookup acceptance on the prompts in docs/speculation/prompts/
# with the reference engine and the default model (SmolLM2-135M-Instruct Q4_1):
# one greedy run of 96 tokens per prompt and K, chat template on. Prints one
# tab-separated row per run: prompt, K, generated tokens, verification steps,
# drafted, accepted, acceptance rate, accepted per step, and the simulated
# wse3 speed-up of the run (speculative over plain decode tokens/s). Usage: docs/speculation/measure.sh [path/to/wafer]
set -euo pipefail
wafer=${1:-target/release/wafer}
dir=$(dirname "$0")/prompts
printf 'prompt\tK\tgenerated\tsteps\tdrafted\taccepted\tacceptance_rate\taccepted_per_step\tsimulated_speedup\n'
for f in "$dir"/*.txt; do
  for k in 2 4 8; do
    "$wafer" generate --chat --prompt-file "$f" --max-tokens 96 --temperature 0 \
      --speculate "prompt-lookup:$k" --json 2>/dev/null | tail -n 1 |
      jq -r --arg p "$(basename "$f" .txt)" --arg k "$k" \
        '.summary | [$p, $k, .generated_tokens, .speculate_steps, .drafted_tokens, .accepted_tokens, (.acceptance_rate * 1000 | round / 1000), (.accepted_per_step * 100 | round / 100), (.simulated_speculative_tokens_per_s / .simulated_decode_tokens_per_s * 100 | round / 100)] | @tsv'
  done
done
