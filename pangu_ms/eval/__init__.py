"""Evaluation of trained models: passkey (needle-in-a-haystack) retrieval over lengths x depths, held-out loss
at a given length, and the heat-map plot (see ``passkey.py``, ``tools/eval_passkey.py``, docs/long_context.md)."""
from .passkey import (FILLER, PasskeySample, evaluate_passkey, heldout_loss, make_passkey_sample,
                      passkey_documents, plot_heatmap, write_passkey_corpus)

__all__ = ["FILLER", "PasskeySample", "evaluate_passkey", "heldout_loss", "make_passkey_sample",
           "passkey_documents", "plot_heatmap", "write_passkey_corpus"]
