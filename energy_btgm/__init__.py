"""energy-btgm: extreme-but-plausible electricity load scenarios by Boltzmann Tuning of Generative Models.

The package reads as the pipeline, each layer importing only the layers before it::

    data  <-  model  <-  tuning  <-  estimate  <-  outputs  <-  cli (and ``pipelines/``)

with base modules every layer may use: ``store`` (store layout, atomic writes, provenance),
``errors`` (the exceptions the command line maps to exit codes), ``validation`` (Great Expectations
suites), ``bank`` (the scenario bank's schema, writer and reader), ``core`` (the latent flow,
importance-weight statistics, figures, weights-only loading) and the top-level ``criteria`` package.
``tests/test_layout.py`` fails on an import that points back up. The library runs from a plain
Python session and imports no orchestrator; ``pipelines/`` wraps it in Prefect flows.
"""

__version__ = "0.1.0"
