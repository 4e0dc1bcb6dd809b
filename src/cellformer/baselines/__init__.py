"""Simple baselines on the same cells and splits as the transformer: logreg, kNN on PCA, an MLP."""
