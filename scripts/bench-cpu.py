#!/usr/bin/env python3
"""Prefill and decode tokens/s and peak memory of `wafer generate` (reference engine) against
llama.cpp on the same GGUF and the same prompts, run alternately (wafer, llama.cpp, wafer, ...) so
that both see the same machine; each figure is the best of R runs, and the ratios are printed.
Two workloads, as llama.cpp's own llama-bench measures them: prefill of a --prompt-tokens prompt
(pp512) and decode of --gen tokens after a --decode-prompt-tokens prompt (tg128 starts from an
empty context; a few prompt tokens here). The last column is each run's peak memory.

Usage (from the repository root, after `cargo build --release`):
    python3 scripts/bench-cpu.py [--gguf FILE] [--prompt-tokens 512] [--gen 128] [--runs 5]
        [--decode-prompt-tokens 8] [--threads 2] [--llama-python PYTHON] [--converted HF_DIR]

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
ap.add_argument("--gen", type=int, default=128)
ap.add_argument("--decode-prompt-tokens", type=int, default=8)
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


def prompt_file(n):
    try:
        t = llama("prompt", raw.name, n)[0]["text"]
    except SystemExit as e:
        sys.exit(f"llama.cpp is needed (CMAKE_ARGS=\"-DGGML_NATIVE=ON\" pip install llama-cpp-python, "
                 f"or --llama-python): {e}")
    f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    f.write(t)
    f.close()
    return f.name


long_prompt, short_prompt = prompt_file(args.prompt_tokens), prompt_file(args.decode_prompt_tokens)

engines = [("wafer, GGUF as stored", args.gguf, None)]
if args.converted:
    engines += [("wafer, converted f32", args.converted, "f32"),
                ("wafer, converted f16", args.converted, "f16")]
env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
best = {}


def keep(label, what, value, n, rss):
    b = best.setdefault(label, {})
    v, _, r = b.get(what, (0.0, n, 0.0))
    b[what] = (max(v, value), n, max(r, rss))


for r in range(args.runs):
    for what, prompt, gen in [("prefill", long_prompt, 1), ("decode", short_prompt, args.gen)]:
        for label, model, precision in engines:
            cmd = [args.wafer, "generate", "--model", model, "--prompt-file", prompt, "--max-tokens",
                   str(gen), "--temperature", "0", "--ignore-eos", "--json"]
            if precision:
                cmd += ["--weight-precision", precision]
            j, rss = child(cmd, env)
            s = j["summary"]
            value = (s["prompt_tokens"] / (s["prefill_ms"] / 1e3) if what == "prefill"
                     else s["decode_tokens_per_s"])
            keep(label, what, value, s["prompt_tokens"], rss)
        j, rss = llama("run", prompt, gen if what == "decode" else 2)
        keep("llama.cpp", what, j["prefill_tok_s"] if what == "prefill" else j["decode_tok_s"],
             j["prompt_tokens"], rss)

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}")
print(f"gguf: {args.gguf}\n{args.threads} threads; best of {args.runs} alternating runs; "
      f"load average after: {open('/proc/loadavg').read().split()[0]}\n")
print(f"{'engine':26} {'workload':>16} {'tok/s':>8} {'peak MB':>8}")
for label, b in best.items():
    for what, (v, n, rss) in b.items():
        w = f"pp{n}" if what == "prefill" else f"tg{args.gen} (after {n})"
        print(f"{label:26} {w:>16} {v:>8.1f} {rss:>8.0f}")
lb = best["llama.cpp"]
for label, b in best.items():
    if label != "llama.cpp":
        print(f"{label} / llama.cpp: prefill {b['prefill'][0] / lb['prefill'][0]:.2f}x, decode "
              f"{b['decode'][0] / lb['decode'][0]:.2f}x, peak memory "
              f"{max(x[2] for x in b.values()) / max(x[2] for x in lb.values()):.2f}x")
os.unlink(raw.name)
os.unlink(long_prompt)
os.unlink(short_prompt)
