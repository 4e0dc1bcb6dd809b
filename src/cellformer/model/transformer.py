"""The cell transformer: gene-token embeddings, a stack of self-attention blocks, an MLP on ``<CLS>``.

A cell is an unordered set of expressed genes, so there is no positional encoding; the order of
tokens only decides which genes survive truncation. ``<PAD>`` positions are removed from attention
with a key-padding mask, so adding padding never changes the output of a real token.

Shapes: ``B`` cells in a batch, ``T`` tokens (``<CLS>`` first), ``C`` = ``d_model``,
``H`` heads of width ``D`` (``H * D`` need not equal ``C``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cellformer.config import ModelConfig
from cellformer.tokens import PAD, SEP


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (flash / efficient kernels)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.attention_head_dim
        inner = self.n_heads * self.head_dim
        self.qkv = nn.Linear(config.d_model, 3 * inner)
        self.proj = nn.Linear(inner, config.d_model)
        self.dropout = config.attention_dropout_p
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, n_queries: int | None = None
    ) -> torch.Tensor:
        """``(B, T, C)`` states; with ``n_queries`` only the first ``n_queries`` positions ask (all still
        answer as keys and values), ``(B, n_queries, C)``."""
        B, T, _ = x.shape
        inner = self.n_heads * self.head_dim
        if n_queries is None:
            q, k, v = self.qkv(x).split(inner, dim=2)  # 3 x (B, T, H*D)
        else:
            q = F.linear(x[:, :n_queries], self.qkv.weight[:inner], self.qkv.bias[:inner])  # (B, Q, H*D)
            k, v = F.linear(x, self.qkv.weight[inner:], self.qkv.bias[inner:]).split(inner, dim=2)
        q, k, v = (
            t.view(B, t.shape[1], self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v)
        )  # (B, H, T or Q, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T or Q, D)
        y = y.transpose(1, 2).reshape(B, q.shape[2], inner)  # (B, T or Q, H*D)
        return self.resid_dropout(self.proj(y))  # (B, T or Q, C)


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.ff_width)
        self.proj = nn.Linear(config.ff_width, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Attention + feed-forward, each with a residual; LayerNorm before (pre-LN) or after (post-LN)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.ff = FeedForward(config)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, n_queries: int | None = None
    ) -> torch.Tensor:
        """``(B, T, C)``, or the first ``n_queries`` positions' states ``(B, n_queries, C)``."""
        if self.pre_norm:
            x = x[:, :n_queries] + self.attn(self.ln_1(x), attn_mask, n_queries)
            return x + self.ff(self.ln_2(x))
        x = self.ln_1(x[:, :n_queries] + self.attn(x, attn_mask, n_queries))
        return self.ln_2(x + self.ff(x))


class ClassifierHead(nn.Module):
    """One hidden layer (GELU, dropout) from the ``<CLS>`` embedding to class logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.head_hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.head_hidden, config.n_classes)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(F.gelu(self.fc(cls))))  # (B, n_classes)


class CellTransformer(nn.Module):
    """Encoder + classifier. ``config`` must have ``vocab_size`` and ``n_classes`` filled in.

    Token ids cover ``<PAD> <CLS> <SEP> <MASK>`` and the genes (``vocab_size`` of them, one
    gene-embedding table), then any context tokens (batch, assay, ...: ids ``vocab_size`` to
    ``vocab_size + n_context - 1``), which have their own table. With ``n_values > 0`` a value
    embedding (binned expression) is added to each token's gene embedding.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size is None or config.n_classes is None:
            raise ValueError(
                "ModelConfig.vocab_size and n_classes must be set (they come from the prepared data)"
            )
        self.config = config
        self.gene_embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=PAD)
        n_values = config.n_values or 0
        self.value_embedding = nn.Embedding(n_values, config.d_model) if n_values > 0 else None
        n_context = config.n_context or 0
        self.context_embedding = nn.Embedding(n_context, config.d_model) if n_context > 0 else None
        # tokens after <SEP> (the previous-time-point block) get segment 1; there are no positions
        self.segment_embedding = nn.Embedding(2, config.d_model) if config.segment_embedding else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model) if config.norm == "pre" else nn.Identity()
        self.head = ClassifierHead(config)
        self.apply(self._init_weights)
        for name, param in self.named_parameters():  # scaled init of residual projections (GPT-2)
            if name.endswith("proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])

    def token_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """Gene (and special-token) embeddings; ids from ``vocab_size`` on use the context table."""
        if self.context_embedding is None:
            return self.gene_embedding(ids)  # (B, T, C)
        is_context = ids >= self.config.vocab_size  # (B, T)
        genes = self.gene_embedding(ids.masked_fill(is_context, PAD))  # (B, T, C)
        context = self.context_embedding((ids - self.config.vocab_size).clamp(min=0))  # (B, T, C)
        return torch.where(is_context.unsqueeze(-1), context, genes)  # (B, T, C)

    def encode(
        self,
        ids: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
        cls_only: bool = False,
    ) -> torch.Tensor:
        """Token states ``(B, T, C)``; ``padding_mask`` is True at ``<PAD>`` positions.

        With ``cls_only`` the last block computes the ``<CLS>`` state alone, ``(B, 1, C)``: every token
        still attends and is attended to in the earlier blocks, and the last block's other outputs are
        never read by ``<CLS>`` pooling, so this is the same ``<CLS>`` state at a fraction of the cost.
        """
        x = self.token_embedding(ids)  # (B, T, C)
        if self.value_embedding is not None:
            if values is None:
                raise ValueError("this model has a value embedding: pass the value ids (`values`)")
            x = x + self.value_embedding(values)  # (B, T, C)
        if self.segment_embedding is not None:
            segment = (torch.cumsum(ids == SEP, dim=1) > 0).long()  # (B, T): 1 from <SEP> on
            x = x + self.segment_embedding(segment)  # (B, T, C)
        x = self.dropout(x)
        attn_mask = None
        if padding_mask is not None and bool(padding_mask.any()):
            attn_mask = ~padding_mask[:, None, None, :]  # (B, 1, 1, T): True = may attend to this key
        for index, block in enumerate(self.blocks):
            last = index == len(self.blocks) - 1
            x = block(x, attn_mask, 1 if cls_only and last else None)  # (B, T, C); (B, 1, C) at the end
        return self.ln_f(x)

    def forward(
        self, ids: torch.Tensor, padding_mask: torch.Tensor | None = None, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``(B, n_classes)`` and the pooled embedding ``(B, C)`` (``config.pooling``).

        ``<CLS>`` pooling computes only the ``<CLS>`` state in the last block (see :meth:`encode`), in
        training too: the other states of the last block would get no gradient.
        """
        cls_only = self.config.pooling == "cls"
        states = self.encode(ids, padding_mask, values, cls_only)  # (B, T, C) or (B, 1, C)
        pooled = self.pool(states, padding_mask)  # (B, C)
        return self.head(pooled), pooled

    def pool(self, states: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        """The cell embedding ``(B, C)`` the classifier reads, from token states ``(B, T, C)``."""
        if self.config.pooling == "cls" or padding_mask is None:
            return states[:, 0] if self.config.pooling == "cls" else states.mean(dim=1)  # (B, C)
        keep = (~padding_mask).unsqueeze(-1).to(states.dtype)  # (B, T, 1)
        return (states * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)  # (B, C)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def gene_tables(self) -> list[nn.Embedding]:
        """The gene-embedding tables (one): what the SVD start initialises and the embedding rate scales."""
        return [self.gene_embedding]


class TransformerEnsemble(nn.Module):
    """``config.members`` cell transformers, each initialised independently, answering as one model.

    The logits are the log of the members' mean probabilities (a proper logit vector: softmax gives the
    mean), the embedding is the members' pooled embeddings side by side ``(B, members * C)``. Training
    gives each member its own loss (:mod:`cellformer.training.module`); prediction only calls ``forward``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(CellTransformer(config) for _ in range(config.members))

    @property
    def value_embedding(self) -> nn.Embedding | None:
        """The first member's value table (every member has one exactly when the model takes values)."""
        return self.members[0].value_embedding

    def forward(
        self, ids: torch.Tensor, padding_mask: torch.Tensor | None = None, values: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``log(mean softmax)`` ``(B, n_classes)`` and the embeddings ``(B, members * C)``."""
        outputs = [member(ids, padding_mask, values) for member in self.members]
        log_probs = torch.stack([F.log_softmax(logits.float(), dim=-1) for logits, _ in outputs])  # (M, B, K)
        logits = torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))  # (B, K)
        return logits, torch.cat([pooled for _, pooled in outputs], dim=-1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def head_weights(self) -> dict[str, np.ndarray]:
        """Each member's classifier head as arrays (``fc_weight.i``, ``fc_bias.i``, ``out_weight.i``,
        ``out_bias.i``): member ``i``'s probabilities from its slice ``i`` of the embedding, without the
        network (:func:`cellformer.calibration.scores.member_probabilities`)."""
        out = {}
        for i, member in enumerate(self.members):
            for layer in ("fc", "out"):
                linear = getattr(member.head, layer)
                out[f"{layer}_weight.{i}"] = linear.weight.detach().cpu().double().numpy()
                out[f"{layer}_bias.{i}"] = linear.bias.detach().cpu().double().numpy()
        return out

    def gene_tables(self) -> list[nn.Embedding]:
        """Every member's gene-embedding table."""
        return [member.gene_embedding for member in self.members]


def build_model(config: ModelConfig) -> CellTransformer | TransformerEnsemble:
    """The network a model config describes: one transformer, or an ensemble of ``config.members``."""
    return CellTransformer(config) if config.members == 1 else TransformerEnsemble(config)
