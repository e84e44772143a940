"""VAE training throughput and fit on the demo data (10-household groups).

Needs the demo's curves (run `make demo` first, or it makes a smaller set itself). Prints curves/s
(forward + backward, one epoch), the wall time of a full `train` and the model card's fit numbers.
Goal (issue 4): training within 5 minutes on 2 cores; KS <= 0.08 for weekly peak and energy; the
0.99 quantile of the weekly peak within 5 %.
Usage: python benchmarks/bench_train.py [--store ../data]
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from _common import report

from energy_btgm.model.train import TrainConfig, train
from energy_btgm.model.vae import VAE, VAEConfig

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--store", default=str(Path(__file__).resolve().parents[1] / "data"))
a = ap.parse_args()
store = Path(a.store)
if not (store / "curves" / "groups-n10.parquet").exists():
    raise SystemExit(f"no curves under {store}; run `make demo` first")

cfg = TrainConfig()
vcfg = VAEConfig(latent_dim=cfg.latent_dim, hidden=cfg.hidden, blocks=cfg.blocks, stat_weight=cfg.stat_weight)
model = VAE(dataclasses.replace(vcfg, statistics=cfg.statistic_names()))
opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
x = torch.randn(cfg.batch_size * 20, 337)
for _ in range(2):  # warm up, then time (the last pass counts)
    t = time.perf_counter()
    for i in range(0, len(x), cfg.batch_size):
        loss, _, _ = model.loss(x[i : i + cfg.batch_size])
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t
report("train", f"training throughput (batch {cfg.batch_size}, hidden {cfg.hidden})", round(len(x) / dt), "curves/s", "")

t = time.perf_counter()
out = train(store, cfg, out=store / "models" / "bench-vae-n10")
wall = time.perf_counter() - t
card = json.loads((out / "card.json").read_text())
report("train", f"train 10-household model ({card['epochs_run']} epochs, incl. card)", round(wall, 1), "s", "< 300 s")
report("train", "KS weekly-peak (test vs generated)", round(card["ks"]["weekly-peak"], 3), "", "<= 0.08")
report("train", "KS weekly-energy", round(card["ks"]["weekly-energy"], 3), "", "<= 0.08")
report("train", "q0.99 weekly-peak relative error", round(card["q99_rel_err"]["weekly-peak"], 3), "", "within +-0.05")
report("train", "test ELBO", round(card["test_elbo"], 1), "nats/curve", "")
