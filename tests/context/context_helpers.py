"""Shared settings of the context-token tests."""

# small enough to train in seconds on a shared 2-core CPU (plumbing, not accuracy)
TINY = dict(
    n_layers=1,
    d_model=32,
    n_heads=2,
    ff_hidden=64,
    head_hidden=32,
    max_length=24,
    batch_size=64,
    max_epochs=2,
    lr=3e-3,
    progress_bar=False,
)
PBMC = dict(input_normalized=True, max_genes=16, n_hvg=300)
