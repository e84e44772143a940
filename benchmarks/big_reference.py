"""An independent crude Monte-Carlo reference for bench_compare: N samples of p, keeping the tail.

bench_compare's own reference (10^7 samples, cached by `compare`) has a 3 % relative error at the
0.9999 level, more than BTGM's intervals; this one, with another seed and 10^8 samples by default
(1 % at 0.9999; about 25 minutes on 2 cores), tells whether BTGM's intervals cover the truth.
Keeps every weekly peak ≥ --keep-above [kW] (below the 0.99 quantile on the demo model) and the
hour of the week of that peak, in an .npz (``f``, ``hour``, ``n``) for `bench_compare.py
--independent-reference`.
Usage: python benchmarks/big_reference.py [--samples 1e8] [--seed 11] [--out data/reference/big-reference.npz]
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import criteria
from energy_btgm.core import BATCH
from energy_btgm.estimate.proposal import score
from energy_btgm.model.vae import load_model
from energy_btgm.store import atomic_write_npz, sha256_file

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--store", default=str(Path(__file__).resolve().parents[1] / "data"))
ap.add_argument("--group-size", type=int, default=10)
ap.add_argument("--samples", type=float, default=1e8)
ap.add_argument("--seed", type=int, default=11, help="not 2024, the seed of compare's cached reference")
ap.add_argument("--keep-above", type=float, default=18.0)
ap.add_argument("--out", help="default: <store>/reference/big-reference.npz")
a = ap.parse_args()
out = Path(a.out or Path(a.store) / "reference" / "big-reference.npz")
model = Path(a.store) / "models" / f"vae-n{a.group_size}"
if not (model / "model.json").exists():
    raise SystemExit(f"no model at {model}; run `make demo` first")
gen, crit, n = load_model(model), criteria.get("weekly-peak"), int(a.samples)
g = torch.Generator().manual_seed(a.seed)
keep_f, keep_h = [], []
for i in tqdm(range(0, n, BATCH), desc=f"{n:,} samples of p", unit=" batch"):
    s = score(gen, crit, torch.randn(min(BATCH, n - i), gen.latent_dim, generator=g))
    m = s["f"] >= a.keep_above
    keep_f.append(s["f"][m].astype(np.float32))
    keep_h.append(s["peak_hour"][m].astype(np.int16))
atomic_write_npz(
    out,
    f=np.concatenate(keep_f),
    hour=np.concatenate(keep_h),
    n=n,
    keep_above=a.keep_above,
    seed=a.seed,
    model_sha256=sha256_file(model / "weights.pt"),
)
print(f"wrote {out}: {sum(map(len, keep_f)):,} of {n:,} samples with a weekly peak ≥ {a.keep_above} kW")
