"""Evaluation of trained runs: metrics on arrays, calibration, plots, and the comparison report.

``cellformer.evaluate(run_dir, split="test")`` evaluates one run (:mod:`cellformer.evaluation.api`);
``cellformer.compare(run_dirs, out=...)`` writes the report (:mod:`cellformer.evaluation.report`).
"""
