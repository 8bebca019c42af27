"""Selective-scan benchmark: every backend measured side by side in one run.

For batch 2, d_inner 64, N 16 and each length L it measures forward and forward+backward time and
the peak extra memory of one forward+backward, for

    sequential   lightm_edu's loop over time (the reference)
    parallel     lightm_edu's chunked scan (recomputes states in the backward pass: lean memory)
    parallel_saved  the same with save_states=True (keeps them: faster, memory grows with L)
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
import json
import os
import subprocess
import sys

from lightm_edu.bench import BATCH, D_INNER, D_STATE, LENGTHS, available, measure


def run_worker(args):
    import torch

    torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.worker, args.length, args.device, args.repeats, args.budget)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--backends", nargs="+",
                        default=["sequential", "parallel", "parallel_saved", "pscan", "mamba_ssm"])
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

    backends = [b for b in args.backends if available(b, args.device)]
    for skipped in sorted(set(args.backends) - set(backends)):
        why = "pip install mambapy" if skipped == "pscan" else "CUDA only, and mamba_ssm must be installed"
        print(f"note: the {skipped} column is skipped ({why})")

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
    header = f"{'L':>6} {'backend':<14} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MiB':>9}" + "".join(
        f" {'x vs ' + r:>14}" for r in refs)
    print(header)
    print("-" * len(header))
    for length in args.lengths:
        for name in backends:
            r = rows[length, name]
            line = f"{length:>6} {name:<14} {r['fwd'] * 1e3:>9.2f} {r['fwd_bwd'] * 1e3:>11.2f} {r['peak_mib']:>9.1f}"
            for ref in refs:  # > 1 means faster than the reference (fwd+bwd)
                line += f" {rows[length, ref]['fwd_bwd'] / r['fwd_bwd']:>14.2f}"
            print(line)
    references = [r for r in ("sequential", "pscan") if r in backends]
    for name in ("parallel", "parallel_saved"):
        if name not in backends:
            continue
        print(f"\n{name}, forward+backward, measured above:")
        for length in args.lengths:
            p = rows[length, name]
            if references:
                best = min(references, key=lambda r: rows[length, r]["fwd_bwd"])
                line = (f"  L={length:>6}: {rows[length, best]['fwd_bwd'] / p['fwd_bwd']:.2f}x faster than the "
                        f"faster of {' and '.join(references)} ({best})")
                if "pscan" in backends:
                    line += f"; peak memory {p['peak_mib'] / rows[length, 'pscan']['peak_mib']:.2f}x pscan's"
                print(line)
            if "mamba_ssm" in backends:
                print(f"  L={length:>6}: {p['fwd_bwd'] / rows[length, 'mamba_ssm']['fwd_bwd']:.2f}x the time of mamba_ssm")


if __name__ == "__main__":
    main()
