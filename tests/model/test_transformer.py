"""The cell transformer: shapes, the padding mask, pre/post-LN, value embeddings, the reference size."""

from __future__ import annotations

import pytest
import torch

from cellformer.config import ModelConfig
from cellformer.errors import ConfigError
from cellformer.model import CellTransformer
from cellformer.tokens import CLS, N_SPECIAL, PAD


def _config(**changes) -> ModelConfig:
    base = dict(n_layers=2, d_model=32, n_heads=4, head_hidden=16, dropout=0.1, vocab_size=50, n_classes=5)
    return ModelConfig(**{**base, **changes})


def _cells(lengths: list[int], vocab_size: int = 50, seed: int = 0) -> torch.Tensor:
    """Padded ids ``(B, max(lengths))``: <CLS> then random distinct genes."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), max(lengths)), PAD, dtype=torch.int64)
    for i, n in enumerate(lengths):
        ids[i, 0] = CLS
        ids[i, 1:n] = N_SPECIAL + torch.randperm(vocab_size - N_SPECIAL, generator=generator)[: n - 1]
    return ids


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_padding_does_not_change_the_output(norm: str) -> None:
    torch.manual_seed(0)
    model = CellTransformer(_config(norm=norm)).eval()
    ids = _cells([7, 4, 9])
    logits, cls = model(ids, ids == PAD)
    padded = torch.cat([ids, torch.full((3, 13), PAD)], dim=1)  # 13 more <PAD> columns
    logits_padded, cls_padded = model(padded, padded == PAD)
    torch.testing.assert_close(logits_padded, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls_padded, cls, atol=1e-5, rtol=1e-5)
    # each cell alone (no padding at all) gives the same answer as in the padded batch
    for i, n in enumerate([7, 4, 9]):
        alone, _ = model(ids[i : i + 1, :n], None)
        torch.testing.assert_close(alone[0], logits[i], atol=1e-5, rtol=1e-5)


def test_padding_mask_matters() -> None:
    """Without the mask, padding would leak into <CLS> (the test above is not vacuous)."""
    torch.manual_seed(0)
    model = CellTransformer(_config()).eval()
    ids = torch.cat([_cells([5]), torch.full((1, 10), PAD)], dim=1)
    masked, _ = model(ids, ids == PAD)
    unmasked, _ = model(ids, None)
    assert not torch.allclose(masked, unmasked, atol=1e-4)


def test_gene_order_does_not_matter_without_positions() -> None:
    torch.manual_seed(0)
    model = CellTransformer(_config()).eval()
    ids = _cells([8])
    shuffled = torch.cat([ids[:, :1], ids[:, 1:].flip(1)], dim=1)
    torch.testing.assert_close(model(shuffled)[0], model(ids)[0], atol=1e-5, rtol=1e-5)


def test_shapes_and_reference_configuration() -> None:
    """3 layers, d_model 128, 3 heads of width 32, MLP hidden 64, dropout 0.05, 2048 genes + <CLS>."""
    config = ModelConfig(
        n_layers=3,
        d_model=128,
        n_heads=3,
        head_dim=32,
        head_hidden=64,
        dropout=0.05,
        max_length=2049,
        vocab_size=N_SPECIAL + 2048,
        n_classes=16,
    )
    model = CellTransformer(config)
    assert model.blocks[0].attn.qkv.weight.shape == (3 * 3 * 32, 128)
    assert model.head.fc.weight.shape == (64, 128)
    ids = torch.randint(N_SPECIAL, N_SPECIAL + 2048, (1, 2049))
    ids[:, 0] = CLS
    with torch.no_grad():
        logits, cls = model.eval()(ids)
    assert logits.shape == (1, 16) and cls.shape == (1, 128)


def test_value_embedding_is_added() -> None:
    torch.manual_seed(0)
    model = CellTransformer(_config(n_values=10)).eval()
    ids = _cells([6, 6])
    low = model(ids, values=torch.zeros_like(ids))[0]
    high = model(ids, values=torch.full_like(ids, 9))[0]
    assert not torch.allclose(low, high)
    with pytest.raises(ValueError, match="value ids"):
        model(ids)


def test_backward_reaches_every_parameter() -> None:
    model = CellTransformer(_config(n_values=4))
    ids = _cells([5, 3])
    logits, _ = model(ids, ids == PAD, torch.ones_like(ids))
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(d_model=0), "d_model must be positive"),
        (dict(n_layers=-1), "n_layers must be positive"),
        (dict(head_dim=0), "head_dim must be positive"),
        (dict(d_model=30, n_heads=4), "not divisible"),
        (dict(norm="middle"), "norm must be"),
        (dict(dropout=1.0), "dropout"),
        (dict(n_values=-2), "n_values"),
        (dict(max_length=1), "max_length"),
        (dict(d_model="big"), "d_model must be int"),
    ],
)
def test_invalid_sizes_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(**changes)


def test_unknown_key_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid keys are: n_layers, d_model"):
        ModelConfig.from_dict({"n_layer": 3})


def test_attention_dropout_is_its_own_setting() -> None:
    """``attention_dropout`` drops attention probabilities only (off by default); ``None`` follows ``dropout``."""
    assert CellTransformer(_config(dropout=0.1)).blocks[0].attn.dropout == 0.0
    assert CellTransformer(_config(dropout=0.1, attention_dropout=None)).blocks[0].attn.dropout == 0.1
    assert CellTransformer(_config(dropout=0.1, attention_dropout=0.0)).blocks[0].attn.dropout == 0.0
    ids = _cells([9, 6])
    torch.manual_seed(0)
    noisy = CellTransformer(_config(dropout=0.0, attention_dropout=0.5)).train()
    assert not torch.allclose(noisy(ids, ids == PAD)[0], noisy(ids, ids == PAD)[0])
    torch.manual_seed(0)
    quiet = CellTransformer(_config(dropout=0.0, attention_dropout=0.0)).train()
    torch.testing.assert_close(quiet(ids, ids == PAD)[0], quiet(ids, ids == PAD)[0])
    with pytest.raises(ConfigError, match="attention_dropout"):
        _config(attention_dropout=1.0)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("n_layers", [1, 3])
def test_prediction_computes_only_the_cls_state_in_the_last_block(norm: str, n_layers: int) -> None:
    """Outside training the last block computes <CLS> alone: the same logits and embedding as pooling the
    full encoder output (values and padding included), at every depth and with either LayerNorm place."""
    torch.manual_seed(0)
    model = CellTransformer(_config(norm=norm, n_layers=n_layers, n_values=7)).eval()
    ids = _cells([9, 4, 12, 2])
    values = torch.randint(1, 5, ids.shape).masked_fill(ids == PAD, 0)
    logits, cls = model(ids, ids == PAD, values)
    states = model.encode(ids, ids == PAD, values)  # every position, as training computes them
    assert states.shape == (4, 12, 32)
    full_cls = model.pool(states, ids == PAD)
    torch.testing.assert_close(cls, full_cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, model.head(full_cls), atol=1e-5, rtol=1e-5)
    assert model.encode(ids, ids == PAD, values, cls_only=True).shape == (4, 1, 32)
    mean = CellTransformer(_config(norm=norm, n_layers=n_layers, pooling="mean")).eval()
    assert mean.encode(ids, ids == PAD).shape == (4, 12, 32)  # mean pooling needs every state


def test_an_ensemble_averages_its_members_probabilities_and_joins_their_embeddings() -> None:
    from cellformer.model import TransformerEnsemble, build_model

    torch.manual_seed(0)
    assert isinstance(build_model(_config(members=1)), CellTransformer)
    assert isinstance(build_model(_config()), TransformerEnsemble)  # the default: 4 members
    ensemble = build_model(_config(members=3)).eval()
    assert isinstance(ensemble, TransformerEnsemble) and len(ensemble.members) == 3
    first, second = (member.blocks[0].attn.qkv.weight for member in ensemble.members[:2])
    assert not torch.equal(first, second)  # each member is initialised independently
    ids = _cells([9, 4, 12])
    logits, embedding = ensemble(ids, ids == PAD)
    outputs = [member(ids, ids == PAD) for member in ensemble.members]
    mean = torch.stack([torch.softmax(member_logits, dim=-1) for member_logits, _ in outputs]).mean(dim=0)
    torch.testing.assert_close(torch.softmax(logits, dim=-1), mean)
    torch.testing.assert_close(embedding, torch.cat([pooled for _, pooled in outputs], dim=-1))
    assert embedding.shape == (3, 3 * 32) and _config(members=3).embedding_width == 96
    assert len(ensemble.gene_tables()) == 3 and ensemble.value_embedding is None
    with pytest.raises(ConfigError, match="members"):
        _config(members=0)


def test_training_through_the_cls_state_alone_gives_the_full_gradients() -> None:
    """In training the last block also computes <CLS> alone: every parameter gets the gradient it gets
    when every state is computed and then pooled (dropout off, so both see the same network)."""
    torch.manual_seed(0)
    model = CellTransformer(_config(dropout=0.0, n_values=7)).train()
    ids = _cells([9, 4, 12, 2])
    values = torch.randint(1, 5, ids.shape).masked_fill(ids == PAD, 0)
    model(ids, ids == PAD, values)[0].logsumexp(dim=-1).sum().backward()
    fast = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    states = model.encode(ids, ids == PAD, values)
    model.head(model.pool(states, ids == PAD)).logsumexp(dim=-1).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(fast[name], p.grad, atol=1e-6, rtol=1e-4, msg=name)
