"""Named kill points, for the fault-injection tests: the process can be SIGKILLed at the k-th point it passes.

Every atomic write passes a point just before its rename (the moment a half-written file would be
exposed if the write were not atomic), and the long loops (training epochs, β stages, ingest
partitions, comparison levels) pass one per iteration. In normal runs ``point`` is a counter
increment and nothing else.

- ``ENERGY_BTGM_KILL_AT=k`` (or ``arm(k)``): SIGKILL this process at its k-th point (1-based).
- ``ENERGY_BTGM_POINTS=FILE`` (or ``arm(record=FILE)``): append each point's name to FILE, to count a step's points.

The tests draw k from a seeded generator, so a failing kill point replays with its seed.
A base module: it imports only the standard library.
"""

from __future__ import annotations

import os
import signal

_state = {"count": 0, "kill_at": None, "record": None}


def arm(kill_at: int | None = None, record: str | os.PathLike | None = None) -> None:
    """Reset the counter; kill at the ``kill_at``-th point and/or record every point's name in ``record``."""
    _state.update(count=0, kill_at=kill_at, record=record)


def _from_env() -> None:
    k = os.environ.get("ENERGY_BTGM_KILL_AT")
    arm(int(k) if k else None, os.environ.get("ENERGY_BTGM_POINTS") or None)


def point(name: str) -> None:
    """Pass the kill point ``name``: counted, recorded or fatal as armed."""
    _state["count"] += 1
    if _state["record"]:
        with open(_state["record"], "a") as fh:
            fh.write(name + "\n")
    if _state["kill_at"] is not None and _state["count"] >= _state["kill_at"]:
        os.kill(os.getpid(), signal.SIGKILL)


_from_env()
