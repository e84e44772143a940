"""The local store: its layout, atomic writes and provenance of every artefact.

Layout under the store root (``--store`` / ``ENERGY_BTGM_STORE``, default ``data/``)::

    raw/         generated or dropped-in meter files (raw/synthetic/ by default)
    readings/    canonical validated readings
    quarantine/  rejected rows with their reason
    curves/      household and group weekly curves
    models/      trained VAEs
    tuned/       tuned flows with their summaries and figures
    reference/   cached reference samples of p (``compare``)
    banks/       scenario banks

Reports go to ``reports/`` (``--reports``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

STORE_ENV = "ENERGY_BTGM_STORE"
DEFAULT_STORE = Path("data")


def store_root(store: str | os.PathLike | None = None) -> Path:
    """The store root: the argument, else $ENERGY_BTGM_STORE, else ``data/``."""
    return Path(store or os.environ.get(STORE_ENV) or DEFAULT_STORE)


@contextlib.contextmanager
def atomic_dir(dest: Path, overwrite: bool = False):
    """Yield a temporary sibling folder that replaces ``dest`` only when the block succeeds.

    A killed or failing run leaves ``dest`` as it was (and at most a ``.tmp-*`` folder beside it).
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists; pass --overwrite to replace it or choose another --out")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: Path, dest: Path) -> None:
    """Move the finished folder ``src`` to ``dest`` by renames, replacing what was there (same file system)."""
    src, dest = Path(src), Path(dest)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        dest.rename(old)
        src.rename(dest)
        shutil.rmtree(old)
    else:
        src.rename(dest)


def atomic_write_bytes(dest: Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` through a temporary file and a rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest


def atomic_write_npz(dest: Path, **arrays) -> Path:
    """Write arrays as an uncompressed ``.npz`` to ``dest``, atomically (``atomic_write_bytes``)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(dest, buf.getvalue())


def atomic_write_text(dest: Path, text: str) -> Path:
    return atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_parquet(dest: Path, table) -> Path:
    """Write a pyarrow Table to ``dest`` as zstd Parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return atomic_write_bytes(dest, sink.getvalue().to_pybytes())


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def code_version() -> str:
    """Package version plus the git commit when run from a checkout (``0.1.0+g1a2b3c4``)."""
    from energy_btgm import __version__

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__
