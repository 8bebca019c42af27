"""Training LightM-UNet (or a peer) with the official recipe, and checkpoints that can be trusted.

The training chapter of the book (chapter 8) walks through it. The recipe of the official trainer:

    loss        Dice (without background, smooth 1e-5) + cross-entropy, weights 1 : 1
    optimiser   Adam, lr 1e-4, weight decay 1e-5, eps 1e-5
    schedule    polynomial decay per epoch: lr = lr0 * (1 - epoch / epochs) ** 0.9
    clipping    gradient norm at 12
    precision   float32 (bf16 autocast optional)

Several GPUs (or CPU processes) train one model with PyTorch's DistributedDataParallel when the
run is started by ``torchrun``, e.g. ``torchrun --nproc_per_node 4 -m lightm_edu.cli train ...``:
``batch_size`` stays the global batch, each process takes an equal share of it, and the gradients
are averaged across processes, so one step equals one process's step on the whole batch.

Checkpoints are written atomically (temporary file, then rename) and hold everything needed to
resume exactly (model, optimiser, scheduler, epoch, random states) and to predict (the model and
preprocessing configuration). They load with ``torch.load(..., weights_only=True)``.

``model`` chooses the network: ``"lightmunet"`` (default) or any peer of
:data:`lightm_edu.baselines.PEERS` (``"dynunet"``, ``"segresnet"``, ``"umamba_bot"``, ...), built for
the task's channels and classes. Everything else (loss, optimiser, schedule, augmentation, split,
budget) stays the same, which is what makes the held-out Dice of two runs comparable.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._atomic import atomic_output
from .model import LightMUNet

__all__ = ["TrainConfig", "train", "training_loop", "validate", "make_loss", "training_step", "distributed_setup", "RankBatchSampler",
           "save_checkpoint", "load_checkpoint", "build_model", "model_from_config", "poly_lr_factor",
           "export_checkpoint", "load_config"]


@dataclass
class TrainConfig:
    """Everything a training run depends on; stored in every checkpoint.

    Defaults are the official recipe; ``fast=True`` shrinks the run to a few iterations on a few
    cases (for CPU smoke tests).
    """

    task: str = "cxr_lung"
    model: str = "lightmunet"  # a key of lightm_edu.baselines.PEERS
    model_options: dict = field(default_factory=dict)  # constructor arguments replacing the model's defaults
    data_dir: str | None = None  # default: $LIGHTM_EDU_DATA/<task folder>
    out_dir: str = "runs/lightmunet"
    split_file: str | None = None  # default: <out_dir>/split.json, made on first use
    n_val: int | None = None
    n_test: int | None = None
    epochs: int = 100
    iterations_per_epoch: int = 250
    batch_size: int = 12
    patch_size: tuple | None = None  # default: the task's
    init_filters: int = 32  # LightM-UNet's (and SegResNet's) first width; other peers: model_options
    lr: float = 1e-4
    weight_decay: float = 1e-5
    eps: float = 1e-5
    poly_power: float = 0.9
    grad_clip: float = 12.0
    bf16: bool = False
    scan_backend: str | None = None
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"
    fast: bool = False
    max_minutes: float | None = None  # stop (after the current epoch) once this much time has passed
    val_every: int = 1  # validate every this many epochs (and after the last); 0: never
    max_val_cases: int | None = None  # validate on at most this many validation cases (default: all)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def poly_lr_factor(epoch: int, epochs: int, power: float = 0.9) -> float:
    """The official schedule: (1 - epoch / epochs) ** power."""
    return (1 - epoch / epochs) ** power


def build_model(task, init_filters: int = 32, scan_backend: str | None = None, model: str = "lightmunet",
                model_options: dict | None = None, patch_size=None) -> torch.nn.Module:
    """The network a run trains, for ``task``'s input channels and classes.

    Args:
        task: a :class:`lightm_edu.data.SegmentationTask`.
        init_filters: LightM-UNet's (and SegResNet's) first width.
        scan_backend: selective-scan backend of the Mamba models (None: the global choice).
        model: "lightmunet" or another key of :data:`lightm_edu.baselines.PEERS`.
        model_options: constructor arguments replacing the model's defaults (the paper's settings).
        patch_size: the training patch: the input size of the models whose architecture depends on
            it (UNETR, U-Mamba Enc), and checked against every model's total stride.
    Returns:
        (b, task.in_channels, *patch) -> (b, task.n_classes, *patch) logits
    """
    config = model_config(task, init_filters, model, model_options, patch_size)
    return model_from_config(model, config, scan_backend)


def model_config(task, init_filters: int = 32, model: str = "lightmunet", model_options: dict | None = None,
                 patch_size=None) -> dict:
    """What :func:`model_from_config` needs to rebuild the network (stored in every checkpoint)."""
    from .baselines import PEERS, peer_config

    options = dict(model_options or {})
    if "scan_backend" in options:
        raise ValueError("Set the scan backend with scan_backend (--backend), not in model_options.")
    if model == "lightmunet":
        return dict(spatial_dims=task.spatial_dims, in_channels=task.in_channels, out_channels=task.n_classes,
                    init_filters=init_filters, **options)
    if model not in PEERS:
        raise ValueError(f"Unknown model {model!r}; choose lightmunet or a peer: {', '.join(PEERS)}.")
    if init_filters != 32:
        if model != "segresnet":
            raise ValueError(f"init_filters is LightM-UNet's and SegResNet's first width; {model} has none. "
                             "Give its widths in model_options (see lightm_edu.baselines.peer_config).")
        options.setdefault("init_filters", init_filters)
    peer_config(model, task.spatial_dims, **options)  # unknown settings fail here, before any data is read
    size = [int(s) for s in patch_size] if patch_size is not None else None
    return dict(spatial_dims=task.spatial_dims, in_channels=task.in_channels, out_channels=task.n_classes,
                image_size=size, options=options)


def model_from_config(model: str, config: dict, scan_backend: str | None = None) -> torch.nn.Module:
    """Build ``model`` ("lightmunet" or a peer's name) from the configuration a checkpoint stores."""
    if model == "lightmunet":
        return LightMUNet(**config, scan_backend=scan_backend)
    from .baselines import MAMBA_MODELS, build_peer

    options = dict(config["options"])
    if model in MAMBA_MODELS:
        options["scan_backend"] = scan_backend
    return build_peer(model, config["spatial_dims"], config["in_channels"], config["out_channels"],
                      image_size=config["image_size"], **options)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(path, **content) -> None:
    """torch.save to ``path`` atomically: a temporary file in the same folder, then a rename."""
    with atomic_output(path) as temporary:
        torch.save(content, temporary)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint without running any code from it (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}. Train one with `lightm-edu train`, or check the path.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable lightm_edu checkpoint ({error}).") from error


def _pack_rng() -> dict:
    """Random states as tensors and plain values (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached),
            "torch": torch.get_rng_state()}


def _unpack_rng(state: dict) -> None:
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _plain(tensor):
    """A plain torch.Tensor (MONAI's MetaTensor carries metadata the model does not need)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor


def _infinite(loader):
    while True:
        yield from loader


def make_loss():
    """The official loss: Dice over the foreground classes + cross-entropy, weights 1 : 1.

    Both halves are means over the batch (Dice per image and class, cross-entropy per pixel), so
    the loss of a batch is the mean of the losses of equal shares of it.
    """
    from monai.losses import DiceCELoss

    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, smooth_nr=1e-5,
                      smooth_dr=1e-5, lambda_dice=1.0, lambda_ce=1.0)


def training_step(model, optimiser, loss_fn, image, label, grad_clip: float = 12.0, bf16: bool = False):
    """One optimiser step on one batch; returns the loss (a 0-d tensor).

    Args:
        image: (b, c, *spatial) float; label: (b, 1, *spatial) class indices.
        model: a LightMUNet, or one wrapped in DistributedDataParallel: then ``image`` is this
            process's share of the global batch and backward() averages the gradients across
            processes, so clipping and the step see the gradient of the whole batch.
    """
    with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(image)  # (b, n_classes, *spatial)
    loss = loss_fn(logits.float(), label)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimiser.step()
    return loss.detach()


def distributed_setup(device_name: str = "auto") -> tuple[int, int, torch.device, bool]:
    """(rank, world_size, device, started_here) for this process.

    Under ``torchrun`` (environment variables RANK, WORLD_SIZE, LOCAL_RANK) it joins the process
    group: NCCL with one GPU per process when GPUs are used, gloo on the CPU. Otherwise it is a
    single process: (0, 1, the device of ``device_name``, False).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, pick_device(device_name), False
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device_name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device_name!r} with {world_size} processes: use 'auto', 'cuda' (one GPU per "
                         "process, chosen by LOCAL_RANK) or 'cpu'.")
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name == "cuda" and not use_cuda:
        raise RuntimeError("device='cuda' but no GPU is visible; use device='cpu' for CPU processes (gloo).")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"process {local_rank} has no GPU of its own: {torch.cuda.device_count()} visible. "
                               f"Start torchrun with --nproc_per_node {torch.cuda.device_count()} or fewer.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    started_here = not dist.is_initialized()
    if started_here:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world_size, device, started_here


class RankBatchSampler(torch.utils.data.Sampler):
    """This process's share of each global batch.

    Every process draws the same shuffled order (from ``generator``, seeded alike everywhere) and
    cuts it into global batches of ``global_batch`` samples; process ``rank`` takes samples
    rank, rank + world_size, ... of each, so the shares of one step together are one global batch.
    """

    def __init__(self, n_samples: int, global_batch: int, rank: int, world_size: int, generator, drop_last: bool):
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} (the global batch) cannot be shared equally by "
                             f"{world_size} processes: use a multiple of {world_size}.")
        self.n_samples, self.global_batch = n_samples, global_batch
        self.rank, self.world_size, self.generator, self.drop_last = rank, world_size, generator, drop_last

    def __iter__(self):
        order = torch.randperm(self.n_samples, generator=self.generator).tolist()
        for start in range(0, self.n_samples, self.global_batch):
            batch = order[start:start + self.global_batch]
            if len(batch) < self.global_batch and (self.drop_last or len(batch) < self.world_size):
                break
            yield batch[self.rank::self.world_size]

    def __len__(self) -> int:
        full, rest = divmod(self.n_samples, self.global_batch)
        return full + (1 if rest and not self.drop_last and rest >= self.world_size else 0)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _from_rank0(value: float, world_size: int, device) -> float:
    """Rank 0's value on every process (e.g. whether the time budget is spent)."""
    if world_size == 1:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)  # NCCL needs GPU tensors
    dist.broadcast(tensor, src=0)
    return tensor.item()


def _mean_over_processes(value: float, world_size: int, device) -> float:
    if world_size == 1:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item() / world_size


def _barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def train(config: TrainConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict:
    """Train ``config.model`` (LightM-UNet by default) on ``config.task``; returns a summary (paths, last losses).

    Writes ``<out_dir>/last.pt`` after every epoch (atomically), ``<out_dir>/log.csv`` (one row
    per epoch: train loss, learning rate, seconds and the validation Dice of :func:`validate`),
    ``<out_dir>/best.pt`` (the epoch with the best validation Dice) and ``<out_dir>/split.json``.
    With ``resume=True`` it continues from ``last.pt``
    exactly where it stopped (model, optimiser, scheduler, epoch, random states). ``stop_after``
    ends this run after that many epochs (a time budget); a later ``resume=True`` goes on.
    """
    rank, world_size, device, started_here = distributed_setup(config.device)
    try:
        return training_loop(config, resume, progress, stop_after, rank=rank, world_size=world_size, device=device)
    finally:
        if started_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def training_loop(config: TrainConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None,
                  rank: int = 0, world_size: int = 1, device: torch.device | None = None) -> dict:
    """The training loop of one process; :func:`train` sets up the processes and calls it.

    ``rank`` and ``world_size`` describe the process group that :func:`distributed_setup` made
    (0 and 1 for a single process); ``device`` defaults to ``config.device``. Arguments and result
    as :func:`train`.
    """
    from monai.data import DataLoader
    from tqdm import tqdm

    from . import data

    device = pick_device(config.device) if device is None else device
    main_process = rank == 0  # the one that writes the split, the log and the checkpoints
    task = data.TASKS[config.task]
    patch = tuple(config.patch_size) if config.patch_size else tuple(task.patch_size)
    # Bad model settings fail here, before anything is written.
    described = model_config(task, config.init_filters, config.model, config.model_options, patch)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(config.data_dir) if config.data_dir else data.data_root() / task.folder
    cases = data.find_cases(data_dir)
    by_id = {c["case_id"]: c for c in cases}
    split_path = Path(config.split_file) if config.split_file else out_dir / "split.json"
    if main_process and not split_path.is_file():
        split = data.make_split(list(by_id), n_test=config.n_test, n_val=config.n_val, seed=config.seed)
        data.save_split(split, split_path)
    _barrier(world_size)
    split = data.load_split(split_path, case_ids=list(by_id))
    train_cases = [by_id[i] for i in split["train"]]
    val_cases = [by_id[i] for i in split["val"]] if config.val_every else []
    if config.fast:
        train_cases, val_cases = train_cases[:8], val_cases[:2]
    if config.max_val_cases is not None:
        val_cases = val_cases[:config.max_val_cases]

    seed_everything(config.seed)
    model = model_from_config(config.model, described, config.scan_backend).to(device)
    if isinstance(model, LightMUNet):  # checkpoints record all its settings, defaults included
        described = _lightmunet_config(model)
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, eps=config.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda epoch: poly_lr_factor(min(epoch, config.epochs - 1), config.epochs, config.poly_power))
    start_epoch = 0
    best_val_dice = float("-inf")
    checkpoint_path = out_dir / "last.pt"
    if resume:
        state = load_checkpoint(checkpoint_path)
        _unwrap(model).load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"]
        best_val_dice = state.get("best_val_dice", best_val_dice)
        _unpack_rng(state["rng"])

    transforms = data.train_transforms(task, patch_size=patch)
    dataset = data.make_dataset(train_cases, transforms)
    generator = torch.Generator()
    drop_last = len(dataset) > config.batch_size
    if world_size == 1:
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=config.num_workers,
                            generator=generator, drop_last=drop_last)
    else:
        sampler = RankBatchSampler(len(dataset), config.batch_size, rank, world_size, generator, drop_last)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=config.num_workers)
    loss_fn = make_loss()
    log_path = out_dir / "log.csv"
    iterations = 2 if config.fast else config.iterations_per_epoch
    history = []
    last_epoch = config.epochs if stop_after is None else min(config.epochs, start_epoch + stop_after)
    run_started = time.perf_counter()

    def out_of_time() -> bool:  # decided by process 0, so that all processes stop after the same epoch
        spent = config.max_minutes is not None and time.perf_counter() - run_started > 60 * config.max_minutes
        return bool(_from_rank0(spent, world_size, device))

    for epoch in range(start_epoch, last_epoch):
        if out_of_time():
            break
        # Every epoch's randomness (sample order, augmentation) is a function of (seed, epoch), so a
        # resumed run continues exactly as an uninterrupted one would. The sample order is the same
        # on every process; the augmentation differs between processes.
        generator.manual_seed(config.seed * 100_003 + epoch)
        transforms.set_random_state(seed=(config.seed * 100_003 + epoch + 7_919 * rank) % 2 ** 32)
        batches = _infinite(loader)
        epoch_lr = optimiser.param_groups[0]["lr"]
        model.train()
        losses = []
        bar = tqdm(range(iterations), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not (progress and main_process),
                   leave=False)
        started = time.perf_counter()
        for _ in bar:
            batch = next(batches)
            image, label = _plain(batch["image"]).to(device), _plain(batch["label"]).to(device)
            loss = training_step(model, optimiser, loss_fn, image, label, config.grad_clip, config.bf16)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        scheduler.step()
        row = {"epoch": epoch + 1, "train_loss": _mean_over_processes(float(np.mean(losses)), world_size, device),
               "lr": epoch_lr, "seconds": time.perf_counter() - started}
        stop_now = out_of_time()
        if val_cases and main_process:
            # Every row has the validation columns (empty between validations) so the CSV stays square.
            row.update({key: "" for key in _val_columns(task)})
            if (epoch + 1) % config.val_every == 0 or epoch + 1 == last_epoch or stop_now:
                row.update(validate(_unwrap(model), val_cases, task, patch, device))
        history.append(row)
        if main_process:
            _append_csv(log_path, row)
            content = dict(model=_unwrap(model).state_dict(), optimiser=optimiser.state_dict(),
                           scheduler=scheduler.state_dict(), epoch=epoch + 1, rng=_pack_rng(),
                           config=config.to_dict(), model_name=config.model,
                           model_config=described, task=config.task,
                           patch_size=list(patch), split={k: list(split[k]) for k in ("train", "val", "test")},
                           world_size=world_size)
            if row.get("val_dice", "") != "" and row["val_dice"] > best_val_dice:
                best_val_dice = row["val_dice"]
                save_checkpoint(out_dir / "best.pt", **content, best_val_dice=best_val_dice)
            save_checkpoint(checkpoint_path, **content, best_val_dice=best_val_dice)
        _barrier(world_size)  # the others wait for validation and the checkpoint
        if stop_now:
            break
    best = out_dir / "best.pt"
    return {"checkpoint": str(checkpoint_path), "best": str(best) if best.is_file() else None, "log": str(log_path),
            "split": str(split_path), "history": history, "rank": rank, "world_size": world_size}


def _val_columns(task) -> list[str]:
    return ["val_dice"] + [f"val_dice_{c}" for c in task.class_names[1:]]


def validate(model, cases: list[dict], task, patch_size, device) -> dict:
    """Validation Dice as the log records it: ``{"val_dice": mean over foreground classes,
    "val_dice_<class>": mean over cases}``, with the same sliding-window inference as the test."""
    from .evaluate import _nanmean, case_metrics

    rows = case_metrics(model, cases, task, patch_size, device, metrics=("dice",), progress=False)
    per_class = {f"val_dice_{c}": _nanmean([r[f"dice_{c}"] for r in rows]) for c in task.class_names[1:]}
    return {"val_dice": _nanmean(list(per_class.values())), **per_class}


def _lightmunet_config(model: LightMUNet) -> dict:
    described = dict(model.config)
    described["blocks_down"], described["blocks_up"] = list(described["blocks_down"]), list(described["blocks_up"])
    return described


def _append_csv(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def load_config(path, **overrides) -> TrainConfig:
    """A TrainConfig from a JSON file (unknown keys are an error), with ``overrides`` applied."""
    with open(path) as f:
        values = json.load(f)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("patch_size") is not None:
        values["patch_size"] = tuple(values["patch_size"])
    return TrainConfig(**values)


def export_checkpoint(source, target, half: bool = True) -> Path:
    """Write a small checkpoint for prediction and evaluation only: the weights (float16 by
    default), the model and task configuration, the patch size and the train/val/test split, without
    optimiser state. Folders of the training machine (``data_dir``, ``out_dir``) are not kept: the
    data set is found again through ``LIGHTM_EDU_DATA``."""
    from .evaluate import checkpoint_split

    state = load_checkpoint(source)
    weights = {k: (v.half() if half and v.is_floating_point() else v) for k, v in state["model"].items()}
    keep = {k: state[k] for k in ("model_name", "model_config", "task", "patch_size", "epoch", "best_val_dice")
            if k in state}
    config = dict(state["config"])
    config["data_dir"] = None
    config["out_dir"] = str(Path("runs") / Path(config["out_dir"]).name)
    save_checkpoint(target, model=weights, config=config, split=checkpoint_split(state, source), **keep)
    return Path(target)
