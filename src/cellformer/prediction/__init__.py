"""``cellformer.predict``: a run directory + AnnData → an annotated copy of the AnnData.

Works for every kind of run (transformer or baseline). Keys written (``key_added="cellformer"``;
existing keys of that name are replaced, with a warning):

- ``obs['cellformer_prediction']``: predicted class, categorical over *all* trained classes
- ``obs['cellformer_confidence']``: calibrated maximum probability (the temperature stored in the run,
  fitted on its validation split; ``T = 1`` for a run without validation cells)
- ``obs['cellformer_unknown']``: ``True`` for a cell unlike every training type (see :mod:`cellformer.calibration.unknown`)
  and for every cell with no expressed model gene (nothing to classify it by)
- ``obs['cellformer_unknown_score']``: the score behind that flag (higher = less like any training type;
  ``cellformer_unknown`` is exactly ``score > params['unknown']['threshold']``); ``inf`` for cells with no
  expressed model gene, NaN for every cell of a run without validation cells (no threshold, no flag)
- ``obsm['cellformer_proba']``: calibrated class probabilities, columns in ``uns['cellformer']['classes']``
- ``obsm['X_cellformer']``: the model's embedding (``params['embedding']`` says which: ``<CLS>`` for the
  transformer, the principal components of the training features for logreg / kNN, the hidden layer
  for the MLP)
- ``obsm['X_cellformer_umap']``: 2-d UMAP of ``X_cellformer`` (only from :func:`predict_file` with a plot)
- ``uns['cellformer']``: ``classes`` and ``params`` (run, kind, gene overlap, input values and the
  transform applied to them, calibration, unknown-cell rule, versions)

Calibration (temperature, unknown-cell threshold) is read from the run directory, never written to it
(:mod:`cellformer.calibration.run`).

The package, in the order of the flow: ``run_setup.py`` (the run, its calibration, options, devices),
``outputs.py`` (model outputs chunk by chunk), ``annotate.py`` (the keys written), ``adata.py``
(:func:`predict`), ``writing.py`` (annotated copy, annotations only, shards merged) and ``files.py``
(:func:`predict_file`).
"""

from cellformer.prediction.adata import predict
from cellformer.prediction.files import predict_file

__all__ = ["predict", "predict_file"]
