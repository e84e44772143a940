"""Ingestion throughput against a reference pipeline written directly in DuckDB.

Makes a 20 M-row CSV in the LCL per-block layout (LCLid,tstp,energy(kWh/hh)) with the synthetic
generator (cached under the temp folder), then, each in its own process:
- energy-btgm: ingest (cleaning, quarantine, Great Expectations validation) + household weekly curves;
- DuckDB: read, drop duplicates, write the canonical Parquet, build household weekly curves.
Prints rows/s, peak RSS and the time ratio. Goal (issue 3): at most 3x DuckDB, peak RSS < 3 GB.
Usage: python benchmarks/bench_ingest.py [--households 1145] [--weeks 52]
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import report

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--households", type=int, default=1145)  # 1145 x 52 weeks x 336 = 20.0 M rows
ap.add_argument("--weeks", type=int, default=52)
a = ap.parse_args()

work = Path(tempfile.gettempdir()) / f"energy-btgm-bench-ingest-{a.households}x{a.weeks}"
csv = work / "lcl_blocks.csv"
if not csv.exists():
    work.mkdir(parents=True, exist_ok=True)
    make = f"""
import pyarrow as pa, pyarrow.csv as pcsv, pyarrow.parquet as pq, pyarrow.compute as pc
from energy_btgm.data.synth import SynthConfig, generate
from pathlib import Path
w = Path({str(work)!r})
generate(SynthConfig(households={a.households}, weeks={a.weeks}, tz="Europe/London"), w / "synth", overwrite=True)
LCL_SCHEMA = pa.schema([("LCLid", pa.string()), ("tstp", pa.string()), ("energy(kWh/hh)", pa.float32())])
with pcsv.CSVWriter(str(w / "lcl_blocks.tmp"), write_options=pcsv.WriteOptions(quoting_style="none"), schema=LCL_SCHEMA) as out:
    for f in sorted((w / "synth" / "readings").glob("*.parquet")):
        t = pq.read_table(f)
        ts = pc.strftime(pc.local_timestamp(t["timestamp"]), format="%Y-%m-%d %H:%M:00.0000000")
        out.write_table(pa.table({{"LCLid": pc.cast(t["meter_id"], pa.string()), "tstp": ts, "energy(kWh/hh)": t["kwh"]}}))
(w / "lcl_blocks.tmp").rename(w / "lcl_blocks.csv")
"""
    print("making the LCL-layout CSV ...", flush=True)
    subprocess.run([sys.executable, "-c", make], check=True)
size_mb = csv.stat().st_size / 1e6
rows = sum(1 for _ in open(csv, "rb")) - 1


def timed(code: str) -> tuple[float, float]:
    """(seconds, peak RSS MB) of ``code`` run in a fresh process."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    dt = time.perf_counter() - t
    return dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


ours = f"""
from pathlib import Path
from energy_btgm.data.ingest import IngestConfig, ingest
from energy_btgm.data.curves import CurvesConfig, household_curves
s = Path({str(work)!r}) / "store"
m = ingest([Path({str(csv)!r})], s, IngestConfig(fmt="lcl", tz="Europe/London"), reports=Path({str(work)!r}) / "reports")
hh, info = household_curves(s, CurvesConfig())
assert m["counts"]["rows_in"] == m["counts"]["rows_kept"] + m["counts"]["rows_quarantined"]
print("energy-btgm: household-weeks", info["household_weeks_kept"], "validation", m["validation"]["success"])
"""
duck = f"""
import duckdb
con = duckdb.connect()
con.execute("PRAGMA threads=2")
con.execute("SET enable_progress_bar=false")
con.execute(\"\"\"CREATE TABLE r AS SELECT DISTINCT LCLid AS meter_id, CAST(left(tstp, 19) AS TIMESTAMP) AS ts,
             "energy(kWh/hh)" AS kwh FROM read_csv('{csv}', header=true, types={{'tstp': 'VARCHAR'}})\"\"\")
con.execute("COPY r TO '{work}/duck_readings.parquet' (FORMAT parquet, COMPRESSION zstd)")
con.execute(\"\"\"COPY (SELECT meter_id, date_trunc('week', ts) AS week, list(kwh * 2 ORDER BY ts) AS curve_kw
             FROM r GROUP BY ALL) TO '{work}/duck_curves.parquet' (FORMAT parquet)\"\"\")
print("duckdb: household-weeks", con.execute("SELECT count(*) FROM '{work}/duck_curves.parquet'").fetchone()[0])
"""
timed("import duckdb, energy_btgm.data.ingest")  # warm the page cache and imports
t_duck, _ = timed(duck)
t_ours, rss_ours = timed(ours)
report("ingest", f"input: LCL-layout CSV, {rows:,} rows, {size_mb:.0f} MB", rows, "rows", "20 M")
report("ingest", "energy-btgm ingest+validate+household curves", round(t_ours, 1), "s", "")
report("ingest", "energy-btgm rows/s", round(rows / t_ours), "rows/s", "")
report("ingest", "DuckDB reference (read, dedupe, Parquet, curves)", round(t_duck, 1), "s", "")
report("ingest", "time ratio energy-btgm / DuckDB", round(t_ours / t_duck, 2), "x", "<= 3")
report("ingest", "peak RSS (max over the runs)", round(rss_ours), "MB", "< 3072 MB")
