"""The time course: each cell's previous-time-point profile, in prepare, training data and predict.

- ``mapping.py``: the kNN ancestor mapping (fit on training cells, saved, applied to new cells);
- ``ancestors.py``: ``prepare --time-key`` glue (time columns, fitting the mapping on the training
  cells of the input files) and, for ``predict``, the mapping of a run applied to new cells;
- ``previous.py``: where prepare's previous profiles come from (a layer, or the ancestor mapping).

A stage after ``tokenize`` (the mapping uses its HVG selection; the profiles feed the tokenizers'
``<SEP>`` block) and before ``preparation``.
"""
