import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the corpus generator is a script: --doctest-modules would import (run) it and rewrite the committed files
collect_ignore = ["data/make_corpus.py"]


@pytest.fixture(scope="session", autouse=True)
def flow_roots(tmp_path_factory):
    """Flows may use paths under pytest's temporary folders and the checkout (ENERGY_BTGM_ROOTS), as an
    operator would allow the store and reports folders; subprocesses inherit it."""
    from energy_btgm.store import ROOTS_ENV

    os.environ[ROOTS_ENV] = os.pathsep.join([str(tmp_path_factory.getbasetemp().resolve()), str(ROOT)])


@pytest.fixture(scope="session")
def cli_exe() -> str:
    """The installed console script (the venv's bin/ first, then PATH)."""
    exe = Path(sys.executable).parent / "energy-btgm"
    found = str(exe) if exe.exists() else shutil.which("energy-btgm")
    if not found:
        pytest.fail("console script energy-btgm not installed; run `make test` (it installs the project)")
    return found


@pytest.fixture(scope="session")
def year_data(tmp_path_factory):
    """A year of synthetic data for 200 households (clean), generated once per session."""
    from energy_btgm.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "year"
    generate(SynthConfig(households=200, weeks=52, seed=11), out)
    return out


TINY = dict(group_size=10, latent_dim=4, hidden=16, epochs=4, batch_size=32, kl_warmup_epochs=2, patience=50, prior_steps=50)


def tiny_pipeline(curves_store: Path, out: Path, **overrides) -> dict:
    """scenario-pipeline parameters for a tiny run: the conftest households, a store and reports under ``out``."""
    return (
        dict(
            sources=[str(curves_store / "raw" / "synthetic" / "readings")],
            store=str(out / "store"),
            reports=str(out / "reports"),
            partitions=2,
            group_sizes=[10],
            criteria_names=["weekly-energy"],
            draws=40,
            epochs=TINY["epochs"],
            train_options={k: v for k, v in TINY.items() if k not in ("group_size", "epochs")},
            tune_steps=20,
            n_bank=200,
            compare_seconds=2.0,
            compare_levels=[0.99],
            reference_samples=20_000,
        )
        | overrides
    )


@pytest.fixture(scope="session")
def curves_store(tmp_path_factory):
    """A store with group curves of 10 from 30 synthetic households over 4 weeks (80 training curves)."""
    from energy_btgm.data.curves import CurvesConfig, build
    from energy_btgm.data.ingest import IngestConfig, ingest
    from energy_btgm.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("train")
    s = root / "store"
    generate(SynthConfig(households=30, start="2023-01-02", weeks=4, seed=2), s / "raw" / "synthetic")
    ingest([s / "raw" / "synthetic" / "readings"], s, IngestConfig(), reports=root / "reports", validate=False)
    build(s, CurvesConfig(group_sizes=(10,), draws=40, seed=0), reports=root / "reports", validate=False)
    return s


@pytest.fixture(scope="session")
def tiny_model(curves_store, tmp_path_factory):
    """A tiny trained VAE (4 latent dimensions) in its own store copy."""
    import shutil

    from energy_btgm.model.train import TrainConfig, train

    store = tmp_path_factory.mktemp("tuned") / "store"
    shutil.copytree(curves_store / "curves", store / "curves")
    train(store, TrainConfig(**TINY), card=False)
    return store
