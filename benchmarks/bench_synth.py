"""Synthetic generator throughput: 1,000 households x 52 weeks half-hourly (17.5 M readings).

Goal (issue 2): under 60 s and under 4 GB peak memory on 2 cores, written chunk by chunk.
Usage: python benchmarks/bench_synth.py [--households 1000] [--weeks 52]
"""

import argparse
import tempfile
import time
from pathlib import Path

from _common import peak_rss_mb, report

from energy_btgm.data.synth import SynthConfig, generate

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--households", type=int, default=1000)
ap.add_argument("--weeks", type=int, default=52)
a = ap.parse_args()

with tempfile.TemporaryDirectory() as tmp:
    generate(SynthConfig(households=10, weeks=1), Path(tmp) / "warm")  # imports and caches warm
    t = time.perf_counter()
    rec = generate(SynthConfig(households=a.households, weeks=a.weeks, seed=0), Path(tmp) / "out")
    dt = time.perf_counter() - t
    size_mb = sum(f.stat().st_size for f in (Path(tmp) / "out").rglob("*") if f.is_file()) / 1e6
report("synth", f"{a.households} households x {a.weeks} weeks: wall time", round(dt, 1), "s", "< 60 s")
report("synth", "readings/s", round(rec["rows"] / dt), "readings/s", "> 292,000 (17.5 M in 60 s)")
report("synth", "peak RSS", round(peak_rss_mb()), "MB", "< 4096 MB")
report("synth", "Parquet size", round(size_mb, 1), "MB", "")
