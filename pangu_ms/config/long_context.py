"""Long-context extension section of the recipe (``long_context:``), used when ``stage.name: long_context``.

The stage continues training from a pretraining checkpoint (``stage.init_from``) through a list of sub-stages
(``long_context.schedule``), each with its own sequence length, RoPE base (optionally NTK / YaRN scaled), LR
curve, batch and data. Sub-stage *i* starts from the final weights of sub-stage *i-1* (the first one from
``stage.init_from``); the optimizer state starts fresh in every sub-stage. See ``pangu_ms/train/long_context.py``
and ``docs/long_context.md``.

Published schedule (Pangu Ultra, inherited by Pangu Ultra MoE; ../shared/docs/paper-facts.md §4): the base is
raised, not interpolated: 8K -> 32K with base 1.6e6 (batch 384, lr 7.5e-6), 32K -> 128K with base 2.56e7
(batch 96, lr 7.5e-6); base chosen offline by needle-in-a-haystack tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ROPE_SCALINGS = ("none", "ntk", "yarn")


@dataclass
class LongContextStep:
    """One sub-stage of the long-context schedule.

    Attributes:
        name: label used in logs and as the sub-stage's output sub-directory ``<train.output_dir>/<i>_<name>``
            (empty: ``s<seq_length>``).
        seq_length: training sequence length of the sub-stage (becomes ``train.seq_length``).
        rope_theta: RoPE base for this sub-stage (becomes ``model.rope_theta``). 0 keeps the recipe's base.
        max_position_embeddings: length the RoPE tables are built for; 0 means ``seq_length``.
        rope_scaling: ``none`` (plain RoPE with ``rope_theta``: the published "raise the base" method),
            ``ntk`` (NTK-aware: base multiplied by ``factor^(D/(D-2))``, D = rotary dim) or ``yarn`` (YaRN:
            per-frequency interpolation by ``factor`` with a linear ramp between beta_fast = 32 and
            beta_slow = 1 rotations over ``rope_original_max_position``, plus the attention temperature
            ``0.1 ln(factor) + 1`` applied to the rotary cos/sin tables).
        rope_scaling_factor: scaling factor s of ``ntk`` / ``yarn`` (typically new length / old length).
        rope_original_max_position: pre-extension context length used by ``yarn``; 0 = the previous
            sub-stage's (or the recipe's) ``train.seq_length``.
        steps: optimizer steps of the sub-stage.
        global_batch_size: sequences per optimizer step (0 keeps ``train.global_batch_size``).
        micro_batch_size: sequences per micro-batch per DP rank (0 keeps ``parallel.micro_batch_size``, capped
            at the global batch per DP rank).
        lr / min_lr / warmup_steps / lr_schedule: the sub-stage's LR curve (warm-up from 0, then cosine / WSD /
            constant down to ``min_lr``); the published 718B value is a constant-ish 7.5e-6.
        cp: context-parallel degree of the sub-stage on Ascend (0 keeps ``parallel.cp``); the sequence dim of
            input_ids / activations and the attention's S dim are sharded over cp by ``pangu_ms/parallel/plan``.
        data_path: prepared data of this sub-stage (packed at ``seq_length``). Empty: ``<data.path>_s<seq_length>``,
            prepared on first use from ``data_corpus`` with the pretraining tokenizer.
        data_corpus: corpora to prepare ``data_path`` from (``name[:weight],...`` or files); empty: ``data.corpus``.
            Long documents are packed (EOD-separated) into rows of ``seq_length + 1`` tokens.
        data_max_docs: keep at most this many documents per corpus when preparing (0 = ``data.max_docs``).
    """

    name: str = ""
    seq_length: int = 512
    rope_theta: float = 0.0
    max_position_embeddings: int = 0
    rope_scaling: str = field(default="none", metadata={"choices": ROPE_SCALINGS})
    rope_scaling_factor: float = 1.0
    rope_original_max_position: int = 0
    steps: int = 100
    global_batch_size: int = 0
    micro_batch_size: int = 0
    lr: float = 7.5e-6
    min_lr: float = 7.5e-7
    warmup_steps: int = 0
    lr_schedule: str = field(default="cosine", metadata={"choices": ("cosine", "wsd", "constant")})
    cp: int = 0
    data_path: str = ""
    data_corpus: str = ""
    data_max_docs: int = 0


@dataclass
class LongContextConfig:
    """Long-context extension.

    The first four fields describe the model that a config *is* (they are read by the attention layers, so a
    run directory's ``config.yaml`` rebuilds the model exactly as trained); the runner fills them in for each
    sub-stage from the schedule. ``schedule`` is the extension itself.

    Attributes:
        attention_chunk: query-chunk size of the memory-aware CPU attention (``ChunkedCausalAttention`` in
            ``pangu_ms/backend.py``): scores are built for ``attention_chunk`` queries at a time against only the
            keys they can see (causal truncation), so the transient score/probability tensor is
            ``B*N*chunk*S`` instead of ``B*N*S*S``. 0 = full attention. Ignored on Ascend (FlashAttentionScore
            is already blockwise).
        rope_scaling: RoPE scaling of the model built from this config: ``none`` / ``ntk`` / ``yarn`` (see
            :class:`LongContextStep`); the runner copies the current sub-stage's value here.
        rope_scaling_factor: its factor.
        rope_original_max_position: YaRN's original context length (0 = no YaRN ramp information; ``yarn``
            then uses ``model.max_position_embeddings / rope_scaling_factor``).
        schedule: the sub-stages, run in order (lengths must not decrease). Empty: nothing to run (an error for
            ``stage.name: long_context``).
        passkey_eval_lengths: lengths at which ``tools/eval_passkey.py`` evaluates by default (empty: the
            pretraining length and 2x / 4x of it).
    """

    attention_chunk: int = 0
    rope_scaling: str = field(default="none", metadata={"choices": ROPE_SCALINGS})
    rope_scaling_factor: float = 1.0
    rope_original_max_position: int = 0
    schedule: list[LongContextStep] = field(default_factory=list)
    passkey_eval_lengths: list[int] = field(default_factory=list)
