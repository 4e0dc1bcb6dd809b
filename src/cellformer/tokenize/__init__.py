"""Tokenizers: sparse expression matrix in, token ids (+ optional value ids) and lengths out.

``base.py`` (protocol, registry by name), ``rank.py``, ``binned.py``, ``context.py`` (covariate tokens),
``hvg.py`` (the one HVG selection), ``parallel.py`` (``transform`` in worker processes), ``features.py``
(the other model input: normalized, standardized HVG expression and its PCA, for the baselines),
``kernels/`` (the numba loops behind them, a module per job).
"""

from cellformer.tokenize.base import Tokenizer, get_tokenizer_class
from cellformer.tokens import N_SPECIAL, SPECIAL_TOKENS, TokenizedCells

__all__ = ["N_SPECIAL", "SPECIAL_TOKENS", "TokenizedCells", "Tokenizer", "get_tokenizer_class"]
