"""What people and simulators read: the fifth layer, exports of banks and the analyst's report.

``outputs`` owns the timestamped exports of a scenario bank for grid simulators (``export``) and the
self-contained HTML report with the ``summary.json`` of every number it shows (``report``, rendered
from ``templates/``). It may import every layer below (``estimate``, ``tuning``, ``model``, ``data``)
and the base modules; only the CLI and ``pipelines`` import it.
"""
