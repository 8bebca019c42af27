"""The ``lightm-edu`` command: ``info``, ``download``, ``train``, ``evaluate``, ``predict``, ``compare``, ``accuracy``.

    lightm-edu info
    lightm-edu download --list | NAME --root DIR [--size N]
    lightm-edu train --task cxr_lung --out runs/cxr [--model NAME] [--fast] [--epochs N] [--resume] ...
    lightm-edu evaluate --checkpoint runs/cxr/last.pt [--data DIR] [--out metrics.csv]
    lightm-edu predict --checkpoint checkpoints/lightmunet_hippocampus_3d.pt --input DIR --out DIR
    lightm-edu compare --dims 2 [--device cpu|cuda] [--no-measure] [--out results/comparison_2d] [--merge]
    lightm-edu accuracy configs/cxr_lung_2d*.json --out results/accuracy_cxr_lung_2d --plot FILE.png

Each subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path


def cmd_info(args) -> int:
    """Print versions, devices and the selective-scan backends available here."""
    import torch

    import lightm_edu
    from lightm_edu.scan import available_backends, get_scan_backend, resolve_backend

    print(f"lightm_edu {lightm_edu.__version__}, Python {platform.python_version()}, torch {torch.__version__}")
    cuda = torch.cuda.is_available()
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    print(f"CUDA: {'yes: ' + ', '.join(devices) if cuda else 'no'}")
    for device in ("cpu", "cuda") if cuda else ("cpu",):
        chosen = get_scan_backend()
        print(f"scan backends on {device}: {', '.join(available_backends(device))}; "
              f"{chosen!r} resolves to {resolve_backend(chosen, device)!r}")
    try:
        import monai

        print(f"MONAI {monai.__version__}")
    except ImportError:
        print("MONAI: not installed (needed for data, training and evaluation: pip install monai)")
    import os

    print(f"LIGHTM_EDU_DATA: {os.environ.get('LIGHTM_EDU_DATA', '(not set)')}")
    return 0


def cmd_download(args) -> int:
    """Describe the data sets, or fetch, check, unpack and convert one (see lightm_edu.download)."""
    from lightm_edu import download as dl

    if args.list:
        print("\n\n".join(dl.describe(name) for name in dl.DATASETS))
        return 0
    if args.name is None:
        args.parser.error("give a data set NAME (or --list to see them)")
    if not args.root:
        args.parser.error("--root DIR is required: the folder that receives the data set")
    if args.size < 0:
        args.parser.error("--size must be a positive number of pixels, or 0 to keep the source size")
    try:
        folder = dl.prepare(args.name, args.root, image_size=args.size or None, progress=not args.no_progress,
                            timeout=args.timeout, keep_downloads=not args.delete_downloads)
    except (dl.DownloadError, dl.ArchiveError, dl.KaggleCredentialsError, dl.DatasetLayoutError,
            FileExistsError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted; run the same command again to resume the download.", file=sys.stderr)
        return 1
    print(f"{args.name}: ready in {folder} (export LIGHTM_EDU_DATA={Path(args.root).expanduser()})")
    return 0


def add_download_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``lightm-edu download`` (also used by data_download/download.py)."""
    from lightm_edu.download import DATASETS

    parser.add_argument("name", nargs="?", choices=sorted(DATASETS), metavar="NAME",
                        help=f"the data set to prepare: {', '.join(DATASETS)}")
    parser.add_argument("--list", action="store_true", help="describe every data set (sources, checksums, "
                        "accounts, license, citation) and exit")
    parser.add_argument("--root", help="folder that receives <folder>/ and downloads/ (required with NAME)")
    parser.add_argument("--size", type=int, default=256, help="2D data sets: side of the square images and "
                        "masks (default 256; 0 keeps the size of the source)")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    parser.add_argument("--delete-downloads", action="store_true", help="delete the archives once the data "
                        "set folder is complete")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=cmd_download, parser=parser)


def cmd_train(args) -> int:
    from lightm_edu.train import TrainConfig, load_config, train

    given = dict(task=args.task, model=args.model, data_dir=args.data, out_dir=args.out, split_file=args.split,
                 n_val=args.n_val, n_test=args.n_test, epochs=args.epochs, iterations_per_epoch=args.iterations,
                 batch_size=args.batch_size, patch_size=tuple(args.patch_size) if args.patch_size else None,
                 init_filters=args.init_filters, lr=args.lr, bf16=args.bf16 or None, scan_backend=args.backend,
                 seed=args.seed, num_workers=args.workers, device=args.device, fast=args.fast or None,
                 max_minutes=args.max_minutes)
    if args.config:
        config = load_config(args.config, **given)
    else:
        defaults = TrainConfig()
        config = TrainConfig(**{k: (v if v is not None else getattr(defaults, k)) for k, v in given.items()})
    summary = train(config, resume=args.resume)
    if summary["rank"] != 0:  # under torchrun, process 0 reports
        return 0
    last = summary["history"][-1] if summary["history"] else None
    print(f"checkpoint: {summary['checkpoint']}")
    if last:
        print(f"epoch {last['epoch']}: train loss {last['train_loss']:.4f}")
    return 0


def cmd_evaluate(args) -> int:
    from lightm_edu.evaluate import evaluate

    result = evaluate(args.checkpoint, data_dir=args.data, split=args.split, out_csv=args.out, device=args.device,
                      figures_dir=args.figures)
    for class_name, values in result["per_class"].items():
        print(f"{class_name}: Dice {values['dice']:.4f}  IoU {values['iou']:.4f}  HD95 {values['hd95']:.2f}")
    print(f"mean Dice {result['mean_dice']:.4f}  mean IoU {result['mean_iou']:.4f}")
    return 0


def cmd_predict(args) -> int:
    from lightm_edu.evaluate import predict_folder

    written = predict_folder(args.checkpoint, args.input, args.out, device=args.device)
    print(f"{len(written)} masks written to {args.out}")
    return 0


def cmd_compare(args) -> int:
    """Count (and time) LightM-UNet and its peers; print the Markdown table, write CSV + Markdown."""
    import torch

    from lightm_edu.compare import compare, format_markdown, merge_rows, read_table, write_tables

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.size and len(args.size) not in (1, args.dims):
        args.parser.error(f"--size takes 1 or {args.dims} numbers for a {args.dims}D input, got {len(args.size)}")
    if args.batch is not None and args.batch < 1:
        args.parser.error("--batch must be at least 1")
    if args.repeats < 1:
        args.parser.error("--repeats must be at least 1")
    size = None if not args.size else (args.size[0] if len(args.size) == 1 else tuple(args.size))
    try:
        rows = compare(args.dims, models=args.models, device=args.device, measure=not args.no_measure,
                       repeats=args.repeats, batch=args.batch, size=size, scan_backend=args.backend,
                       progress=not args.no_progress, train_step=not args.forward_only)
    except ValueError as err:
        args.parser.error(str(err))
    print(format_markdown(rows))
    if args.out:
        earlier = Path(args.out + ".csv")
        if args.merge and earlier.is_file():
            rows = merge_rows(read_table(earlier), rows)
        for path in write_tables(rows, args.out):
            print(f"written: {path}")
    return 0


def cmd_accuracy(args) -> int:
    """Held-out Dice of trained runs beside their cost: print the Markdown table, write CSV + Markdown (+ plot)."""
    from lightm_edu.accuracy import accuracy_rows, format_accuracy_markdown, plot_accuracy_vs_cost, write_accuracy_tables

    try:
        rows = accuracy_rows(args.configs, results_dir=args.results, trained_on=args.trained_on or "",
                             progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_accuracy_markdown(rows))
    if args.out:
        for path in write_accuracy_tables(rows, args.out):
            print(f"written: {path}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")  # a file, no window
        from lightm_edu._atomic import atomic_output

        figure = plot_accuracy_vs_cost(rows, x=args.x).figure
        with atomic_output(args.plot, suffix=Path(args.plot).suffix) as temporary:
            figure.savefig(temporary, dpi=120, bbox_inches="tight")
        print(f"written: {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from lightm_edu.accuracy import AXES
    from lightm_edu.baselines import PEERS

    parser = argparse.ArgumentParser(prog="lightm-edu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions, devices and scan backends")
    info.set_defaults(run=cmd_info)

    download = sub.add_parser(
        "download", help="fetch and prepare the paper's data sets (checksummed, resumable)",
        description="Fetch, check, unpack and convert one of the paper's data sets into the layout "
                    "lightm_edu reads: DIR/<folder>/ (with README.md and MANIFEST.sha256), archives in "
                    "DIR/downloads/. An interrupted download resumes when run again. Exit status: 0 done, "
                    "1 failed (the message says why and what to do), 2 wrong arguments.")
    add_download_arguments(download)

    train = sub.add_parser("train", help="train LightM-UNet or a peer (the official recipe by default)")
    train.add_argument("--task", help="cxr_lung (2D) or hippocampus (3D); default cxr_lung")
    train.add_argument("--model", choices=list(PEERS), help="the network: lightmunet (default) or a peer of "
                       "lightm_edu.baselines.PEERS, trained with the same recipe")
    train.add_argument("--data", help="data set folder (default: $LIGHTM_EDU_DATA/<task folder>)")
    train.add_argument("--out", help="output folder (checkpoint, log, split)")
    train.add_argument("--split", help="split JSON file (default: <out>/split.json, made on first use)")
    train.add_argument("--n-val", type=int)
    train.add_argument("--n-test", type=int)
    train.add_argument("--epochs", type=int)
    train.add_argument("--iterations", type=int, help="iterations per epoch")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--patch-size", type=int, nargs="+")
    train.add_argument("--init-filters", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--bf16", action="store_true", help="bf16 autocast")
    train.add_argument("--backend", help="selective-scan backend (default: auto)")
    train.add_argument("--seed", type=int)
    train.add_argument("--workers", type=int)
    train.add_argument("--device")
    train.add_argument("--fast", action="store_true", help="a few iterations on a few cases (smoke test)")
    train.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    train.add_argument("--config", help="JSON file of training settings (e.g. configs/cxr_lung_2d.json); "
                                        "options given here override it")
    train.add_argument("--max-minutes", type=float, help="stop after the epoch that passes this time")
    train.set_defaults(run=cmd_train)

    evaluate = sub.add_parser("evaluate", help="per-case and per-class Dice, IoU and HD95 of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--data", help="a folder in either layout (default: the checkpoint's split)")
    evaluate.add_argument("--split", default="test", help="which part of the checkpoint's split")
    evaluate.add_argument("--out", help="write per-case metrics to this CSV")
    evaluate.add_argument("--figures", help="write an overlay figure per case (ground truth vs prediction) "
                                            "into this folder")
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(run=cmd_evaluate)

    predict = sub.add_parser("predict", help="segment a folder of images or volumes; masks in the input's format")
    predict.add_argument("--checkpoint", required=True)
    predict.add_argument("--input", required=True, help="folder of PNG images or NIfTI volumes "
                                                        "(or one with images/ or imagesTr/)")
    predict.add_argument("--out", required=True, help="folder for the masks (same file names)")
    predict.add_argument("--device", default="auto")
    predict.set_defaults(run=cmd_predict)

    compare = sub.add_parser(
        "compare", help="parameters, MACs, FLOPs, latency and peak memory of LightM-UNet and its peers",
        description="Build LightM-UNet and its peers (lightm_edu.baselines) at the paper's settings (2D: 3 x 512 "
                    "x 512, 2 classes; 3D: 1 x 128^3, 3 classes), count parameters, MACs and FLOPs of one "
                    "forward pass (lightm_edu.flops), and time a forward pass (batch 1) and a training step "
                    "(--batch). Prints a Markdown table; --out also writes it as CSV and Markdown. A step "
                    "that runs out of memory is recorded as OOM.")
    compare.add_argument("--dims", type=int, choices=(2, 3), required=True, help="2 (chest X-rays, 512 x 512) "
                         "or 3 (CT, 128^3)")
    compare.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                         help="where to count and time (default: a GPU if there is one)")
    compare.add_argument("--no-measure", action="store_true", help="parameters, MACs and FLOPs only (no timing)")
    compare.add_argument("--forward-only", action="store_true", help="time the forward pass only, no training "
                         "step (e.g. 3D on a CPU, where a training step at 128^3 needs more memory than a "
                         "laptop has)")
    compare.add_argument("--out", metavar="STEM", help="write STEM.csv and STEM.md, e.g. results/comparison_2d")
    compare.add_argument("--merge", action="store_true", help="with --out: keep the measured rows of other "
                         "devices already in STEM.csv (e.g. a GPU run, then a CPU run); rows of this device "
                         "and counts-only rows are replaced")
    compare.add_argument("--models", nargs="+", metavar="NAME",
                         help="which models (default: all): lightmunet, segresnet, dynunet, unet, unetr, "
                              "swinunetr, umamba_bot, umamba_enc (lightm_edu.baselines.PEERS)")
    compare.add_argument("--size", type=int, nargs="+", help="spatial size, one number or one per axis "
                         "(default: the paper's)")
    compare.add_argument("--batch", type=int, help="batch of the training step (default: 12 in 2D and 2 in 3D "
                         "on a GPU, 2 on a CPU)")
    compare.add_argument("--repeats", type=int, default=5, help="timed runs per measurement; the median is "
                         "reported (default 5)")
    compare.add_argument("--backend", help="selective-scan backend of the Mamba models (default: auto)")
    compare.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    compare.add_argument("--no-progress", action="store_true", help="no progress bar")
    compare.set_defaults(run=cmd_compare, parser=compare)

    accuracy = sub.add_parser(
        "accuracy", help="held-out Dice of trained runs beside their parameters and FLOPs",
        description="One row per training run: the held-out metrics and training log the run left in "
                    "RESULTS/<config stem>_test_metrics.csv and _log.csv, and the parameters, MACs and FLOPs "
                    "of the network its configuration builds (counted on the CPU).")
    accuracy.add_argument("configs", nargs="+", metavar="CONFIG", help="training configuration files, e.g. "
                          "configs/cxr_lung_2d.json configs/cxr_lung_2d_dynunet.json")
    accuracy.add_argument("--results", default="results", help="folder of the runs' result files (default: results)")
    accuracy.add_argument("--trained-on", metavar="DEVICE", help="the device the runs were trained on (for the "
                          "seconds per epoch), e.g. 'NVIDIA H100 80GB HBM3'")
    accuracy.add_argument("--out", metavar="STEM", help="write STEM.csv and STEM.md, e.g. results/accuracy_cxr_lung_2d")
    accuracy.add_argument("--plot", metavar="FILE", help="draw Dice against cost (bubble area = parameters) to FILE")
    accuracy.add_argument("--x", default="gflops", choices=list(AXES), help="the cost on the plot's x axis")
    accuracy.add_argument("--no-progress", action="store_true", help="no progress bar")
    accuracy.set_defaults(run=cmd_accuracy)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
