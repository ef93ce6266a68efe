#!/usr/bin/env python3
"""Prefill and decode tokens/s of SmolLM2-135M-Instruct on this machine: `wafer generate`
(reference engine: the GGUF run as stored, i.e. Q4_1/Q8_0 weights dequantized inside the
kernels; and the converted directory at f32 and f16 weights) and, in the same run, llama.cpp through
llama-cpp-python on the same GGUF with n_threads=2.

Usage (from the repository root, after `cargo build --release`):
    python3 scripts/bench-cpu.py [--model HF_DIR] [--gguf FILE] [--prompt-tokens N] [--gen N] [--runs R]

HF_DIR is an HF-style directory holding the GGUF's weights dequantized (made by
`wafer convert`, or /work/dl/smollm2-hf made by transformers). Each figure is the best
of R runs. Prefill = the whole prompt in one pass; decode = tokens/s of the generation
steps after the first token (greedy, EOS ignored on both sides by stopping neither early).
"""
import argparse, json, os, platform, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--wafer", default="target/release/wafer")
ap.add_argument("--model", default=None, help="HF-style model dir (default: `wafer fetch`'s)")
ap.add_argument("--gguf", default=None, help="the same model's GGUF (default: `wafer fetch --gguf`'s)")
ap.add_argument("--prompt-tokens", type=int, default=256)
ap.add_argument("--gen", type=int, default=64)
ap.add_argument("--runs", type=int, default=3)
args = ap.parse_args()
# Default to the model `wafer fetch` provides (fetching it on first use), and its GGUF.
if args.model is None:
    args.model = subprocess.run([args.wafer, "fetch"], check=True, capture_output=True, text=True).stdout.strip()
if args.gguf is None:
    args.gguf = subprocess.run([args.wafer, "fetch", "--gguf"], check=True, capture_output=True, text=True).stdout.strip()

# A prose prompt of roughly the requested length (trimmed by token count below for llama.cpp).
base = ("The history of computing is a story of ideas meeting machines. Early mechanical "
        "calculators gave way to electronic computers, and those to integrated circuits, each "
        "step shrinking the cost of a single operation while the demand for operations grew. ")
text = base * (args.prompt_tokens // 40 + 2)


def wafer_run(precision, model):
    best = None
    prompt_file = "/tmp/wafer-bench-prompt.txt"
    # Trim the prompt to the token budget with the model's tokenizer via a dry tokenization:
    # words are ~1.3 tokens, so cut by words until wafer reports <= the budget.
    words = text.split(" ")
    n_words = int(args.prompt_tokens / 1.25)
    with open(prompt_file, "w") as f:
        f.write(" ".join(words[:n_words]))
    for _ in range(args.runs):
        cmd = [args.wafer, "generate", "--model", model, "--prompt-file", prompt_file,
               "--max-tokens", str(args.gen), "--temperature", "0", "--json"]
        if precision != "stored":
            cmd += ["--weight-precision", precision]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"wafer failed: {r.stderr}")
        s = json.loads(r.stdout.strip().splitlines()[-1])["summary"]
        pre = s["prompt_tokens"] / (s["prefill_ms"] / 1e3)
        cur = (s["prompt_tokens"], pre, s["decode_tokens_per_s"], s["generated_tokens"])
        best = cur if best is None else (cur[0], max(best[1], cur[1]), max(best[2], cur[2]), cur[3])
    return best


def llama_cpp_run():
    try:
        import numpy as np
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=args.gguf, n_threads=2, n_threads_batch=2, n_ctx=2048, n_batch=512, verbose=False)
    toks = llm.tokenize(text.encode(), add_bos=False)[: args.prompt_tokens]
    best = None
    for _ in range(args.runs):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(toks)
        pre = len(toks) / (time.perf_counter() - t0)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t1 = time.perf_counter()
        for _ in range(args.gen - 1):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        dec = (args.gen - 1) / (time.perf_counter() - t1)
        best = (len(toks), pre, dec) if best is None else (len(toks), max(best[1], pre), max(best[2], dec))
    return best


cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}")
print(f"wafer model dir: {args.model}\ngguf: {args.gguf}\nbest of {args.runs} runs, {args.gen} generated tokens\n")
print(f"{'engine':34} {'prompt tok':>10} {'prefill tok/s':>14} {'decode tok/s':>13}")
rows = {}
for p, model, label in [("stored", args.gguf, "wafer reference, GGUF as stored"),
                        ("f32", args.model, "wafer reference, f32 weights"),
                        ("f16", args.model, "wafer reference, f16 weights")]:
    n, pre, dec, _ = wafer_run(p, model)
    rows[p] = (pre, dec)
    print(f"{label:34} {n:>10} {pre:>14.1f} {dec:>13.1f}")
lc = llama_cpp_run()
if lc is None:
    print("llama.cpp: llama-cpp-python is not installed (pip install llama-cpp-python)")
else:
    n, pre, dec = lc
    print(f"{'llama.cpp (Q4_1 GGUF, 2 threads)':34} {n:>10} {pre:>14.1f} {dec:>13.1f}")
    for p, (wp, wd) in rows.items():
        print(f"ratio wafer {p} / llama.cpp: prefill {wp / pre:.2f}x, decode {wd / dec:.2f}x")
