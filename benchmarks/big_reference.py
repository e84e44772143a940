"""An independent crude Monte-Carlo reference for bench_compare: N samples of p, keeping every criterion's tail.

`compare`'s own reference (cached, seed 2024) sets the thresholds; this one, with another seed and
10^8 samples by default (a 1 % relative error at a tail mass of 1e-4; about 20 minutes on 2 cores),
tells whether BTGM's intervals cover the truth. One decoder pass serves every criterion: for each,
the values at or above its 0.985-quantile of the first million draws are kept (the levels checked
are 0.99 and beyond), in one .npz (``f_<criterion>``, ``keep_above_<criterion>``, ``n``, ``seed``,
``model_sha256``) for `bench_compare.py`.
Usage: python benchmarks/big_reference.py [--samples 1e8] [--seed 11] [--group-size 10] [--out PATH]
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import criteria
from energy_btgm.core import BATCH
from energy_btgm.model.vae import load_model
from energy_btgm.store import atomic_write_npz, sha256_file

NAMES = ("weekly-peak", "wednesday-gap", "mae-flatness")
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--store", default=str(Path(__file__).resolve().parents[1] / "data"))
ap.add_argument("--group-size", type=int, default=10)
ap.add_argument("--samples", type=float, default=1e8)
ap.add_argument("--seed", type=int, default=11, help="not 2024, the seed of compare's cached reference")
ap.add_argument("--out", help="default: <store>/reference/big-reference-n<group size>.npz")
a = ap.parse_args()
out = Path(a.out or Path(a.store) / "reference" / f"big-reference-n{a.group_size}.npz")
model = Path(a.store) / "models" / f"vae-n{a.group_size}"
if not (model / "model.json").exists():
    raise SystemExit(f"no model at {model}; run `make demo` first")
gen, n = load_model(model), int(a.samples)
crits = [criteria.get(c) for c in NAMES]
g = torch.Generator().manual_seed(a.seed)
keep = {c: [] for c in NAMES}
cut: dict[str, float] = {}
first: dict[str, list] = {c: [] for c in NAMES}
with torch.no_grad():
    for i in tqdm(range(0, n, BATCH), desc=f"{n:,} samples of p", unit=" batch"):
        x, _ = gen.decode_kw(torch.randn(min(BATCH, n - i), gen.latent_dim, generator=g))
        for c, crit in zip(NAMES, crits):
            f = crit(x).numpy().astype(np.float32)
            if c not in cut:  # the first million draws set the cut, and are kept in full until then
                first[c].append(f)
                if sum(map(len, first[c])) >= 1_000_000:
                    allf = np.concatenate(first[c])
                    cut[c] = float(np.quantile(allf, 0.985))
                    keep[c].append(allf[allf >= cut[c]])
            else:
                keep[c].append(f[f >= cut[c]])
for c in NAMES:  # fewer than a million samples: cut at the same quantile of what there is
    if c not in cut:
        allf = np.concatenate(first[c])
        cut[c] = float(np.quantile(allf, 0.985))
        keep[c].append(allf[allf >= cut[c]])
atomic_write_npz(
    out,
    n=n,
    seed=a.seed,
    model_sha256=sha256_file(model / "weights.pt"),
    **{f"f_{c}": np.concatenate(keep[c]) for c in NAMES},
    **{f"keep_above_{c}": cut[c] for c in NAMES},
)
print(f"wrote {out}: {n:,} samples of p, " + ", ".join(f"{c}: {sum(map(len, keep[c])):,} kept" for c in NAMES))
