"""Training: the LightningModule, data loading, the Trainer set-up and the run directory.

``cellformer.train(prepared_dir, out=...)`` is :func:`cellformer.training.api.train`.
"""
