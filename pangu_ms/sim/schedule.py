"""Pipeline schedules: bubble, in-flight micro-batches, and the assignment of blocks to (virtual) stages.

With p stages, v virtual chunks per stage, m micro-batches per step and T the fwd+bwd time of one micro-batch
on one stage (all its chunks):

* 1F1B (PipeDream-flush):   step = (m + p - 1) * T,        bubble fraction (p-1) / (m + p - 1)
* interleaved (Megatron):   step = (m + (p - 1)/v) * T,    bubble fraction ((p-1)/v) / (m + (p-1)/v)
* DualPipe (DeepSeek-V3):   bubble = (p/2 - 1) * (F&B + B - 3W); with F = T/3, B = 2T/3, W = B/2 and an
                            overlapped F&B = F + B this is (p/2 - 1) * 2T/3.

With unequal stages the steady state runs at the slowest stage: step = m * T_max + bubble(T_mean).

In-flight micro-batches on the first stage (its activations must all be stored):
* 1F1B: min(m, p) micro-batches of all its layers;
* interleaved: Megatron's warm-up of 2(p-1) + (v-1)p chunk forwards, + 1, capped at m*v chunks
  (= p (1 + (p-1)/(p v)) micro-batches' worth of the stage's layers, Korthikanti et al. 2022);
* DualPipe: device i holds stage i of the forward-direction pipeline and stage p-1-i of the reverse one
  (DeepSeek-V3 sec. 3.2.1; deepseek-ai/DualPipe example: ``full_modules[pp_rank]``, ``full_modules[pp_size - 1 -
  pp_rank]``), so its parameters are those of two *different* stages (Table 2's "2x" is the pair, not twice its
  heaviest stage) and its activations are min(m/2, p - i) micro-batches of stage i plus min(m/2, i + 1) of stage
  p-1-i: p + 1 stage-micro-batches on every device (Table 2: PP + 1). See ``dualpipe_inflight``.

Stage split: which blocks each virtual stage holds is :func:`pangu_ms.parallel.split.pipeline_split` (shared
with training); this module gives it the chunks and in-flight micro-batches of each device (``device_chunks``).
"""
from __future__ import annotations


def bubble_fraction(schedule: str, p: int, m: int, v: int = 1) -> float:
    """Idle fraction of the step for uniform stages."""
    units = bubble_units(schedule, p, v)
    return units / (m + units)


def bubble_units(schedule: str, p: int, v: int = 1) -> float:
    """Bubble in units of T (one micro-batch fwd+bwd on one stage)."""
    if p <= 1:
        return 0.0
    if schedule == "1f1b":
        return float(p - 1)
    if schedule == "interleaved":
        return (p - 1) / v
    if schedule == "dualpipe":
        return max(0.0, (p / 2 - 1) * 2.0 / 3.0)
    raise ValueError(f"unknown pipeline schedule '{schedule}'")


def inflight_chunks(schedule: str, p: int, m: int, v: int = 1, stage: int = 0) -> float:
    """Chunk-activations stage ``stage`` holds at its peak, in units of one chunk (= stage layers / v)."""
    if p <= 1:
        return float(v)                      # one micro-batch of every chunk, freed after its backward
    if schedule == "interleaved":
        return float(min(m * v, 2 * (p - stage - 1) + (v - 1) * p + 1))
    if schedule == "dualpipe":
        return float(min(m, p + 1) * v)
    return float(min(m, p - stage) * v)


def dualpipe_pair(p: int, stage: int) -> int:
    """The reverse-direction stage co-located with ``stage`` under DualPipe."""
    return p - 1 - stage


def dualpipe_inflight(p: int, m: int, device: int) -> tuple:
    """(micro-batches of stage ``device``, micro-batches of stage p-1-device) held by DualPipe device ``device``;
    each direction carries m/2 of the m micro-batches."""
    half = max(1.0, m / 2.0)
    return float(min(half, p - device)), float(min(half, device + 1))


def unpaired_fraction(schedule: str, p: int, m: int, v: int = 1, stage: int = 0) -> float:
    """Fraction of stage ``stage``'s forward (and of its backward) passes that run without an independent partner
    pass of another micro-batch, i.e. outside the FWD-BWD pairs that hide the EP all-to-all (sim/overlap.py).

    * no pipeline (p = 1): the first forward and the last backward (Megatron-Core combined 1F1B): 1 / m;
    * 1F1B: the p - s - 1 warm-up forwards plus the one extra warm-up forward that makes the steady-state pair
      independent on the last stage (Megatron-Core, MindSpeed fb-overlap): (p - s) / m;
    * interleaved: Megatron's 2(p - s - 1) + (v - 1) p warm-up chunk passes + 1, of m v;
    * DualPipe (deepseek-ai/DualPipe ``step``): with half-rank r = min(s, p-1-s) a device runs
      2 (m/2 - p + r + 1) paired F&B passes in its main loop and p/2 - r - 1 in the next, of m forwards:
      unpaired (1.5 p - r - 1) / m.
    Clamped to [0, 1] (1: every pass is warm-up or cool-down).
    """
    if m <= 0:
        return 1.0
    if p <= 1:
        return min(1.0, 1.0 / m)
    if schedule == "interleaved":
        return min(1.0, (2 * (p - stage - 1) + (v - 1) * p + 1) / (m * v))
    if schedule == "dualpipe":
        r = min(stage, p - 1 - stage)
        return min(1.0, max(0.0, (1.5 * p - r - 1) / m))
    return min(1.0, (p - stage) / m)


def stage_sums(chunk_sums: list, p: int, v: int) -> list:
    """Physical stage s holds virtual chunks s, s+p, s+2p, ... (Megatron interleaving)."""
    return [sum(chunk_sums[s + j * p] for j in range(v)) for s in range(p)]


def device_chunks(schedule: str, p: int, m: int, v: int = 1) -> list:
    """Per device, the virtual-stage chunks it holds and the micro-batches of each held at its memory peak.

    Returns one list of ``(chunk, micro_batches)`` per device; chunk c is the c-th virtual stage of the split.

    * 1F1B / interleaved: device s holds chunks s, s+p, ..., s+(v-1)p. Its ``inflight_chunks`` chunk-activations
      are counted as inflight_chunks / v micro-batches of each of its chunks (the stage average; Megatron's
      warm-up holds somewhat more of the earlier chunks, which this model does not distinguish).
    * DualPipe (p > 1): device d holds stage d and its mirror p-1-d with ``dualpipe_inflight`` micro-batches.
    """
    if schedule == "dualpipe" and p > 1:
        return [list(zip((d, dualpipe_pair(p, d)), dualpipe_inflight(p, m, d))) for d in range(p)]
    return [[(s + j * p, inflight_chunks(schedule, p, m, v, s) / v) for j in range(v)] for s in range(p)]
