import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    from energy_btgm.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth") / "year"
    generate(SynthConfig(households=200, weeks=52, seed=11), out)
    return out
