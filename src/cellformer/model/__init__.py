"""Pure-torch network: the cell transformer encoder and its classifier head (no AnnData, no Lightning)."""

from cellformer.model.transformer import CellTransformer

__all__ = ["CellTransformer"]
