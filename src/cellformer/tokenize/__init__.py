"""Tokenizers: sparse expression matrix in, token ids (+ optional value ids) and lengths out."""

from cellformer.tokenize.base import N_SPECIAL, SPECIAL_TOKENS, TokenizedCells, Tokenizer, get_tokenizer_class

__all__ = ["N_SPECIAL", "SPECIAL_TOKENS", "TokenizedCells", "Tokenizer", "get_tokenizer_class"]
