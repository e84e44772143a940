"""Rare-event estimation: the fourth layer, BTGM as an importance sampler against rejection sampling.

``estimate`` owns the estimators, pure functions of criterion values, weights and strata that need no
model (``estimators``), the importance proposal built from tuned flows (``proposal``: flows per
stratum, defensive mixture, cross-entropy refinement) and the comparison run that charges both
methods the same wall-clock budget and holds them against a cached reference (``comparison``). It may
import ``tuning``, ``model``, ``data`` and the base modules; never ``outputs`` or the CLI.
"""
