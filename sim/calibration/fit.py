#!/usr/bin/env python3
"""Fits the free `cost` fields of a preset to shared/calibration.md.

Runs the real `wafer kernel` / `wafer estimate` commands with a TOML override of
the preset's cost block, and minimises the sum of squared relative errors
(Nelder-Mead, no dependencies). Usage:

    python3 sim/calibration/fit.py wse3     # C5-C7
    python3 sim/calibration/fit.py wse2     # C1-C2

Prints the fitted values and every row's error; the values go into
`core/src/spec.rs` (`wse3_cost` / `wse2_cost`) and docs/cost-model.md.
"""
import json, subprocess, sys, tempfile, os

WAFER = os.environ.get("WAFER", "target/debug/wafer")

WSE3_ROWS = (
    # C5: shift, P=144
    [(["kernel", "shift", "--region", "144", "--m", str(m), "--steps", str(l)], c)
     for m, l, c in [(1, 1, 124.97), (1, 4, 383.93), (1, 16, 1299.69), (1, 64, 4968.16),
                     (1, 256, 18375.50), (64, 1, 197.97), (64, 64, 9119.34)]]
    # C6: MeshGEMV with G groups
    + [(["kernel", "gemv", "--region", str(p), "--m", str(mn), "--n", str(mn), "--groups", str(g)], c)
       for p, mn, g, c in [(80, 80, 8, 416.96), (400, 400, 8, 1372.08), (720, 720, 8, 2327.22),
                           (720, 5760, 8, 2358.03), (144, 144, 2, 948.96), (144, 144, 4, 708.95),
                           (144, 144, 8, 601.95)]]
    # C7: MeshGEMM
    + [(["kernel", "gemm", "--region", str(p), "--m", str(m), "--k", str(k), "--n", str(n)], c)
       for p, m, k, n, c in [(16, 16, 16, 16, 2637.4), (400, 400, 400, 400, 63788.4),
                             (720, 720, 720, 720, 114748.4), (720, 720, 5760, 720, 324070.0),
                             (720, 5760, 5760, 5760, 480747.7)]]
)

# C1 decode (ms/token -> cycles at 1.1 GHz) and C2 prefill (tokens/s) for LLaMA3-8B.
WSE2_ROWS = (
    [(["estimate", "--model", "sim/calibration/llama3-8b", "--region", str(p), "--context", "4096",
       "--prompt-tokens", "4096"], ("decode_tokens_per_s", tps))
     for p, tps in [(420, 2699.9), (540, 2501.5), (660, 2243.3)]]
    + [(["estimate", "--model", "sim/calibration/llama3-8b", "--region", str(p), "--context", "4096",
         "--prompt-tokens", "4096"], ("prefill_tokens_per_s", tps))
       for p, tps in [(480, 20320.6), (600, 25037.2), (720, 27686.5)]]
)

FREE = {
    "wse3": ["relay_stage_cycles", "relay_cycles_per_wavelet", "reduce_level_cycles",
             "phase_overhead_cycles", "task_overhead_cycles"],
    "wse2": ["phase_overhead_cycles", "task_overhead_cycles",
             "loop_overhead_cycles_per_element"],
}


def run(preset, params, rows):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(f'base = "{preset}"\n[cost]\n')
        for k, v in params.items():
            f.write(f"{k} = {max(v, 0.0)!r}\n")
        path = f.name
    errs = []
    for args, target in rows:
        out = subprocess.run([WAFER] + args + ["--hw", path, "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        j = json.loads(out.stdout)
        if isinstance(target, tuple):
            key, target = target
            got = j[key]
        else:
            got = j["cycles"]
        errs.append((args, target, got, got / target - 1.0))
    os.unlink(path)
    return errs


def nelder_mead(f, x0, steps, iters=300):
    pts = [list(x0)] + [[x + (s if i == j else 0) for j, x in enumerate(x0)] for i, s in enumerate(steps)]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = sorted(range(len(pts)), key=lambda i: vals[i])
        pts = [pts[i] for i in order]; vals = [vals[i] for i in order]
        n = len(x0)
        c = [sum(p[j] for p in pts[:-1]) / n for j in range(n)]
        r = [c[j] + (c[j] - pts[-1][j]) for j in range(n)]; fr = f(r)
        if fr < vals[0]:
            e = [c[j] + 2 * (c[j] - pts[-1][j]) for j in range(n)]; fe = f(e)
            pts[-1], vals[-1] = (e, fe) if fe < fr else (r, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = r, fr
        else:
            k = [c[j] + 0.5 * (pts[-1][j] - c[j]) for j in range(n)]; fk = f(k)
            if fk < vals[-1]:
                pts[-1], vals[-1] = k, fk
            else:
                for i in range(1, len(pts)):
                    pts[i] = [pts[0][j] + 0.5 * (pts[i][j] - pts[0][j]) for j in range(n)]
                    vals[i] = f(pts[i])
    best = min(range(len(pts)), key=lambda i: vals[i])
    return pts[best], vals[best]


def main():
    preset = sys.argv[1]
    rows = WSE3_ROWS if preset == "wse3" else WSE2_ROWS
    names = FREE[preset]
    x0 = [float(v) for v in (sys.argv[2:] or [])] or None
    if x0 is None:
        x0 = {"wse3": [76, 1.45, 7.2, 45, 41.5], "wse2": [59.9, 65.7, 0.16]}[preset]
    def loss(x):
        if any(v < 0 for v in x):
            return 1e9
        return sum(e[3] ** 2 for e in run(preset, dict(zip(names, x)), rows))
    x, v = nelder_mead(loss, x0, [max(abs(a) * 0.2, 0.05) for a in x0])
    print("fitted:", {n: round(a, 3) for n, a in zip(names, x)}, "loss", v)
    for args, target, got, err in run(preset, dict(zip(names, x)), rows):
        print(f"{' '.join(args):100s} {target:12.2f} {got:12.2f} {err*100:+6.1f}%")


if __name__ == "__main__":
    main()
