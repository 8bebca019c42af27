"""Training the peers of lightm_edu.baselines with LightM-UNet's recipe, and reloading them."""

from __future__ import annotations

import pytest
import torch

from lightm_edu import cli
from lightm_edu.baselines import build_peer, count_parameters
from lightm_edu.data import TASKS, find_cases, load_split, sample_dir
from lightm_edu.evaluate import evaluate, model_from_checkpoint
from lightm_edu.train import TrainConfig, build_model, export_checkpoint, load_checkpoint, train

# Small versions of the peers for 16^3 patches of the shipped 3D sample (1 channel, 3 classes).
SMALL = {
    "segresnet": dict(init_filters=8),
    "dynunet": dict(model_options=dict(kernel_size=[3, 3, 3], strides=[1, 2, 2], filters=[8, 16, 32])),
    "umamba_bot": dict(model_options=dict(features_per_stage=[8, 16, 32], strides=[1, 2, 2], kernel_sizes=[3, 3, 3],
                                          n_blocks_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1]),
                       scan_backend="sequential"),
}


def peer_config(out_dir, peer, **changes):
    options = dict(task="hippocampus", model=peer, data_dir=str(sample_dir()), out_dir=str(out_dir), n_test=1,
                   n_val=1, epochs=1, batch_size=2, patch_size=(16, 16, 16), num_workers=0, device="cpu", fast=True)
    options.update(SMALL[peer])
    options.update(changes)
    return TrainConfig(**options)


@pytest.mark.parametrize("model", list(SMALL))
def test_a_peer_trains_and_its_checkpoint_rebuilds_it(model, tmp_path):
    config = peer_config(tmp_path, model)
    summary = train(config, progress=False)
    state = load_checkpoint(summary["best"])
    assert state["model_name"] == model and state["config"]["model"] == model
    # The checkpoint holds exactly the peer's parameters, as lightm_edu.baselines builds it.
    options = dict(config.model_options, **({"init_filters": 8} if model == "segresnet" else {}))
    reference = build_peer(model, 3, 1, 3, image_size=(16, 16, 16), **options)
    assert state["model"].keys() == reference.state_dict().keys()
    assert sum(v.numel() for k, v in state["model"].items() if k in dict(reference.named_parameters())) == \
        count_parameters(reference)
    # The model rebuilt from the checkpoint reproduces the validation Dice of the log.
    rebuilt, _ = model_from_checkpoint(summary["best"])
    assert type(rebuilt) is type(reference)
    val_ids = set(load_split(tmp_path / "split.json")["val"])
    cases = [c for c in find_cases(sample_dir()) if c["case_id"] in val_ids]
    result = evaluate(summary["best"], cases=cases, device="cpu", progress=False)
    assert result["mean_dice"] == pytest.approx(summary["history"][-1]["val_dice"], abs=1e-6)
    # An exported checkpoint (float16 weights) keeps the model's name.
    exported = load_checkpoint(export_checkpoint(summary["best"], tmp_path / "small.pt"))
    assert exported["model_name"] == model and exported["model_config"] == state["model_config"]


def test_the_recipe_is_the_same_for_every_model(tmp_path, monkeypatch):
    """Same seed, split, batches and augmentation for LightM-UNet and a peer: only the network differs."""
    import lightm_edu.train as training

    seen = {}
    real_step = training.training_step

    def recording_step(model, optimiser, loss_fn, image, label, *args):
        seen.setdefault(type(training._unwrap(model)).__name__, []).append((image.clone(), label.clone()))
        return real_step(model, optimiser, loss_fn, image, label, *args)

    monkeypatch.setattr(training, "training_step", recording_step)
    # The same settings (init_filters 8 is a width of both), LightM-UNet instead of SegResNet.
    lightm = train(peer_config(tmp_path / "lightm", "segresnet", epochs=2, model="lightmunet"), progress=False)
    peer = train(peer_config(tmp_path / "peer", "segresnet", epochs=2), progress=False)
    assert (tmp_path / "lightm" / "split.json").read_text() == (tmp_path / "peer" / "split.json").read_text()
    assert [r["lr"] for r in lightm["history"]] == [r["lr"] for r in peer["history"]]
    assert len(seen["LightMUNet"]) == len(seen["SegResNet"]) == 4  # 2 epochs x 2 iterations (fast)
    for (image_a, label_a), (image_b, label_b) in zip(seen["LightMUNet"], seen["SegResNet"]):
        assert torch.equal(image_a, image_b) and torch.equal(label_a, label_b)


def test_build_model_matches_the_task():
    task = TASKS["cxr_lung"]
    model = build_model(task, model="dynunet", patch_size=(256, 256))
    assert count_parameters(model) == count_parameters(build_peer("dynunet", 2, 1, 2, image_size=(256, 256)))
    with torch.no_grad():
        assert build_model(task, model="unet")(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("changes, message", [
    (dict(model="nnunet"), "Unknown model 'nnunet'; choose lightmunet or a peer: lightmunet, segresnet, dynunet"),
    (dict(model="dynunet", init_filters=8), "dynunet has none. Give its widths in model_options"),
    (dict(model="dynunet", model_options={"widths": [8, 16]}), "dynunet has no setting 'widths'"),
    (dict(model="umamba_bot", model_options={"scan_backend": "parallel"}), "not in model_options"),
])
def test_bad_model_settings_fail_before_anything_is_written(changes, message, tmp_path):
    config = TrainConfig(task="hippocampus", data_dir=str(sample_dir()), out_dir=str(tmp_path / "run"), device="cpu",
                         **changes)
    with pytest.raises(ValueError, match=message):
        train(config, progress=False)
    assert not list((tmp_path / "run").glob("*"))


def test_cli_trains_a_peer(tmp_path, capsys):
    assert cli.main(["train", "--task", "hippocampus", "--model", "segresnet", "--data", str(sample_dir()),
                     "--out", str(tmp_path), "--n-val", "1", "--n-test", "1", "--epochs", "1", "--batch-size", "2",
                     "--patch-size", "16", "16", "16", "--init-filters", "8", "--workers", "0", "--device", "cpu",
                     "--fast"]) == 0
    assert load_checkpoint(tmp_path / "last.pt")["model_name"] == "segresnet"
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "nnunet"])
    assert "invalid choice: 'nnunet'" in capsys.readouterr().err
