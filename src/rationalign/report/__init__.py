"""Reports, the run registry, promotion gates, drift detection and recalibration.

- ``registry``: SQLite run registry with an append-only audit log (``RunRegistry``, ``register_run``)
- ``gates``: YAML promotion thresholds (``load_gates``, ``evaluate_gates``)
- ``drift``: training-vs-incoming drift (``detect_drift``) and temperature refits (``recalibrate``)
- ``html``: one self-contained HTML report (``build_report``)
- ``commands``: ``register(app)`` adds ``report``, ``runs``, ``gate``, ``drift``, ``recalibrate`` to the CLI

Submodules are imported lazily (``from rationalign.report.html import build_report``) so that importing
the package does not pull in torch or matplotlib.
"""
