"""Training, checkpoints, exact resume, evaluation and the CLI, end to end on the shipped sample."""

from __future__ import annotations

import pytest
import torch

from lightm_edu import cli
from lightm_edu.data import find_cases, sample_dir
from lightm_edu.evaluate import evaluate, model_from_checkpoint
from lightm_edu.train import TrainConfig, load_checkpoint, poly_lr_factor, save_checkpoint, train


def fast_config(out_dir, **changes):
    options = dict(task="hippocampus", data_dir=str(sample_dir()), out_dir=str(out_dir), n_test=1, n_val=1,
                   epochs=3, batch_size=2, patch_size=(16, 16, 16), init_filters=8, num_workers=0,
                   device="cpu", fast=True)
    options.update(changes)
    return TrainConfig(**options)


def test_poly_schedule_is_the_official_one():
    assert poly_lr_factor(0, 100) == 1.0
    assert poly_lr_factor(50, 100) == pytest.approx(0.5 ** 0.9)


def test_fast_training_writes_checkpoint_log_and_split(tmp_path):
    summary = train(fast_config(tmp_path), progress=False)
    assert [row["epoch"] for row in summary["history"]] == [1, 2, 3]
    lrs = [row["lr"] for row in summary["history"]]
    assert lrs == pytest.approx([1e-4 * poly_lr_factor(e, 3) for e in range(3)])
    state = load_checkpoint(tmp_path / "last.pt")  # weights_only=True
    assert state["epoch"] == 3 and state["task"] == "hippocampus"
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert len(log) == 4
    assert log[0] == "epoch,train_loss,lr,seconds,val_dice,val_dice_anterior,val_dice_posterior"
    assert all(0.0 <= row["val_dice"] <= 1.0 for row in summary["history"])
    assert (tmp_path / "split.json").is_file()
    assert not list(tmp_path.glob("*.tmp"))


def test_validation_dice_is_the_evaluation_dice_of_the_best_checkpoint(tmp_path):
    from lightm_edu.data import find_cases, load_split

    summary = train(fast_config(tmp_path, epochs=2, n_val=2, n_test=1), progress=False)
    best = load_checkpoint(summary["best"])
    logged = summary["history"][best["epoch"] - 1]
    assert best["best_val_dice"] == logged["val_dice"] == max(r["val_dice"] for r in summary["history"])
    val_ids = set(load_split(tmp_path / "split.json")["val"])
    val_cases = [c for c in find_cases(sample_dir()) if c["case_id"] in val_ids]
    result = evaluate(summary["best"], cases=val_cases, device="cpu", progress=False)
    assert result["per_class"]["anterior"]["dice"] == pytest.approx(logged["val_dice_anterior"], abs=1e-6)
    assert result["mean_dice"] == pytest.approx(logged["val_dice"], abs=1e-6)


def test_validation_can_be_switched_off(tmp_path):
    summary = train(fast_config(tmp_path, epochs=1, val_every=0), progress=False)
    assert "val_dice" not in summary["history"][0] and summary["best"] is None
    assert (tmp_path / "log.csv").read_text().splitlines()[0] == "epoch,train_loss,lr,seconds"


def test_resume_continues_exactly(tmp_path):
    train(fast_config(tmp_path / "straight"), progress=False)
    interrupted = fast_config(tmp_path / "resumed")
    train(interrupted, progress=False, stop_after=1)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    train(interrupted, progress=False, resume=True)
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_evaluate_and_cli_report_per_class_metrics(tmp_path, capsys):
    train(fast_config(tmp_path, epochs=1), progress=False)
    result = evaluate(tmp_path / "last.pt", out_csv=tmp_path / "metrics.csv", device="cpu", progress=False)
    assert set(result["per_class"]) == {"anterior", "posterior"}
    assert len(result["rows"]) == 1  # the one test case of the split
    assert 0.0 <= result["mean_dice"] <= 1.0
    assert "dice_anterior" in (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "last.pt"), "--data", str(sample_dir()),
                     "--device", "cpu", "--figures", str(tmp_path / "figures")]) == 0
    from PIL import Image

    figures = sorted((tmp_path / "figures").iterdir())
    assert [f.name for f in figures] == [f"{c['case_id']}.png" for c in find_cases(sample_dir())]
    assert Image.open(figures[0]).size[0] > 200
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("mean Dice ") and "mean IoU " in last
    model, state = model_from_checkpoint(tmp_path / "last.pt")
    assert not model.training and state["model_config"]["init_filters"] == 8


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint at .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt is not a readable lightm_edu checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint(tmp_path / "other.pt", weights=torch.zeros(2))
    with pytest.raises(ValueError, match="has no 'model' entry"):
        model_from_checkpoint(tmp_path / "other.pt")


def test_cli_info_and_help(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "scan backends on cpu: sequential, parallel" in out
    expected = {"train": "--model", "evaluate": "--checkpoint", "predict": "--input", "download": "--root",
                "info": "usage: lightm-edu info", "accuracy": "--trained-on"}
    for command, option in expected.items():
        with pytest.raises(SystemExit) as info:
            cli.main([command, "--help"])
        assert info.value.code == 0 and option in capsys.readouterr().out, command


def test_committed_3d_checkpoint_segments_a_validation_case():
    """The shipped model, on a shipped case it never trained on (in its validation split)."""
    from pathlib import Path

    from lightm_edu.data import find_cases, load_split

    root = Path(__file__).resolve().parents[1]
    split = load_split(root / "configs" / "hippocampus_3d_split.json")
    cases = [c for c in find_cases(sample_dir()) if c["case_id"] in split["val"]][:1]
    assert cases, "the sample should hold a validation case"
    result = evaluate(root / "checkpoints" / "lightmunet_hippocampus_3d.pt", cases=cases, device="cpu",
                      progress=False)
    assert result["mean_dice"] > 0.8, result["per_class"]


def test_config_files_load_and_reject_unknown_settings(tmp_path):
    from pathlib import Path

    from lightm_edu.train import load_config

    root = Path(__file__).resolve().parents[1]
    for name in ("cxr_lung_2d", "hippocampus_3d"):
        config = load_config(root / "configs" / f"{name}.json", epochs=1)
        assert config.epochs == 1 and config.split_file == f"configs/{name}_split.json"
    (tmp_path / "bad.json").write_text('{"task": "cxr_lung", "learning_rate": 0.1}')
    with pytest.raises(ValueError, match="unknown setting\\(s\\) learning_rate"):
        load_config(tmp_path / "bad.json")


def test_predict_writes_masks_in_the_input_format(tmp_path):
    """The committed 3D model predicts NIfTI labels with the input's shape and affine."""
    import shutil
    from pathlib import Path

    import nibabel as nib
    import numpy as np

    root = Path(__file__).resolve().parents[1]
    source = sample_dir() / "imagesTr" / "hippocampus_004.nii.gz"  # a validation case of the model
    (tmp_path / "in").mkdir()
    shutil.copy(source, tmp_path / "in")
    assert cli.main(["predict", "--checkpoint", str(root / "checkpoints" / "lightmunet_hippocampus_3d.pt"),
                     "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    predicted = nib.load(str(tmp_path / "out" / source.name))
    truth = nib.load(str(sample_dir() / "labelsTr" / source.name))
    assert predicted.shape == truth.shape and np.allclose(predicted.affine, truth.affine)
    p, g = np.asarray(predicted.dataobj), np.asarray(truth.dataobj)
    assert set(np.unique(p)) <= {0, 1, 2}
    dice = [2 * ((p == c) & (g == c)).sum() / ((p == c).sum() + (g == c).sum()) for c in (1, 2)]
    assert min(dice) > 0.75, dice
    assert not [f for f in (tmp_path / "out").iterdir() if f.name.startswith(".")]  # no temporary left


def test_predict_says_what_is_missing(tmp_path):
    from pathlib import Path

    from lightm_edu.evaluate import predict_folder

    root = Path(__file__).resolve().parents[1]
    with pytest.raises(FileNotFoundError, match="No .nii.gz or .nii images in"):
        predict_folder(root / "checkpoints" / "lightmunet_hippocampus_3d.pt", tmp_path, tmp_path / "out",
                       device="cpu", progress=False)


def test_exported_checkpoint_keeps_the_split_and_no_training_folders(tmp_path, monkeypatch):
    from lightm_edu.train import export_checkpoint

    summary = train(fast_config(tmp_path / "run", epochs=1), progress=False)
    exported = export_checkpoint(summary["checkpoint"], tmp_path / "small.pt")
    state = load_checkpoint(exported)
    assert state["config"]["data_dir"] is None and state["config"]["out_dir"] == "runs/run"
    assert all(v.dtype == torch.float16 for v in state["model"].values() if v.is_floating_point())
    assert "optimiser" not in state
    original = load_checkpoint(summary["checkpoint"])["split"]
    assert state["split"] == original and len(original["test"]) == 1
    # Evaluation finds the data through LIGHTM_EDU_DATA and its test case from the stored split
    # alone (the split file is gone).
    (tmp_path / "run" / "split.json").unlink()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "msd-task04-hippocampus").symlink_to(sample_dir(), target_is_directory=True)
    monkeypatch.setenv("LIGHTM_EDU_DATA", str(tmp_path / "data"))
    result = evaluate(exported, device="cpu", progress=False)
    assert [row["case_id"] for row in result["rows"]] == original["test"]
    # A data set without that case: the error names the case and the fix.
    partial = tmp_path / "data" / "msd-task04-hippocampus"
    partial.unlink()
    for sub in ("imagesTr", "labelsTr"):
        (partial / sub).mkdir(parents=True)
        for file in (sample_dir() / sub).iterdir():
            if not file.name.startswith(original["test"][0]):
                (partial / sub / file.name).symlink_to(file)
    with pytest.raises(ValueError, match=f"1 of the 1 'test' cases .* not in .*{original['test'][0]}.*LIGHTM_EDU_DATA"):
        evaluate(exported, device="cpu", progress=False)


@pytest.mark.parametrize("name", ["lightmunet_cxr_lung_2d.pt", "lightmunet_hippocampus_3d.pt"])
def test_committed_checkpoints_hold_their_split_and_no_machine_folders(name):
    from pathlib import Path

    state = load_checkpoint(Path(__file__).parent.parent / "checkpoints" / name)
    assert state["config"]["data_dir"] is None and state["config"]["out_dir"].startswith("runs/")
    counts = {part: len(ids) for part, ids in state["split"].items()}
    assert counts == ({"train": 795, "val": 50, "test": 200} if "cxr" in name else {"train": 140, "val": 20, "test": 40})
    assert not set(state["split"]["test"]) & set(state["split"]["train"])
