"""energy-btgm: extreme-but-plausible electricity load scenarios by Boltzmann Tuning of Generative Models.

The library runs from a plain Python session and imports no orchestrator; ``pipelines/`` wraps it
in Prefect flows.
"""

__version__ = "0.1.0"
