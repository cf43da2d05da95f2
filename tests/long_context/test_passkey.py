"""Passkey generator puts the key where it says; evaluation runs on a model that was never extended."""
import json

import numpy as np
import pytest

from pangu_ms.eval import passkey as pk

class CharTok:
    """Deterministic stand-in tokenizer (one token per character), so the test never depends on prepared data
    lying around on the machine."""
    vocab_size = 128

    def encode(self, text):
        return [ord(c) % 128 for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


@pytest.fixture(scope="module")
def tok():
    return CharTok()


@pytest.mark.parametrize("length", [128, 200, 512])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_key_is_where_it_says(tok, length, depth):
    s = pk.make_passkey_sample(tok, length, depth, key="48213")
    assert len(s.ids) == length
    needle = tok.encode(pk.NEEDLE.format(key="48213"))
    assert s.ids[s.needle_pos: s.needle_pos + len(needle)] == needle
    key = tok.encode("#48213")
    assert s.ids[s.key_pos: s.key_pos + len(key)] == key
    assert s.ids[s.answer_start:] == tok.encode(pk.ANSWER.format(key="48213"))
    n_fill = length - len(needle) - len(tok.encode(pk.QUESTION)) - s.answer_len
    assert s.needle_pos == round(depth * n_fill)
    assert tok.decode(s.ids).count("48213") == 3                     # twice in the needle, once as the answer
    q = tok.encode(pk.QUESTION)
    assert s.ids[s.answer_start - len(q): s.answer_start] == q


def test_too_short_raises(tok):
    with pytest.raises(ValueError, match="shorter"):
        pk.make_passkey_sample(tok, 20, 0.5)


def test_training_documents(tmp_path, tok):
    docs = pk.passkey_documents(20, 40, 110, seed=1)
    assert docs == pk.passkey_documents(20, 40, 110, seed=1)
    for d in docs:
        key = d.split("The pass key is #")[1].split(".")[0]
        assert key.isdigit() and 4 <= len(key) <= 5
        assert d.rstrip().endswith(pk.QUESTION + " #" + key + ".")
    path = pk.write_passkey_corpus(str(tmp_path / "p.jsonl"), 5, 40, 110)
    assert len([json.loads(x)["text"] for x in open(path)]) == 5


def _occurrences_before_question(doc):
    key = doc.split("The pass key is #")[1].split(".")[0]
    body = doc[: doc.rindex(pk.QUESTION)]
    return key, body.count("#" + key)


def test_max_reminders_bounds_key_occurrences(tmp_path):
    # max_reminders=0: the needle (which names the key twice) is the key's only occurrence before the question
    path = pk.write_passkey_corpus(str(tmp_path / "far.jsonl"), 50, 40, 110, seed=3, max_reminders=0)
    docs = [json.loads(x)["text"] for x in open(path)]
    assert len(docs) == 50
    for d in docs:
        key, n = _occurrences_before_question(d)
        assert n == 2 and pk.REMINDER.format(key=key) not in d
    # max_reminders=2: 0..2 reminders beside the needle, and every count occurs over 50 documents
    counts = {_occurrences_before_question(d)[1] - 2
              for d in pk.passkey_documents(50, 40, 110, seed=3, max_reminders=2)}
    assert counts == {0, 1, 2}


def _needle_depth(doc):
    """Where the needle starts, as a fraction of the text before the question (0 = at the start)."""
    return doc.index("The pass key is #") / doc.rindex(pk.QUESTION)


def test_far_fraction_puts_needles_in_the_first_zone():
    uniform = [_needle_depth(d) for d in pk.passkey_documents(200, 100, 250, seed=5, max_reminders=0)]
    far = [_needle_depth(d) for d in pk.passkey_documents(200, 100, 250, seed=5, max_reminders=0, far_fraction=1.0)]
    half = [_needle_depth(d) for d in pk.passkey_documents(200, 100, 250, seed=5, max_reminders=0, far_fraction=0.5)]
    assert max(far) <= 0.25 and np.mean(np.asarray(uniform) <= 0.25) < 0.4    # uniform: ~a quarter in the zone
    assert 0.5 < np.mean(np.asarray(half) <= 0.25) < 0.8                       # half forced + a quarter of the rest
    assert pk.passkey_documents(20, 40, 110, seed=1, far_fraction=0.0) == pk.passkey_documents(20, 40, 110, seed=1)
    with pytest.raises(ValueError, match="far_fraction=1.5"):
        pk.passkey_documents(2, 40, 110, far_fraction=1.5)


def test_evaluate_unextended_model_and_heatmap(tmp_path, small_cfg):
    import mindspore as ms
    from pangu_ms.model import build_model
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg = small_cfg(**{"model.vocab_size": 512, "model.max_position_embeddings": 256})
    net = build_model(cfg, seed=0)
    t = CharTok()
    res = pk.evaluate_passkey(net, t, [150, 200], [0.0, 1.0], trials=2, graph=False)
    acc = np.asarray(res["accuracy"])
    assert acc.shape == (2, 2) and ((acc >= 0) & (acc <= 1)).all()
    assert np.isfinite(res["logprob"]).all()
    assert "| 150 |" in pk.format_table(res)
    png = pk.plot_heatmap(res, str(tmp_path / "h.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
