"""The ``lightm-edu`` command: ``info``, ``train``, ``evaluate``, ``predict``.

    lightm-edu info
    lightm-edu train --task cxr_lung --out runs/cxr [--fast] [--epochs N] [--resume] ...
    lightm-edu evaluate --checkpoint runs/cxr/last.pt [--data DIR] [--out metrics.csv]
    lightm-edu predict --checkpoint checkpoints/lightmunet_hippocampus_3d.pt --input DIR --out DIR

Each subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import platform
import sys


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


def cmd_train(args) -> int:
    from lightm_edu.train import TrainConfig, load_config, train

    given = dict(task=args.task, data_dir=args.data, out_dir=args.out, split_file=args.split,
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
    last = summary["history"][-1] if summary["history"] else None
    print(f"checkpoint: {summary['checkpoint']}")
    if last:
        print(f"epoch {last['epoch']}: train loss {last['train_loss']:.4f}")
    return 0


def cmd_evaluate(args) -> int:
    from lightm_edu.evaluate import evaluate

    result = evaluate(args.checkpoint, data_dir=args.data, split=args.split, out_csv=args.out, device=args.device)
    for class_name, values in result["per_class"].items():
        print(f"{class_name}: Dice {values['dice']:.4f}  IoU {values['iou']:.4f}  HD95 {values['hd95']:.2f}")
    print(f"mean Dice {result['mean_dice']:.4f}  mean IoU {result['mean_iou']:.4f}")
    return 0


def cmd_predict(args) -> int:
    from lightm_edu.evaluate import predict_folder

    written = predict_folder(args.checkpoint, args.input, args.out, device=args.device)
    print(f"{len(written)} masks written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightm-edu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="versions, devices and scan backends")
    info.set_defaults(run=cmd_info)

    train = sub.add_parser("train", help="train LightM-UNet (the official recipe by default)")
    train.add_argument("--task", help="cxr_lung (2D) or hippocampus (3D); default cxr_lung")
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
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(run=cmd_evaluate)

    predict = sub.add_parser("predict", help="segment a folder of images or volumes; masks in the input's format")
    predict.add_argument("--checkpoint", required=True)
    predict.add_argument("--input", required=True, help="folder of PNG images or NIfTI volumes "
                                                        "(or one with images/ or imagesTr/)")
    predict.add_argument("--out", required=True, help="folder for the masks (same file names)")
    predict.add_argument("--device", default="auto")
    predict.set_defaults(run=cmd_predict)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
