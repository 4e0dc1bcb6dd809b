"""A run's calibration, fitted once at the end of ``train`` / ``baseline`` and stored in the run directory.

- ``temperature.py``: softmax and temperature scaling (one scalar ``T`` fitted on validation cells);
- ``scores.py``: the unknown-cell scores (how unlike every training type a cell is);
- ``unknown.py``: the unknown-cell detector (a score, its threshold and the temperature; ``unknown.json``);
- ``run.py``: fitting a loaded run's calibration on its prepared dataset and reading the stored one.

A stage after ``runs`` (it calibrates any loaded run through the run protocol) and before ``training``
and ``baselines``, which call it as their last step; ``evaluate`` and ``predict`` only read it.
"""
