"""Writes the small input files under tests/data/ (committed; rerun to regenerate them).

formats/: one small file per supported layout. bad/: the bad-input corpus, one defect a file.
"""

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
rng = np.random.default_rng(0)


def half_hours(start, n):
    return pd.date_range(start, periods=n, freq="30min")


def long_rows(meters=("M1", "M2"), start="2023-01-02", n=96):
    rows = []
    for m in meters:
        for t in half_hours(start, n):
            rows.append((m, t.strftime("%Y-%m-%d %H:%M:%S"), f"{rng.uniform(0.05, 1.2):.3f}"))
    return rows


def write_csv(path, header, rows, sep=","):
    path.write_text(sep.join(header) + "\n" + "".join(sep.join(r) + "\n" for r in rows))


F, B = HERE / "formats", HERE / "bad"
F.mkdir(exist_ok=True)
B.mkdir(exist_ok=True)

# --- formats ---
rows = long_rows()
write_csv(F / "long.csv", ["meter_id", "timestamp", "kwh"], rows)
with gzip.open(F / "long.csv.gz", "wt") as fh:
    fh.write("meter_id,timestamp,kwh\n" + "".join(",".join(r) + "\n" for r in rows))
pd.DataFrame(rows, columns=["meter_id", "timestamp", "kwh"]).assign(
    timestamp=lambda d: pd.to_datetime(d["timestamp"]).dt.tz_localize("Europe/Paris"), kwh=lambda d: d["kwh"].astype(float)
).to_parquet(F / "long.parquet", index=False)
# LCL datastore: trailing space in the value header, 7-digit fractional seconds, Null strings
ds = [(m, "Std", t + ".0000000", " " + v if v else "Null") for m, t, v in long_rows(("MAC000002", "MAC000003"), "2012-10-15")]
ds[5] = (ds[5][0], ds[5][1], ds[5][2], "Null")
write_csv(F / "lcl_datastore.csv", ["LCLid", "stdorToU", "DateTime", "KWH/hh (per half hour) "], ds)
red = [(m, t + ".0000000", v) for m, t, v in long_rows(("MAC000002",), "2012-10-15")]
write_csv(F / "lcl_block_0.csv", ["LCLid", "tstp", "energy(kWh/hh)"], red)
# UCI wide: ';' separator, ',' decimal, kW per 15 min, quoted header
t15 = pd.date_range("2012-01-02", periods=192, freq="15min")
lines = ['"";"MT_001";"MT_002"']
for t in t15:
    a, b = rng.uniform(0, 3, 2)
    lines.append(f'"{t:%Y-%m-%d %H:%M:%S}";{a:.4f}'.replace(".", ",", 1).replace(",", ".", 0) + f";{b:.4f}".replace(".", ","))
(F / "uci_wide.txt").write_text("\n".join(lines) + "\n")

# --- bad inputs ---
(B / "empty.csv").write_bytes(b"")
write_csv(B / "wrong_delimiter.csv", ["meter_id", "timestamp", "kwh"], long_rows(("M1",), n=4), sep=";")
write_csv(B / "missing_column.csv", ["meter_id", "timestamp"], [r[:2] for r in long_rows(("M1",), n=4)])
r = long_rows(("M1",), n=48)
r[10] = (r[10][0], r[10][1], "abc")
write_csv(B / "text_value.csv", ["meter_id", "timestamp", "kwh"], r)
good = "meter_id,timestamp,kwh\n" + "".join(",".join(x) + "\n" for x in long_rows(("M1",), n=48))
(B / "non_utf8.csv").write_bytes(good.encode() + "M\xe9ter,2023-01-03 00:00:00,0.5\n".encode("latin-1"))
full = gzip.compress(good.encode() * 3)
(B / "truncated.csv.gz").write_bytes(full[: len(full) // 2])
r = long_rows(("M1",), n=48)
r[3] = (r[3][0], r[3][1], "-0.4")
r[7] = (r[7][0], r[7][1], "250")
write_csv(B / "negative_absurd.csv", ["meter_id", "timestamp", "kwh"], r)
r = long_rows(("M1",), n=48)
r += [r[5], (r[9][0], r[9][1], "9.999")]
write_csv(B / "conflicting_duplicates.csv", ["meter_id", "timestamp", "kwh"], r)
r = long_rows(("M1", "M2"), n=48)
write_csv(B / "unsorted.csv", ["meter_id", "timestamp", "kwh"], [r[i] for i in rng.permutation(len(r))])
# DST fall-back in a naive local export (Europe/London, 2023-10-29): 01:00-02:00 appears twice
wall = list(pd.date_range("2023-10-29 00:00", "2023-10-29 01:30", freq="30min")) * 1
wall = list(pd.date_range("2023-10-28 22:00", "2023-10-29 01:30", freq="30min")) + \
    list(pd.date_range("2023-10-29 01:00", "2023-10-29 03:30", freq="30min"))
write_csv(B / "dst_fallback.csv", ["meter_id", "timestamp", "kwh"],
          [("M1", t.strftime("%Y-%m-%d %H:%M:%S"), f"{0.1 + 0.01 * i:.2f}") for i, t in enumerate(wall)])
ts = list(half_hours("2023-01-02", 96)) + list(pd.date_range("2023-01-04", periods=96, freq="15min"))
write_csv(B / "resolution_change.csv", ["meter_id", "timestamp", "kwh"],
          [("M1", t.strftime("%Y-%m-%d %H:%M:%S"), f"{0.2 + 0.01 * (i % 7):.3f}") for i, t in enumerate(ts)])
text = good.splitlines()
text[4] = text[4] + ",extra,fields"
(B / "malformed_row.csv").write_text("\n".join(text) + "\n")
# stuck meters: M1 reads 0 for 26 h, M2 repeats 0.250 for 25 h; M3 reads 0 for 20 h (below the 24-h span: kept)
r = long_rows(("M1", "M2", "M3"), n=144)
for i in range(20, 72):
    r[i] = (r[i][0], r[i][1], "0.000")
for i in range(144 + 30, 144 + 80):
    r[i] = (r[i][0], r[i][1], "0.250")
for i in range(288 + 10, 288 + 50):
    r[i] = (r[i][0], r[i][1], "0.000")
write_csv(B / "stuck_meters.csv", ["meter_id", "timestamp", "kwh"], r)
print("wrote", sorted(p.name for p in F.iterdir()), sorted(p.name for p in B.iterdir()))
