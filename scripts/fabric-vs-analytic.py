#!/usr/bin/env python3
"""Fabric simulator against the analytic model over a sweep of kernels and layers.

Runs `wafer kernel ... --json` with `--sim analytic` and `--sim fabric` over
region sizes 16 to 720, K-tree levels 1 to 4, vector lengths, non-square
regions, the ring allreduce over columns of 16 to 720 PEs (one column: the
columns of a region run the same ring independently), and `wafer estimate
--sim fabric` on whole layers at several KV lengths (the mean layer, the
token's transfers between regions and the decode token), and prints a
markdown table: both figures, their ratio, and a flag where they differ by
more than 10%. docs/validation.md and docs/fabric.md quote its output and
explain each flagged difference.

Usage (repository root, after `cargo build --release`):

    python3 scripts/fabric-vs-analytic.py [--wafer target/release/wafer] [--hw wse3] [--quick]
        [--only kernels|ring|layers]
"""

import argparse
import json
import subprocess
import sys


def run(wafer, args):
    out = subprocess.run([wafer, *args, "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"`wafer {' '.join(args)}` failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def kernel_rows(quick):
    regions = [16, 144, 720] if quick else [16, 48, 144, 400, 720]
    for p in regions:
        for levels in [1, 2, 3, 4]:
            for n in [1, 64]:
                yield ["allreduce", "--region", str(p), "--levels", str(levels), "--n", str(n)]
    for p in regions:
        for mult in [1, 8]:
            m = p * mult
            yield ["gemv", "--region", str(p), "--m", str(m), "--n", str(m)]
    for shape in ["144x48", "48x400", "400x144"]:
        yield ["allreduce", "--region", shape, "--n", "16"]
        w, h = (int(v) for v in shape.split("x"))
        yield ["gemv", "--region", shape, "--m", str(4 * h), "--n", str(4 * w)]


def ring_rows(quick):
    regions = [16, 144, 720] if quick else [16, 48, 144, 400, 720]
    for p in regions:
        for n in [64, 1024, 4096]:
            yield ["allreduce", "--algorithm", "ring", "--region", f"1x{p}", "--n", str(n)]


def layer_rows(quick):
    contexts = [1024] if quick else [1024, 8192, 32768]
    for ctx in contexts:
        yield ["--model", "smollm2-135m", "--context", str(ctx)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wafer", default="target/release/wafer")
    ap.add_argument("--hw", default="wse3")
    ap.add_argument("--quick", action="store_true", help="fewer regions and one layer")
    ap.add_argument("--only", choices=["kernels", "ring", "layers"], help="run one group of rows")
    a = ap.parse_args()
    print("| run | analytic | fabric | fabric / analytic | > 10% |")
    print("|---|---|---|---|---|")
    kernels = [] if a.only not in (None, "kernels") else list(kernel_rows(a.quick))
    rings = [] if a.only not in (None, "ring") else list(ring_rows(a.quick))
    layers = [] if a.only not in (None, "layers") else list(layer_rows(a.quick))
    for k in kernels + rings:
        args = ["kernel", *k, "--hw", a.hw]
        an = run(a.wafer, args)["cycles"]
        fa = run(a.wafer, [*args, "--sim", "fabric"])["cycles"]
        flag = "yes" if abs(fa / an - 1) > 0.10 else ""
        print(f"| `kernel {' '.join(k)}` | {an:,.1f} | {fa:,.1f} | {fa / an:.2f} | {flag} |", flush=True)
    for l in layers:
        d = run(a.wafer, ["estimate", *l, "--hw", a.hw, "--sim", "fabric"])
        f = d["fabric"]
        fa = sum(f["layer_cycles"]) / len(f["layer_cycles"])
        an = sum(f["analytic_layer_cycles"]) / len(f["analytic_layer_cycles"])
        flag = "yes" if abs(fa / an - 1) > 0.10 else ""
        print(f"| `estimate {' '.join(l)}`, mean layer | {an:,.1f} | {fa:,.1f} | {fa / an:.2f} | {flag} |", flush=True)
        an_x, fa_x = f["analytic_transfer_cycles"], f["transfer_cycles"]
        flag = "yes" if abs(fa_x / an_x - 1) > 0.10 else ""
        print(f"| `estimate {' '.join(l)}`, transfers | {an_x:,.1f} | {fa_x:,.1f} | {fa_x / an_x:.2f} | {flag} |", flush=True)
        an_t, fa_t = d["analytic_decode_cycles_per_token"], d["decode_cycles_per_token"]
        flag = "yes" if abs(fa_t / an_t - 1) > 0.10 else ""
        print(f"| `estimate {' '.join(l)}`, decode token | {an_t:,.1f} | {fa_t:,.1f} | {fa_t / an_t:.2f} | {flag} |", flush=True)


if __name__ == "__main__":
    main()
