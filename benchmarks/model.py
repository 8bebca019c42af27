"""LightM-UNet forward latency, every available scan backend side by side in one run.

CPU (2 threads by default): one 1x256x256 chest X-ray (LightMUNet(2, 1, 2)) and one 1x64x64x64
volume (LightMUNet(3, 1, 3)). GPU: the input sizes of the official measurements, batch 1:
3x512x512 and 3x256x256 (LightMUNet(2, 3, 2)), 1x128^3 and 1x64^3 (LightMUNet(3, 1, 3)).
Times are the best of a few runs after a warm-up, fp32, eval mode, no gradients.

    python benchmarks/model.py                  # CPU
    python benchmarks/model.py --device cuda    # GPU: parallel and mamba_ssm
    python benchmarks/model.py --backends parallel sequential
"""

from __future__ import annotations

import argparse
import json

import torch
from tqdm import tqdm

from lightm_edu.bench import time_forward
from lightm_edu.model import LightMUNet
from lightm_edu.scan import available_backends

CPU_INPUTS = [("2D 1x256x256", 2, (1, 1, 256, 256)), ("3D 1x64x64x64", 3, (1, 1, 64, 64, 64))]
GPU_INPUTS = [("2D 3x512x512", 2, (1, 3, 512, 512)), ("2D 3x256x256", 2, (1, 3, 256, 256)),
              ("3D 1x128^3", 3, (1, 1, 128, 128, 128)), ("3D 1x64^3", 3, (1, 1, 64, 64, 64))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backends", nargs="+", help="default: parallel and, on CUDA, mamba_ssm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    usable = available_backends(args.device)
    backends = args.backends or [b for b in ("parallel", "mamba_ssm") if b in usable]
    for name in backends:
        if name not in usable:
            parser.error(f"backend {name!r} is not available on {args.device} here (available: {', '.join(usable)})")
    inputs = CPU_INPUTS if args.device == "cpu" else GPU_INPUTS

    rows = []
    for label, spatial_dims, shape in tqdm(inputs, desc="inputs"):
        torch.manual_seed(0)
        x = torch.randn(shape, device=device)
        for backend in backends:
            model = LightMUNet(spatial_dims, shape[1], 2 if spatial_dims == 2 else 3,
                               scan_backend=backend).to(device).eval()
            seconds = time_forward(model, x, repeats=args.repeats)
            rows.append({"input": label, "backend": backend, "ms": seconds * 1e3})
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()

    where = f"CPU, {args.threads} threads" if device.type == "cpu" else torch.cuda.get_device_name()
    print(f"\nLightM-UNet forward latency, batch 1, fp32, no grad, {where}, torch {torch.__version__}")
    print(f"{'input':<16} {'backend':<12} {'ms':>10} {'x slowest':>10}")
    for label, _, _ in inputs:
        group = [r for r in rows if r["input"] == label]
        slowest = max(r["ms"] for r in group)
        for r in group:
            print(f"{r['input']:<16} {r['backend']:<12} {r['ms']:>10.1f} {slowest / r['ms']:>10.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
