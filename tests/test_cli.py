import argparse
import dataclasses
import importlib
import inspect
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


@pytest.mark.parametrize(
    "args, needle, code",
    [
        (["ingest", "--tz", "Nowhere/Land", str(DATA / "formats/long.csv")], "--tz", 2),
        (["ingest", "--resolution", "7min", str(DATA / "formats/long.csv")], "--resolution", 2),
        (["ingest", "/no/such/file.csv"], "no such file", 2),
        (["curves", "--draws", "0"], "--draws", 2),
        (["train", "--patience", "0"], "--patience", 2),
        (["train", "--kl-warmup-epochs", "-1"], "--kl-warmup-epochs", 2),
        (["train", "--stat-sd-max", "-0.1"], "--stat-sd-max", 2),
        (["train", "--prior-smoothing", "-1"], "--prior-smoothing", 2),
        (["tune", "no-such-criterion"], "unknown criterion", 2),
        (["ingest", str(DATA / "bad/empty.csv")], "empty.csv", 1),  # the data is not what the step needs
        (["curves"], "energy-btgm ingest", 1),  # nor is the store
        (["sample"], "energy-btgm train --group-size 10", 1),
    ],
)
def test_errors_exit_2_for_arguments_1_for_data_with_one_line(cli_exe, tmp_path, args, needle, code):
    r = run(cli_exe, *args, "--store", tmp_path / "s", "--reports", tmp_path / "r")
    assert r.returncode == code, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_an_unexpected_error_is_one_line_and_its_traceback_comes_with_debug(monkeypatch, capsys):
    from energy_btgm import cli

    def broken(args):
        raise TypeError("something the library did not anticipate")

    monkeypatch.setattr(cli, "build_parser", _parser_with(cli.build_parser, "report", broken))
    assert cli.main(["report"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unexpected error (TypeError: something" in err and "--debug" in err
    with pytest.raises(TypeError, match="did not anticipate"):
        cli.main(["report", "--debug"])


def _parser_with(build, command, func):
    def build_patched():
        parser = build()
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        sub.choices[command].set_defaults(func=func)
        return parser

    return build_patched


def test_store_from_environment(cli_exe, tmp_path):
    import os

    env = {**os.environ, "ENERGY_BTGM_STORE": str(tmp_path / "envstore")}
    r = subprocess.run(
        [cli_exe, "ingest", "--quiet", "--reports", str(tmp_path / "r"), str(DATA / "formats/long.csv")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "192 rows in = 192 kept + 0 quarantined" in r.stdout
    m = json.loads((tmp_path / "envstore" / "readings" / "_manifest.json").read_text())
    assert m["counts"]["rows_in"] == 192


def _subparsers():
    from energy_btgm.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


@pytest.mark.parametrize("command", ["synth", "ingest", "curves", "train"])
def test_config_options_take_their_defaults_from_the_dataclass(command):
    """Every option of a config-backed subcommand is a field of its dataclass, with the field's default."""
    from energy_btgm.cli import CONFIGS

    cls = CONFIGS[command]
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    options = {a.dest: a.default for a in _subparsers()[command]._actions if a.dest in fields}
    assert options, f"{command} has no option from {cls.__name__}"
    for dest, default in options.items():
        want = list(fields[dest]) if isinstance(fields[dest], tuple) else fields[dest]
        assert default == want, f"{command} --{dest.replace('_', '-')}: default {default!r}, {cls.__name__}.{dest} = {want!r}"


@pytest.mark.parametrize(
    "command, function, params",
    [
        ("sample", "energy_btgm.model.sample:write_samples", {"seed": "seed"}),
        ("tune", "energy_btgm.tuning.run:tune_criterion", {"seed": "seed", "n": "n_bank"}),
        ("assess", "energy_btgm.tuning.assess:assess", {"seed": "seed", "n": "n"}),
        ("export", "energy_btgm.outputs.export:export", {"format": "fmt", "week_start": "week_start"}),
        ("compare", "energy_btgm.estimate.comparison:compare", {"seed": "seed", "reference_samples": "n_reference"}),
        ("report", "energy_btgm.outputs.report:build", {"run": "run"}),
    ],
)
def test_other_options_match_the_library_defaults(command, function, params):
    """Subcommands without a config dataclass: each option's default is the library function's."""
    mod, _, name = function.partition(":")
    sig = inspect.signature(getattr(importlib.import_module(mod), name)).parameters
    defaults = {a.dest: a.default for a in _subparsers()[command]._actions}
    for dest, param in params.items():
        assert defaults[dest] == sig[param].default, (
            f"{command} --{dest}: {defaults[dest]!r} vs {function}({param}={sig[param].default!r})"
        )


def test_flow_parameters_take_their_defaults_from_the_dataclasses():
    """The Prefect flows' parameters that are config fields default to the same values as the CLI."""
    pytest.importorskip("prefect")
    from energy_btgm.data.config import CurvesConfig, IngestConfig
    from energy_btgm.model.config import TrainConfig
    from pipelines import flows

    for flow_obj in (flows.ingest_meters, flows.build_curves, flows.train_vae, flows.tune_all, flows.scenario_pipeline):
        params = inspect.signature(flow_obj.fn).parameters
        for cls in (IngestConfig, CurvesConfig, TrainConfig):
            for f in dataclasses.fields(cls):
                if f.name in params:
                    want = list(f.default) if isinstance(f.default, tuple) else f.default
                    assert params[f.name].default == want, f"{flow_obj.name}({f.name}=...) vs {cls.__name__}.{f.name}"
