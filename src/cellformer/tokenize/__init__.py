"""Tokenizers: sparse expression matrix in, token ids (+ optional value ids) and lengths out."""

from cellformer.tokenize.base import Tokenizer, get_tokenizer_class
from cellformer.tokens import N_SPECIAL, SPECIAL_TOKENS, TokenizedCells

__all__ = ["N_SPECIAL", "SPECIAL_TOKENS", "TokenizedCells", "Tokenizer", "get_tokenizer_class"]
