"""Meters in, weekly curves out: the first layer of the pipeline.

``data`` owns reading meter exports (``readers``: long, LCL, wide; CSV, gzip, Parquet), cleaning and
quarantining them into the canonical readings (``ingest``), household and group weekly curves with
their train/validation/test split (``curves``), the synthetic meter data of the demo (``synth``) and
its statistics against real trials (``describe``). It may import the base modules (``store``,
``validation``, ``core``) and nothing above: no model, tuning, estimate or output code.
"""
