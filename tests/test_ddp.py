"""Multi-process training (DistributedDataParallel) on the CPU with 2 processes and gloo.

The independent reference is one process on the whole global batch: with the gradients averaged
across processes, a 2-process step must give the same loss (the mean of the two shares' losses),
the same gradients and the same weights afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightm_edu.data import sample_dir
from lightm_edu.train import RankBatchSampler, load_checkpoint, make_loss, training_step

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "ddp_worker.py"


def _worker_module():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, nproc: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _check_ddp_step_equals_one_process(ddp_file: Path, device: str, monkeypatch) -> None:
    worker = _worker_module()
    if device == "cuda":  # no TF32, as in the worker
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    ddp = torch.load(ddp_file, weights_only=True)
    assert ddp["world_size"] == 2 and ddp["device"].startswith(device)

    model = worker.make_model().to(device)
    optimiser = worker.make_optimiser(model)
    image, label = worker.global_batch()
    loss = training_step(model, optimiser, make_loss(), image.to(device), label.to(device),
                         grad_clip=worker.GRAD_CLIP)

    assert ddp["losses"].mean().item() == pytest.approx(loss.item(), rel=1e-5)
    assert not torch.allclose(ddp["losses"][0], ddp["losses"][1])  # the shares really differ
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(ddp["grads"][name], parameter.grad.cpu(), rtol=1e-4, atol=1e-6, msg=name)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ddp["weights"][name], value.cpu(), rtol=1e-4, atol=1e-6, msg=name)


def test_two_gloo_processes_take_the_same_step_as_one_process_on_the_global_batch(tmp_path, monkeypatch):
    torchrun(str(WORKER), str(tmp_path / "ddp.pt"), "cpu")
    _check_ddp_step_equals_one_process(tmp_path / "ddp.pt", "cpu", monkeypatch)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs (NCCL); the gloo test covers the CPU")
def test_two_nccl_processes_take_the_same_step_as_one_gpu_on_the_global_batch(tmp_path, monkeypatch):
    torchrun(str(WORKER), str(tmp_path / "ddp.pt"), "cuda")
    _check_ddp_step_equals_one_process(tmp_path / "ddp.pt", "cuda", monkeypatch)


def test_rank_batch_sampler_shares_each_global_batch():
    shares = []
    for rank in range(2):
        generator = torch.Generator().manual_seed(3)
        shares.append(list(RankBatchSampler(10, 4, rank, 2, generator, drop_last=True)))
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    assert len(shares[0]) == len(shares[1]) == 2
    for step in range(2):
        assert sorted(shares[0][step] + shares[1][step]) == sorted(order[4 * step:4 * step + 4])
    with pytest.raises(ValueError, match="batch_size 3 .* 2 processes: use a multiple of 2"):
        RankBatchSampler(10, 3, 0, 2, torch.Generator(), drop_last=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs 2 GPUs"))])
def test_torchrun_trains_end_to_end_with_two_processes(tmp_path, device):
    out = tmp_path / "run"
    done = torchrun("-m", "lightm_edu.cli", "train", "--task", "hippocampus", "--data", str(sample_dir()),
                    "--out", str(out), "--n-test", "1", "--n-val", "1", "--epochs", "2", "--batch-size", "2",
                    "--patch-size", "16", "16", "16", "--init-filters", "8", "--workers", "0", "--device", device,
                    "--fast")
    assert done.stdout.count("checkpoint:") == 1  # process 0 reports, once
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 2 and state["world_size"] == 2
    assert len((out / "log.csv").read_text().splitlines()) == 3  # header + one row per epoch, not per process
