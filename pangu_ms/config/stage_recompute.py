"""Per-pipeline-stage full-layer recompute: ``train.recompute_layers_per_stage`` (MindFormers ``recompute: [...]``).

``[n_0, ..., n_{K-1}]`` with one entry per *virtual* pipeline stage, K = parallel.pp * parallel.vpp, in the order
of ``parallel.layers_per_virtual_stage`` (virtual stage c runs on pipeline rank c mod pp; with vpp = 1 simply one
entry per stage): the first n_c decoder layers of virtual stage c are recomputed whole (only their input is
stored). MTP modules are not counted (``train.recompute: [mtp]`` covers them). Empty list = off.

Why per stage: under 1F1B the first stage holds pp micro-batches in flight and the last one, so the early stages
need recompute and the late ones need little; MindFormers' ``recompute: [n0, n1, ...]`` expresses exactly this.
With vpp > 1 MindFormers takes a list of lists ``[[n(chunk 0, stage 0), ...], [n(chunk 1, stage 0), ...]]``,
which is the same K numbers (``pangu_ms/integrations/mindformers_yaml.py`` writes either form).

The layers per virtual stage come from the one pipeline split (``pangu_ms/parallel/split.py``); this module is
pure (no split of its own) so that the model side can use :func:`stage_recompute_layers` with the split the
caller passes, and ``pangu_ms.parallel.stage_recompute.recompute_layer_indices(cfg)`` does both in one call.
"""
from __future__ import annotations

from .errors import ConfigError
from .recompute import FULL, parse_recompute

KEY = "train.recompute_layers_per_stage"


def parse_stage_counts(value, stages: int, key: str = KEY) -> tuple:
    """``value`` (list of ints >= 0, one per virtual stage, or empty) -> tuple; one ConfigError naming ``key``."""
    if value is None or value == []:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, int) and not isinstance(n, bool)
                                                       for n in value):
        raise ConfigError(f"{key}: expected a list of layer counts (integers), one per virtual pipeline stage, "
                          f"got {value!r}")
    if len(value) != stages:
        raise ConfigError(f"{key}: {len(value)} entries, but parallel.pp*vpp = {stages} virtual stages "
                          f"(one count per virtual stage)")
    neg = [n for n in value if n < 0]
    if neg:
        raise ConfigError(f"{key}: counts must be >= 0, got {list(value)}")
    return tuple(value)


def stage_count_problems(counts, decoder_layers, key: str = KEY) -> list:
    """Problems of ``counts`` against the decoder layers per virtual stage of the split (empty = valid)."""
    if not counts:
        return []
    if len(counts) != len(decoder_layers):
        return [f"{key}: {len(counts)} entries, but the pipeline split has {len(decoder_layers)} virtual stages"]
    return [f"{key}: virtual stage {c} recomputes {n} layers but holds only {have} decoder layers "
            f"(split {list(decoder_layers)})" for c, (n, have) in enumerate(zip(counts, decoder_layers)) if n > have]


def stage_recompute_layers(counts, decoder_layers) -> frozenset:
    """Global decoder-layer indices to recompute whole: the first ``counts[c]`` layers of each virtual stage c,
    where ``decoder_layers[c]`` decoder layers (MTP excluded) sit on virtual stage c, in model order.

    >>> sorted(stage_recompute_layers([2, 0, 1, 1], [3, 3, 3, 2]))
    [0, 1, 6, 9]
    """
    problems = stage_count_problems(counts, decoder_layers)
    if problems:
        raise ConfigError(problems[0])
    out, start = set(), 0
    for n, have in zip(counts or [0] * len(decoder_layers), decoder_layers):
        out.update(range(start, start + n))
        start += have
    return frozenset(out)


def validate_stage_recompute(cfg) -> tuple:
    """Config-level checks of ``train.recompute_layers_per_stage`` (type, length, sign, the combination with
    ``train.recompute: full``; with pp = vpp = 1 also the layer count). The per-stage bound for pp > 1 needs the
    split and is checked in ``pangu_ms.parallel.stage_recompute`` (layout checks). Returns the parsed counts."""
    p, m = cfg.parallel, cfg.model
    counts = parse_stage_counts(cfg.train.recompute_layers_per_stage, p.pp * p.vpp)
    if counts and parse_recompute(cfg.train.recompute, "train.recompute") == FULL:
        raise ConfigError(f"{KEY}: {list(counts)} is set, but train.recompute is 'full' (every layer is already "
                          f"recomputed whole); use one of the two")
    if counts and p.pp * p.vpp == 1:
        problems = stage_count_problems(counts, [m.num_layers])
        if problems:
            raise ConfigError(problems[0])
    return counts


def single_stage_recompute_layers(cfg) -> frozenset:
    """The layers recomputed whole for a run without pipeline stages (pp = vpp = 1: one stage holding every decoder
    layer), for the model side, which cannot import the split: the first ``n_0`` layers. Other layouts need the
    split: ``pangu_ms.parallel.stage_recompute.recompute_layer_indices(cfg)``."""
    p = cfg.parallel
    if p.pp * p.vpp != 1:
        raise ConfigError(f"{KEY}: parallel.pp*vpp = {p.pp * p.vpp}: the layers follow from the pipeline split "
                          f"(pangu_ms.parallel.stage_recompute.recompute_layer_indices)")
    counts = parse_stage_counts(cfg.train.recompute_layers_per_stage, 1)
    return stage_recompute_layers(counts, [cfg.model.num_layers]) if counts else frozenset()
