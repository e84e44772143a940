"""Run every benchmarks/bench_*.py script and print one table of the figures they report."""

import json
import subprocess
import sys
import time
from pathlib import Path

here = Path(__file__).parent
rows = []
for script in sorted(here.glob("bench_*.py")):
    print(f"running {script.name} ...", flush=True)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=here)
    if r.returncode != 0:
        rows.append({"bench": script.stem, "figure": "FAILED (see stderr above)", "value": "", "unit": "", "goal": ""})
        print(r.stdout[-2000:], r.stderr[-4000:], file=sys.stderr)
    for line in r.stdout.splitlines():
        if line.startswith("BENCH "):
            rows.append(json.loads(line[6:]))
    print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)

for r in rows:
    if isinstance(r["value"], (int, float)):
        r["value"] = f"{r['value']:,}"
cols = ("bench", "figure", "value", "unit", "goal")
w = [max(len(str(r[k])) for r in rows + [dict(zip(cols, cols))]) for k in cols]
fmt = "  ".join(f"{{:<{n}}}" for n in w)
print()
print(fmt.format(*cols))
print(fmt.format(*("-" * n for n in w)))
for r in rows:
    print(fmt.format(*(r[k] for k in cols)))
sys.exit(1 if any(r["figure"].startswith("FAILED") for r in rows) else 0)
