import json
import subprocess
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def run(cli_exe, *args):
    return subprocess.run([cli_exe, *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("cmd", ["synth", "ingest", "curves"])
def test_every_subcommand_has_help(cli_exe, cmd):
    r = run(cli_exe, cmd, "--help")
    assert r.returncode == 0 and "--store" in r.stdout and "--reports" in r.stdout


def test_top_level_help_lists_subcommands(cli_exe):
    r = run(cli_exe, "--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("synth", "ingest", "curves"))


@pytest.mark.parametrize("args, needle", [
    (["ingest", "--tz", "Nowhere/Land", str(DATA / "formats/long.csv")], "--tz"),
    (["ingest", "--resolution", "7min", str(DATA / "formats/long.csv")], "--resolution"),
    (["ingest", str(DATA / "bad/empty.csv")], "empty.csv"),
    (["ingest", "/no/such/file.csv"], "no such file"),
    (["curves", "--draws", "0"], "--draws"),
    (["curves"], "energy-btgm ingest"),
])
def test_bad_arguments_exit_2_with_one_line(cli_exe, tmp_path, args, needle):
    r = run(cli_exe, *args, "--store", tmp_path / "s", "--reports", tmp_path / "r")
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_store_from_environment(cli_exe, tmp_path):
    import os

    env = {**os.environ, "ENERGY_BTGM_STORE": str(tmp_path / "envstore")}
    r = subprocess.run([cli_exe, "ingest", "--quiet", "--reports", str(tmp_path / "r"), str(DATA / "formats/long.csv")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "192 rows in = 192 kept + 0 quarantined" in r.stdout
    m = json.loads((tmp_path / "envstore" / "readings" / "_manifest.json").read_text())
    assert m["counts"]["rows_in"] == 192
