"""Saved models, tuned flows and training checkpoints are read as weights, never unpickled as code."""

import shutil

import pytest
import torch

from energy_btgm.model.train import TrainConfig, train
from energy_btgm.model.vae import load_model
from energy_btgm.tuning.run import load_flow


class _Payload:
    """Unpickling this runs code: it creates the file named ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path, marker):
    torch.save({"flow": _Payload(marker), "dim": 2, "transforms": 1, "hidden": 8}, path)


def test_a_flow_file_that_holds_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"
    _plant(tmp_path / "flow.pt", marker)
    with pytest.raises(ValueError, match="not loaded.*energy-btgm tune"):
        load_flow(tmp_path)
    assert not marker.exists()


def test_model_weights_that_hold_code_are_refused_and_not_run(tiny_model, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_model / "models" / "vae-n10", model)
    marker = tmp_path / "ran"
    _plant(model / "weights.pt", marker)
    with pytest.raises(ValueError, match="weights.pt holds objects other than tensors.*energy-btgm train"):
        load_model(model)
    assert not marker.exists()


def test_a_planted_training_checkpoint_is_refused_on_resume(curves_store, tmp_path):
    from tests.conftest import TINY

    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        train(curves_store, TrainConfig(**TINY), out=out, card=False, stop_after_epoch=1)
    marker = tmp_path / "ran"
    _plant(tmp_path / ".m.training" / "checkpoint.pt", marker)
    with pytest.raises(ValueError, match="checkpoint.pt holds objects.*without --resume"):
        train(curves_store, TrainConfig(**TINY), out=out, card=False, resume=True)
    assert not marker.exists()
