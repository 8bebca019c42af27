"""Selective-scan benchmark: every backend measured side by side in one run.

For batch 2, d_inner 64, N 16 and each length L it measures forward and forward+backward time and
the peak extra memory of one forward+backward, for

    sequential   lightm_edu's loop over time (the reference)
    parallel     lightm_edu's chunked scan
    pscan        mambapy's Blelloch scan (optional: pip install mambapy), wrapped into the same
                 selective scan (softplus, exp(delta A), delta B u, <h, C>, D, SiLU(z) gate)
    mamba_ssm    the CUDA kernel (GPU only, when installed)

and prints one table with the ratios. On the CPU each measurement runs in a fresh subprocess whose
peak resident memory (VmHWM) minus its memory before the call is the "peak" column; on the GPU the
peak is torch.cuda.max_memory_allocated minus the memory held before the call.

    python benchmarks/scan.py                       # CPU, L in 1024 4096 16384 65536
    python benchmarks/scan.py --device cuda
    python benchmarks/scan.py --lengths 1024 4096 --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

BATCH, D_INNER, D_STATE = 2, 64, 16
LENGTHS = (1024, 4096, 16384, 65536)


def make_inputs(length, device, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g) * scale + shift).to(device).requires_grad_()

    A = (-torch.rand(D_INNER, D_STATE, generator=g) * D_STATE - 0.5).to(device).requires_grad_()
    return dict(u=randn(BATCH, D_INNER, length), delta=randn(BATCH, D_INNER, length, scale=0.5, shift=-2.0),
                A=A, B=randn(BATCH, D_STATE, length), C=randn(BATCH, D_STATE, length),
                D=randn(D_INNER), z=randn(BATCH, D_INNER, length), delta_bias=randn(D_INNER, scale=0.1))


def pscan_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True):
    """The same selective scan computed with mambapy's pscan (layout (b, l, d, n))."""
    import torch.nn.functional as F
    from mambapy.pscan import pscan

    dt = delta + delta_bias[:, None]
    dt = F.softplus(dt) if delta_softplus else dt
    dt = dt.transpose(1, 2)  # (b, l, d)
    dA = (dt.unsqueeze(-1) * A).exp()  # (b, l, d, n)
    Bu = dt.unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2) * u.transpose(1, 2).unsqueeze(-1)  # (b, l, d, n)
    hs = pscan(dA, Bu)  # (b, l, d, n)
    y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)  # (b, d, l)
    return (y + D[:, None] * u) * F.silu(z)


def get_fn(name):
    if name == "pscan":
        return pscan_selective_scan
    from lightm_edu import selective_scan

    return lambda **kw: selective_scan(**kw, delta_softplus=True, backend=name)


def _rss_mib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def measure(name, length, device, repeats, budget_s):
    """Best-of forward and forward+backward seconds, and peak extra memory in MiB."""
    import torch

    fn = get_fn(name)
    inputs = make_inputs(length, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            fn(**inputs)
        sync()

    def forward_backward():
        fn(**inputs).sum().backward()
        sync()
        for t in inputs.values():
            t.grad = None

    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_mib("VmRSS")

    results = []
    for step in (forward_backward, forward):
        times, spent = [], 0.0
        while len(times) < repeats + 1 and (spent < budget_s or len(times) < 2):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
            spent += times[-1]
            if step is forward_backward and len(times) == 1:  # peak memory of one fwd+bwd
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" \
                    else _rss_mib("VmHWM") - base
        results.append(min(times[1:]))  # the first run is a warm-up
    return {"fwd_bwd": results[0], "fwd": results[1], "peak_mib": peak}


def run_worker(args):
    import torch

    torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.worker, args.length, args.device, args.repeats, args.budget)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--backends", nargs="+", default=["sequential", "parallel", "pscan", "mamba_ssm"])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--budget", type=float, default=3.0, help="stop repeating after this many seconds")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args)

    from tqdm import tqdm

    backends = list(args.backends)
    if "pscan" in backends and importlib.util.find_spec("mambapy") is None:
        print("note: mambapy is not installed, so the pscan column is skipped (pip install mambapy)")
        backends.remove("pscan")
    if "mamba_ssm" in backends:
        if args.device != "cuda" or importlib.util.find_spec("mamba_ssm") is None:
            print("note: mamba_ssm runs on CUDA only and must be installed; its column is skipped")
            backends.remove("mamba_ssm")

    rows = {}
    jobs = [(L, b) for L in args.lengths for b in backends]
    for length, name in tqdm(jobs, desc="benchmark", unit="run"):
        if args.device == "cpu":  # a fresh process per run, so that its peak memory is its own
            cmd = [sys.executable, __file__, "--worker", name, "--length", str(length), "--device", "cpu",
                   "--threads", str(args.threads), "--repeats", str(args.repeats), "--budget", str(args.budget)]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if done.returncode != 0:
                raise RuntimeError(f"{name} at L={length} failed:\n{done.stderr}")
            rows[length, name] = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            import torch

            torch.cuda.empty_cache()
            rows[length, name] = measure(name, length, args.device, args.repeats, args.budget)

    print_table(rows, args, backends)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[1]}@{k[0]}": v for k, v in rows.items()}, f, indent=1)


def print_table(rows, args, backends):
    import torch

    where = f"CPU, {args.threads} threads" if args.device == "cpu" else torch.cuda.get_device_name()
    print(f"\nSelective scan, batch {BATCH}, d_inner {D_INNER}, N {D_STATE}, fp32, {where}, torch {torch.__version__}")
    refs = [r for r in ("sequential", "pscan", "mamba_ssm") if r in backends]
    header = f"{'L':>6} {'backend':<11} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MiB':>9}" + "".join(
        f" {'x vs ' + r:>14}" for r in refs)
    print(header)
    print("-" * len(header))
    for length in args.lengths:
        for name in backends:
            r = rows[length, name]
            line = f"{length:>6} {name:<11} {r['fwd'] * 1e3:>9.2f} {r['fwd_bwd'] * 1e3:>11.2f} {r['peak_mib']:>9.1f}"
            for ref in refs:  # > 1 means faster than the reference (fwd+bwd)
                line += f" {rows[length, ref]['fwd_bwd'] / r['fwd_bwd']:>14.2f}"
            print(line)
    if "parallel" not in backends:
        return
    print("\nparallel, forward+backward, measured above:")
    for length in args.lengths:
        p = rows[length, "parallel"]
        cpu_refs = [r for r in ("sequential", "pscan") if r in backends]
        if cpu_refs:
            best = min(cpu_refs, key=lambda r: rows[length, r]["fwd_bwd"])
            line = (f"  L={length:>6}: {rows[length, best]['fwd_bwd'] / p['fwd_bwd']:.2f}x faster than the faster "
                    f"of {' and '.join(cpu_refs)} ({best})")
            if "pscan" in backends:
                line += f"; peak memory {p['peak_mib'] / rows[length, 'pscan']['peak_mib']:.2f}x pscan's"
            print(line)
        if "mamba_ssm" in backends:
            print(f"  L={length:>6}: {p['fwd_bwd'] / rows[length, 'mamba_ssm']['fwd_bwd']:.2f}x the time of mamba_ssm")


if __name__ == "__main__":
    main()
