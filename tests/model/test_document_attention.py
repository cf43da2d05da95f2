"""Document-aware attention of packed rows (``train.reset_attention_mask`` / ``reset_position_ids``): a packed
row's logits and gradients equal those of each document run alone (the independent reference), for MLA with
MTP, query-chunked attention and GQA; without the reset they do not."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

from pangu_ms.config import ConfigError, load_config
from pangu_ms.data.packing import document_positions, pack_documents
from pangu_ms.model.build import build_model
from tests.conftest import tiny_overrides

DOCS = (5, 7, 4)                      # document lengths of one packed row of 16 inputs
S = sum(DOCS)


def _row():
    rng = np.random.default_rng(3)
    tokens = rng.integers(3, 64, S + 1).astype(np.int32)          # inputs tokens[:S], labels tokens[1:]
    segments = np.repeat(np.arange(len(DOCS)), DOCS).astype(np.int32).reshape(1, S)
    bounds = np.cumsum((0,) + DOCS)
    return tokens, segments, list(zip(bounds[:-1], bounds[1:]))


def _model(**extra):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    return build_model(load_config(None, tiny_overrides(**{"model.mtp_depth": 1, **extra})))


def _packed(net, tokens, segments, reset=True):
    x, y = Tensor(tokens[None, :S]), Tensor(tokens[None, 1:])
    if not reset:
        return net(x, y)
    return net(x, y, Tensor(segments), Tensor(document_positions(segments)))


def test_document_positions_hand_computed():
    assert document_positions(np.array([[0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 2, 2]])).tolist() == [
        [0, 1, 0, 1], [0, 1, 2, 3], [0, 0, 0, 1]]
    packed = pack_documents([[5, 6, 7], [8], [9, 10, 11, 12]], eod_id=2, seq_len=3)      # the packing docstring
    assert document_positions(packed.segment_ids).tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]


@pytest.mark.parametrize("extra", [{}, {"long_context.attention_chunk": 4},
                                   {"model.attention_type": "gqa", "model.num_kv_heads": 1,
                                    "model.head_dim": 8}],
                         ids=["mla_mtp", "chunked", "gqa"])
def test_packed_row_logits_equal_each_document_alone(extra):
    net = _model(**extra)
    tokens, segments, spans = _row()
    logits, mtp_logits = _packed(net, tokens, segments)[:2]
    logits, mtp = logits.asnumpy(), mtp_logits[0].asnumpy()
    worst = 0.0
    for a, b in spans:
        alone, alone_mtp = net(Tensor(tokens[None, a:b]), Tensor(tokens[None, a + 1:b + 1]))[:2]
        worst = max(worst, np.abs(logits[a:b] - alone.asnumpy()).max())
        # MTP position i reads token i+1: the document's positions but its last see only its own tokens
        np.testing.assert_allclose(mtp[a:b - 1], alone_mtp[0].asnumpy(), rtol=0, atol=2e-5)
    assert worst < 2e-5
    crossing = _packed(net, tokens, segments, reset=False)[0].asnumpy()
    a, b = spans[1]
    assert np.abs(crossing[a:b] - logits[a:b]).max() > 1e-3         # without the reset documents see each other


def test_packed_row_gradients_equal_the_sum_over_documents():
    net = _model()
    params = net.trainable_params()
    tokens, segments, spans = _row()
    weights = np.random.default_rng(5).standard_normal((S, 64)).astype(np.float32)

    def packed(x, y, seg, pos):
        return (net(x, y, seg, pos)[0] * Tensor(weights)).sum()

    def alone(x, y, w):
        return (net(x, y)[0] * w).sum()
    got = ms.grad(packed, grad_position=None, weights=params)(
        Tensor(tokens[None, :S]), Tensor(tokens[None, 1:]), Tensor(segments), Tensor(document_positions(segments)))
    want = [np.zeros(p.shape, np.float32) for p in params]
    for a, b in spans:
        grads = ms.grad(alone, grad_position=None, weights=params)(
            Tensor(tokens[None, a:b]), Tensor(tokens[None, a + 1:b + 1]), Tensor(weights[a:b]))
        want = [w + g.asnumpy() for w, g in zip(want, grads)]
    for p, g, w in zip(params, got, want):
        np.testing.assert_allclose(g.asnumpy(), w, rtol=1e-4, atol=1e-5, err_msg=p.name)
    assert sum(float(np.abs(w).sum()) for w in want) > 0


def test_document_mask_blocks_other_documents():
    from pangu_ms.model.transformer import document_mask
    mask = document_mask(Tensor(np.array([[0, 0, 1]], np.int32)), ms.float32).asnumpy()[0, 0]
    assert (mask == 0).tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    assert ops.isfinite(Tensor(mask)).all()


@pytest.mark.parametrize("key", ["train.reset_attention_mask", "train.reset_position_ids"])
def test_reset_needs_prepared_documents(key):
    with pytest.raises(ConfigError, match=f"{key}: needs document boundaries .*data.source is 'synthetic'"):
        load_config(None, tiny_overrides(**{key: "true", "data.source": "synthetic"}))
    with pytest.raises(ConfigError, match=f"{key}: applies to the pretrain and long_context stages"):
        load_config("yaml/tiny_cpu_sft.yaml", [f"{key}=true"])
