"""Pure-torch network: the cell transformer encoder and its classifier head (no AnnData, no Lightning)."""

from cellformer.model.transformer import CellTransformer, TransformerEnsemble, build_model

__all__ = ["CellTransformer", "TransformerEnsemble", "build_model"]
