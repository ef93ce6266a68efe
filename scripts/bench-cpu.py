#!/usr/bin/env python3
"""Prefill and decode tokens/s and peak memory of `wafer generate` (reference engine) against
llama.cpp on the same GGUF and the same prompt, run alternately (wafer, llama.cpp, wafer, ...) so
that both see the same machine; each figure is the best of R runs, and the ratios are printed.

Usage (from the repository root, after `cargo build --release`):
    python3 scripts/bench-cpu.py [--gguf FILE] [--prompt-tokens 512] [--gen 64] [--runs 5]
        [--threads 2] [--llama-python PYTHON] [--converted HF_DIR]

llama.cpp runs through llama-cpp-python (`CMAKE_ARGS="-DGGML_NATIVE=ON" pip install
llama-cpp-python`; the default build is much slower), in a child process of PYTHON (default: this
interpreter) so that its peak resident memory is measured the same way as wafer's (the child's
`ru_maxrss`). Both sides load the GGUF by mmap; the load is not timed. The prompt is the first N
tokens of a prose text as llama.cpp tokenizes it, written back as text and given to both. Prefill =
the whole prompt in one pass; decode = tokens/s of the generation steps after the first token
(greedy; neither side stops early). With --converted, wafer also runs an HF-style directory of the
same weights (`wafer convert`) at f32 and f16 weights.
"""
import argparse, json, os, platform, subprocess, sys, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--wafer", default="target/release/wafer")
ap.add_argument("--gguf", default=None, help="the model's GGUF (default: `wafer fetch --gguf`'s)")
ap.add_argument("--converted", default=None, help="also run this HF-style dir at f32 and f16")
ap.add_argument("--prompt-tokens", type=int, default=512)
ap.add_argument("--gen", type=int, default=64)
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--llama-python", default=sys.executable)
args = ap.parse_args()
if args.gguf is None:
    args.gguf = subprocess.run([args.wafer, "fetch", "--gguf"], check=True, capture_output=True,
                               text=True).stdout.strip()

base = ("The history of computing is a story of ideas meeting machines. Early mechanical "
        "calculators gave way to electronic computers, and those to integrated circuits, each "
        "step shrinking the cost of a single operation while the demand for operations grew. ")
text = base * (args.prompt_tokens // 30 + 2)

# One llama.cpp run in a child process: prints a JSON line. Also used to make the prompt.
LLAMA = r"""
import json, sys, time
import numpy as np
from llama_cpp import Llama
gguf, threads, mode, arg, gen = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
llm = Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=4096, n_batch=4096,
            n_ubatch=4096, verbose=False)
if mode == "prompt":
    toks = llm.tokenize(open(arg).read().encode(), add_bos=False, special=False)[:gen]
    print(json.dumps({"text": llm.detokenize(toks).decode()}))
    sys.exit()
toks = llm.tokenize(open(arg).read().encode(), add_bos=False, special=False)
t0 = time.perf_counter()
llm.eval(toks)
prefill_s = time.perf_counter() - t0
tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
t1 = time.perf_counter()
for _ in range(gen - 1):
    llm.eval([tok])
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
print(json.dumps({"prompt_tokens": len(toks), "prefill_tok_s": len(toks) / prefill_s,
                  "decode_tok_s": (gen - 1) / (time.perf_counter() - t1)}))
"""


def child(cmd, env=None):
    """Runs cmd; returns (last stdout line as JSON, peak resident memory in MB)."""
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        err = p.stderr.read()
        if status != 0:
            sys.exit(f"{cmd[0]} failed ({status}): {err}")
        out.seek(0)
        return json.loads(out.read().strip().splitlines()[-1]), usage.ru_maxrss / 1024


def llama(mode, arg, n):
    return child([args.llama_python, "-c", LLAMA, args.gguf, str(args.threads), mode, arg, str(n)])


raw = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
raw.write(text)
raw.close()
try:
    prompt_text = llama("prompt", raw.name, args.prompt_tokens)[0]["text"]
except SystemExit as e:
    sys.exit(f"llama.cpp is needed (CMAKE_ARGS=\"-DGGML_NATIVE=ON\" pip install llama-cpp-python, "
             f"or --llama-python): {e}")
prompt = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
prompt.write(prompt_text)
prompt.close()

engines = [("wafer, GGUF as stored", args.gguf, None)]
if args.converted:
    engines += [("wafer, converted f32", args.converted, "f32"),
                ("wafer, converted f16", args.converted, "f16")]
env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
best = {}


def keep(label, n, pre, dec, rss):
    b = best.get(label)
    best[label] = (n, pre, dec, rss) if b is None else (n, max(b[1], pre), max(b[2], dec), max(b[3], rss))


for r in range(args.runs):
    for label, model, precision in engines:
        cmd = [args.wafer, "generate", "--model", model, "--prompt-file", prompt.name, "--max-tokens",
               str(args.gen), "--temperature", "0", "--ignore-eos", "--json"]
        if precision:
            cmd += ["--weight-precision", precision]
        j, rss = child(cmd, env)
        s = j["summary"]
        keep(label, s["prompt_tokens"], s["prompt_tokens"] / (s["prefill_ms"] / 1e3),
             s["decode_tokens_per_s"], rss)
    j, rss = llama("run", prompt.name, args.gen)
    keep("llama.cpp", j["prompt_tokens"], j["prefill_tok_s"], j["decode_tok_s"], rss)

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}")
print(f"gguf: {args.gguf}\n{args.threads} threads; best of {args.runs} alternating runs; "
      f"{args.gen} generated tokens; load average before: {open('/proc/loadavg').read().split()[0]}\n")
print(f"{'engine':26} {'prompt tok':>10} {'prefill tok/s':>14} {'decode tok/s':>13} {'peak MB':>8}")
for label, (n, pre, dec, rss) in best.items():
    print(f"{label:26} {n:>10} {pre:>14.1f} {dec:>13.1f} {rss:>8.0f}")
_, lpre, ldec, lrss = best["llama.cpp"]
for label, (_, pre, dec, rss) in best.items():
    if label != "llama.cpp":
        print(f"{label} / llama.cpp: prefill {pre / lpre:.2f}x, decode {dec / ldec:.2f}x, "
              f"peak memory {rss / lrss:.2f}x")
os.unlink(raw.name)
os.unlink(prompt.name)
