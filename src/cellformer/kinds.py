"""The kinds of run cellformer makes: the one list of them, and the class that loads each.

``config.json["kind"]`` of every run directory is one of :data:`KINDS`. What a kind does is answered by
its class, through the protocol every loaded run implements (:class:`cellformer.runs.TrainedModel`: its
outputs for new cells, its embedding, what the unknown-cell detector measures, whether it is a
baseline); how a baseline method fits and predicts, by :data:`cellformer.baselines.models.METHODS`.
Free of imports, so the CLI offers the choices without loading numpy.
"""

from __future__ import annotations

TRANSFORMER = "transformer"  # cellformer.train
BASELINES = ("logreg", "knn", "mlp")  # cellformer.baseline(method=...)

# kind -> "module:Class" whose ``load(run_dir)`` rebuilds a run of that kind
LOADERS = {
    TRANSFORMER: "cellformer.training.model_run:TransformerRun",
    **{method: "cellformer.baselines.run:BaselineRun" for method in BASELINES},
}
KINDS = tuple(LOADERS)
