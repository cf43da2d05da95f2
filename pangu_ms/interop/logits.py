"""The model's float32 logits of a checkpoint for given token ids (for checking conversions)."""
from __future__ import annotations

import numpy as np

from .errors import ConversionError


def checkpoint_logits(checkpoint: str, ids: np.ndarray, config: str | None = None) -> np.ndarray:
    """Logits [batch, seq, vocab] (float32, main head, no MTP) for int token ids [batch, seq]."""
    import mindspore as ms
    from ..model import build_model
    from ..train.checkpoint import load_checkpoint, resolve_checkpoint
    from .hf_export import checkpoint_recipe
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ConversionError(f"--ids: want int token ids [batch, seq], got {ids.dtype} {list(ids.shape)}")
    directory = resolve_checkpoint(checkpoint, "--checkpoint")
    cfg = checkpoint_recipe(directory, config)
    if ids.size and (ids.min() < 0 or ids.max() >= cfg.model.vocab_size):
        raise ConversionError(f"--ids: token ids must lie in [0, {cfg.model.vocab_size}), got "
                              f"{ids.min()}..{ids.max()}")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = build_model(cfg)
    load_checkpoint(net, directory)
    net.set_train(False)
    logits = net(ms.Tensor(ids.astype(np.int32)))[0].asnumpy()
    return logits.reshape(ids.shape[0], ids.shape[1], -1).astype(np.float32)


__all__ = ["checkpoint_logits"]
