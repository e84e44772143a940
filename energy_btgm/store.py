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
import errno
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from energy_btgm import faults
from energy_btgm.errors import ParameterError, StoreBusy, WriteError

STORE_ENV = "ENERGY_BTGM_STORE"
DEFAULT_STORE = Path("data")


def store_root(store: str | os.PathLike | None = None) -> Path:
    """The store root: the argument, else $ENERGY_BTGM_STORE, else ``data/``."""
    return Path(store or os.environ.get(STORE_ENV) or DEFAULT_STORE)


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
FORBIDDEN = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_error(e: OSError, dest: Path) -> OSError:
    """A disk-full or permission error while writing ``dest``, said with the path and the fix (others unchanged)."""
    if isinstance(e, WriteError) or e.errno not in FULL + FORBIDDEN:
        return e
    if e.errno in FULL:
        why = f"the disk holding {dest} is full ({os.strerror(e.errno)}); free space there"
    else:
        why = f"cannot write {dest}: {os.strerror(e.errno)} (a read-only or forbidden location); make it writable"
    return WriteError(e.errno, f"{why}, or point --store / --reports elsewhere; the previous {Path(dest).name} is untouched")


@contextlib.contextmanager
def _writing(dest: Path):
    """Turn disk-full and permission errors raised in the block into a ``WriteError`` naming ``dest``."""
    try:
        yield
    except OSError as e:
        raise write_error(e, dest) from e


@contextlib.contextmanager
def atomic_dir(dest: Path, overwrite: bool = False):
    """Yield a temporary sibling folder that replaces ``dest`` only when the block succeeds.

    A killed or failing run leaves ``dest`` as it was (and at most a ``.tmp-*`` folder beside it);
    a full disk or a read-only location is a ``WriteError`` naming ``dest``.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists; pass --overwrite to replace it or choose another --out")
    with _writing(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        with _writing(dest):
            yield tmp
            faults.point(f"replace {dest.name}")
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
        faults.point(f"between the renames of {dest.name}")  # dest is absent here: a reader finds nothing, never half
        src.rename(dest)
        shutil.rmtree(old)
    else:
        src.rename(dest)


def atomic_write_bytes(dest: Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` through a temporary file and a rename."""
    dest = Path(dest)
    with _writing(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    try:
        with _writing(dest):
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            faults.point(f"write {dest.name}")
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


def nonfinite(obj, path: str = "") -> list[str]:
    """Where in a JSON-like document a float is NaN or infinite (``"levels.0.99.btgm.exceedance"``), in order."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [path or "."]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in nonfinite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in nonfinite(v, f"{path}[{i}]")]
    return []


def to_json(obj, what: str, **kw) -> str:
    """``json.dumps`` that refuses NaN and inf, naming where they sit in ``what`` (a bank, card or report's
    numbers are never NaN: a step that would write one stops here instead)."""
    bad = nonfinite(obj)
    if bad:
        raise ValueError(
            f"{what}: not a finite number at {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; "
            "nothing was written. The step that computed it diverged; rerun with --debug and report it"
        )
    return json.dumps(obj, allow_nan=False, **kw)


def atomic_write_json(dest: Path, obj, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON to ``dest`` atomically, refusing NaN and inf (``to_json``)."""
    return atomic_write_text(dest, to_json(obj, str(dest), indent=indent))


def atomic_write_text(dest: Path, text: str) -> Path:
    return atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_parquet(dest: Path, table) -> Path:
    """Write a pyarrow Table to ``dest`` as zstd Parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return atomic_write_bytes(dest, sink.getvalue().to_pybytes())


ROOTS_ENV = "ENERGY_BTGM_ROOTS"


def allowed_roots() -> list[Path]:
    """The folders that paths given as flow parameters must stay inside: ``$ENERGY_BTGM_ROOTS``
    (``os.pathsep``-separated), else the working directory of the process that runs the flows."""
    roots = [r for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r.strip()]
    return [Path(r).resolve() for r in roots] or [Path.cwd().resolve()]


def confine(path: str | os.PathLike, what: str) -> str:
    """``path`` if it lies inside an allowed root (``allowed_roots``), else a ``ParameterError``.

    For paths that arrive as flow parameters: a deployment can be run by anyone who reaches the Prefect
    API, so ``..`` and absolute paths outside the roots are refused (links are resolved first).
    """
    p = Path(path)
    roots = allowed_roots()
    if ".." in p.parts:
        raise ParameterError(f"{what} {str(path)!r}: '..' is not allowed in a flow parameter; give a path inside {roots[0]}")
    resolved = (p if p.is_absolute() else Path.cwd() / p).resolve()
    if not any(resolved == r or r in resolved.parents for r in roots):
        raise ParameterError(
            f"{what} {str(path)!r} is outside the folders flows may use ({', '.join(map(str, roots))}); "
            f"give a path inside them, or add its folder to ${ROOTS_ENV} where the flows run"
        )
    return str(path)


_held: dict[str, int] = {}  # store locks this process holds, with their depth (a flow's steps take it again)


@contextlib.contextmanager
def store_lock(root: str | os.PathLike, run_id: str = "", command: str = ""):
    """Hold the store's lock (``<store>/.lock``) for the block, or raise ``StoreBusy`` at once.

    Two runs on one store would interleave writes to the same model or bank; the second one stops
    with who holds the store and since when. The lock is an ``flock``: the system releases it when
    the holder exits, killed or not, so a crashed run never leaves the store locked. Re-entrant
    within a process.
    """
    root = Path(root)
    key = str(root.resolve())
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    import fcntl

    with _writing(root / ".lock"):
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                who = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                who = {}
            raise StoreBusy(
                f"store {root} busy since {who.get('since', '?')}, run id {who.get('run_id') or '?'} "
                f"({who.get('command') or 'a run'}, pid {who.get('pid', '?')}); wait for it to finish, "
                "or use another --store"
            ) from None
        info = {"since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "run_id": run_id, "command": command, "pid": os.getpid()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
