"""Boltzmann Tuning (BTGM): the third layer, a model tilted toward a criterion, q_β ∝ p·e^{βf}.

``tuning`` owns the β search and the flow's training (``engine``), the theory curves and Pareto
efficiency the tuned model is held against (``theory``), the tune step of the pipeline that writes
the flow, its figures, summary and a bank of tuned scenarios (``run``), and the ex-ante assessment of
equivalent criteria (``assess``). It may import ``model``, ``data`` and the base modules; never
``estimate``, ``outputs`` or the CLI.
"""
