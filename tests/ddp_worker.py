"""One DistributedDataParallel training step, run by tests/test_ddp.py under torchrun.

Each process takes its share of a fixed global batch and calls lightm_edu.train.training_step on
the wrapped model; process 0 saves the losses of all processes, the gradients and the weights
after the step to the file named by the first argument.
"""

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from lightm_edu import LightMUNet
from lightm_edu.train import distributed_setup, make_loss, training_step

GLOBAL_BATCH = 4
GRAD_CLIP = 0.5  # small enough that clipping is active, so the test covers it


def exact_float32() -> None:
    """No TF32 on GPUs: the comparison with one process is then limited by float32 round-off only."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def make_model() -> LightMUNet:
    torch.manual_seed(0)
    return LightMUNet(2, 1, 2, init_filters=8, scan_backend="parallel")


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(GLOBAL_BATCH, 1, 32, 32, generator=generator)  # (b, 1, h, w)
    label = (torch.rand(GLOBAL_BATCH, 1, 32, 32, generator=generator) > 0.6).float()  # (b, 1, h, w)
    return image, label


def make_optimiser(model):
    return torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5, eps=1e-5)


def main(out_path: str, device_name: str = "cpu") -> None:
    rank, world_size, device, _ = distributed_setup(device_name)  # gloo on the CPU, NCCL on GPUs
    if device.type == "cuda":
        exact_float32()
    model = make_model().to(device)
    model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimiser = make_optimiser(model)
    image, label = global_batch()
    share = slice(rank, None, world_size)
    loss = training_step(model, optimiser, make_loss(), image[share].to(device), label[share].to(device),
                         grad_clip=GRAD_CLIP)
    losses = [torch.zeros((), device=device) for _ in range(world_size)]
    dist.all_gather(losses, loss)
    if rank == 0:
        torch.save({"losses": torch.stack(losses).cpu(), "world_size": world_size, "device": str(device),
                    "grads": {n: p.grad.cpu() for n, p in model.module.named_parameters()},
                    "weights": {k: v.cpu() for k, v in model.module.state_dict().items()}}, out_path)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
