"""The package reads as the pipeline: every import points down the chain of layers, never back up.

    base (store, validation, bank, core, criteria) <- data <- model <- tuning <- estimate <- outputs <- cli, pipelines

The test parses every module (function-level imports included) rather than importing it, so a lazy
import that points the wrong way fails too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [  # (layer, module prefixes), bottom first
    (
        "base",
        (
            "energy_btgm",
            "energy_btgm.store",
            "energy_btgm.errors",
            "energy_btgm.validation",
            "energy_btgm.bank",
            "energy_btgm.core",
            "criteria",
        ),
    ),
    ("data", ("energy_btgm.data",)),
    ("model", ("energy_btgm.model",)),
    ("tuning", ("energy_btgm.tuning",)),
    ("estimate", ("energy_btgm.estimate",)),
    ("grid", ("energy_btgm.grid",)),
    ("outputs", ("energy_btgm.outputs",)),
    ("interface", ("energy_btgm.cli", "pipelines")),
]


def layer_of(module: str) -> int | None:
    """Rank of the layer that owns ``module`` (longest matching prefix), None for third-party modules."""
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    return rank


def modules():
    for pkg in ("energy_btgm", "criteria", "pipelines"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of this repository."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, relative ones resolved; ``from pkg import mod``
    counts as importing ``pkg.mod``."""
    out = []
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]) if node.level else node.module
            base = base.strip(".")
            out += [(f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base, node.lineno) for a in node.names]
    return out


def test_the_layer_table_knows_every_module():
    unknown = [m for m, _ in modules() if layer_of(m) is None]
    assert not unknown, f"modules outside every layer: {unknown}; add them to LAYERS and to the README's tree"


def test_imports_point_down_the_chain():
    wrong = []
    for module, path in modules():
        mine = layer_of(module)
        for target, line in imports(module, path):
            theirs = layer_of(target)
            if theirs is not None and theirs > mine:
                wrong.append(
                    f"{path.relative_to(ROOT)}:{line}: {LAYERS[mine][0]} module {module} imports "
                    f"{LAYERS[theirs][0]} module {target}"
                )
    assert not wrong, "imports that point back up the chain:\n" + "\n".join(wrong)


def test_the_library_imports_no_orchestrator():
    bad = [
        f"{path.relative_to(ROOT)}:{line}"
        for module, path in modules()
        if module.startswith("energy_btgm")
        for target, line in imports(module, path)
        if target.split(".")[0] in ("prefect", "prefect_dask", "dask")
    ]
    assert not bad, f"the library must not import Prefect or Dask (pipelines/ wraps it): {bad}"


@pytest.mark.parametrize("package", ["data", "model", "tuning", "estimate", "grid", "outputs", "core"])
def test_every_subpackage_says_what_it_owns_and_may_import(package):
    doc = ast.get_docstring(ast.parse((ROOT / "energy_btgm" / package / "__init__.py").read_text()))
    assert doc and "import" in doc and len(doc.split()) > 30, f"energy_btgm/{package}/__init__.py needs its docstring"


def test_an_upward_import_is_caught(tmp_path):
    """The walker itself can fail: a data module importing the model layer is reported."""
    f = tmp_path / "bad.py"
    f.write_text("def f():\n    from energy_btgm.model.vae import load_model\n")
    ((target, line),) = imports("energy_btgm.data.bad", f)
    assert (target, line) == ("energy_btgm.model.vae", 2) and layer_of(target) > layer_of("energy_btgm.data.bad")
    g = tmp_path / "rel.py"
    g.write_text("from ..tuning import engine\n")
    assert imports("energy_btgm.model.rel", g) == [("energy_btgm.tuning.engine", 1)]


def test_figures_never_touch_pyplot_or_the_backend():
    """Figures are drawn on matplotlib.figure.Figure objects: no pyplot state, no matplotlib.use()."""
    bad = [
        f"{path.relative_to(ROOT)}:{line}"
        for module, path in modules()
        for target, line in imports(module, path)
        if target.startswith("matplotlib.pyplot")
    ]
    bad += [str(path.relative_to(ROOT)) for _, path in modules() if "matplotlib.use(" in path.read_text()]
    assert not bad, f"use energy_btgm.core.figures instead: {bad}"


def test_a_figure_renders_without_changing_the_backend():
    import matplotlib

    from energy_btgm.core.figures import new_figure, png_bytes

    before = matplotlib.get_backend()
    fig, ax = new_figure(2)
    ax[0].plot([0, 1], [1, 0])
    assert png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.get_backend() == before
