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

Stage split: blocks are cut into p*v contiguous chunks minimising the largest chunk time (``partition``); when a
device of that split runs out of memory, ``memory_aware_partition`` finds the fastest split whose every device
fits, with the chunks and in-flight micro-batches of each device from ``device_chunks``.
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


def warmup_fraction(schedule: str, p: int, m: int, v: int = 1) -> float:
    """Fraction of a stage's forward/backward passes that run outside the 1F1B steady state."""
    if p <= 1:
        return 0.0
    if schedule == "interleaved":
        w = min(m * v, 2 * (p - 1) + (v - 1) * p)
        return w / (m * v)
    if schedule == "dualpipe":
        return min(1.0, (p / 2) / m)
    return min(1.0, (p - 1) / m)


def partition(costs: list, k: int) -> list:
    """Split ``costs`` (in order) into k contiguous non-empty groups minimising the largest group sum.

    Returns the k groups as ``(start, end)`` index ranges. Greedy feasibility check + bisection on the answer
    (to 0.1 % of the optimum). Needs len(costs) >= k.
    Assumption: the framework lets each virtual stage take any number of layers (MindSpeed
    ``num_layer_list`` / Megatron ``decoder_first/last_pipeline_num_layers``), so stages are balanced by time.
    """
    n = len(costs)
    if n < k:
        raise ValueError(f"{n} blocks cannot fill {k} stages")
    if k == 1:
        return [(0, n)]

    def groups(limit: float):
        bounds, start, cur = [], 0, 0.0
        for i, c in enumerate(costs):
            # close the group when adding c exceeds the limit, or when each remaining block must open a group
            if i > start and (cur + c > limit or n - i == k - len(bounds) - 1):
                bounds.append((start, i, cur))
                start, cur = i, 0.0
            cur += c
        bounds.append((start, n, cur))
        return bounds

    lo, hi = max(costs), sum(costs)
    best = groups(hi)
    for _ in range(40):
        if hi - lo <= 1e-3 * hi:
            break
        mid = 0.5 * (lo + hi)
        g = groups(mid)
        if len(g) <= k and max(x[2] for x in g) <= mid * (1 + 1e-12):
            hi, best = mid, g
        else:
            lo = mid
    out = [(a, b) for a, b, _ in best]
    while len(out) < k:                      # cannot happen with the forced splits; kept for safety
        out.append((n, n))
    return out


def stage_sums(chunk_sums: list, p: int, v: int) -> list:
    """Physical stage s holds virtual chunks s, s+p, s+2p, ... (Megatron interleaving)."""
    return [sum(chunk_sums[s + j * p] for j in range(v)) for s in range(p)]


def device_chunks(schedule: str, p: int, m: int, v: int = 1) -> list:
    """Per device, the virtual-stage chunks it holds and the micro-batches of each held at its memory peak.

    Returns one list of ``(chunk, micro_batches)`` per device; chunk c is the c-th group of :func:`partition`.

    * 1F1B / interleaved: device s holds chunks s, s+p, ..., s+(v-1)p. Its ``inflight_chunks`` chunk-activations
      are counted as inflight_chunks / v micro-batches of each of its chunks (the stage average; Megatron's
      warm-up holds somewhat more of the earlier chunks, which this model does not distinguish).
    * DualPipe (p > 1): device d holds stage d and its mirror p-1-d with ``dualpipe_inflight`` micro-batches.
    """
    if schedule == "dualpipe" and p > 1:
        return [list(zip((d, dualpipe_pair(p, d)), dualpipe_inflight(p, m, d))) for d in range(p)]
    return [[(s + j * p, inflight_chunks(schedule, p, m, v, s) / v) for j in range(v)] for s in range(p)]


def bounds_from_counts(counts: list) -> list:
    """``[3, 2, 4]`` (blocks per chunk) -> ``[(0, 3), (3, 5), (5, 9)]``."""
    out, start = [], 0
    for c in counts:
        out.append((start, start + c))
        start += c
    return out


def _prefix(values: list) -> list:
    out = [0.0]
    for x in values:
        out.append(out[-1] + x)
    return out


def _range_max(values: list):
    """O(1) query ``max(values[a:e])`` (0 for an empty range) from a sparse table built in O(n log n)."""
    table, width = [list(values)], 1
    while 2 * width <= len(values):
        prev = table[-1]
        table.append([max(prev[i], prev[i + width]) for i in range(len(values) - 2 * width + 1)])
        width *= 2

    def query(a: int, e: int) -> float:
        if e <= a:
            return 0.0
        lvl = (e - a).bit_length() - 1
        row = table[lvl]
        return max(row[a], row[e - (1 << lvl)])
    return query


def _fit_independent(n: int, k: int, ok) -> list | None:
    """Split n blocks into k non-empty contiguous chunks with ``ok(c, a, e)`` true for every chunk c = [a, e).

    ``ok`` must be monotone (a sub-interval of an ok interval is ok for the same chunk) and depend only on the
    chunk and its interval. Exact DP over reachable chunk ends: for each chunk, the ends reachable from each
    reachable start form an interval whose right end never decreases with the start (monotonicity), so one
    forward-moving pointer finds them all: O(n * k) calls of ``ok``. Returns the chunks' (start, end) or None.
    """
    starts, parents = [0], []
    for c in range(k):
        last = n - (k - c - 1)                 # leave one block for each later chunk
        par, e_ptr, covered = {}, 0, 0
        for a in starts:
            if a >= last:
                break
            e = max(e_ptr, a)
            if e == a:
                if not ok(c, a, a + 1):
                    continue
                e = a + 1
            while e < last and ok(c, a, e + 1):
                e += 1
            e_ptr = e
            for x in range(max(covered, a) + 1, e + 1):
                par[x] = a
            covered = max(covered, e)
        if not par:
            return None
        parents.append(par)
        starts = list(par)                     # inserted in increasing order
    if n not in parents[-1]:
        return None
    out, end = [], n
    for par in reversed(parents):
        out.append((par[end], end))
        end = par[end]
    return out[::-1]


def _fit_mirror(n: int, k: int, time_ok, pair_ok) -> list | None:
    """Split n blocks into k (even) non-empty contiguous chunks where chunks d and k-1-d share constraints.

    ``time_ok(a, e)``: one chunk may hold blocks [a, e); ``pair_ok(d, (a, e), (b0, b))``: chunk d = [a, e) and
    its mirror k-1-d = [b0, b) together fit the device(s) holding them. Both monotone in each interval.
    Outside-in DP over the pairs (0, k-1), (1, k-2), ...: the state after a pair is the uncovered middle [e, b0);
    for each left end e, the smallest feasible right start b0 is found with a forward-moving pointer (b0 never
    decreases as the left chunk grows). States are pruned to the Pareto set (a larger e and a smaller b0 leave
    less to cover); this assumes a smaller middle completes whenever a larger one does, which holds except when
    the remaining chunks are down to single blocks. Returns the chunks' (start, end) or None.
    """
    half = k // 2
    front, history = {0: n}, []
    for d in range(half):
        rest = 2 * (half - d - 1)              # blocks the inner chunks need at least
        new = {}
        for a, b in front.items():
            if rest == 0:                      # innermost pair meets: [a, x) and [x, b)
                for x in range(a + 1, b):
                    if time_ok(a, x) and time_ok(x, b) and pair_ok(d, (a, x), (x, b)):
                        new[x] = (x, a, b)
                        break
                continue
            b0 = a + 1 + rest
            for e in range(a + 1, b - rest):
                if not time_ok(a, e):
                    break
                b0 = max(b0, e + rest)
                while b0 < b and not (time_ok(b0, b) and pair_ok(d, (a, e), (b0, b))):
                    b0 += 1
                if b0 >= b:
                    break
                if e not in new or new[e][0] > b0:
                    new[e] = (b0, a, b)
        if not new:
            return None
        kept, best = {}, n + 1
        for e in sorted(new, reverse=True):     # Pareto: drop (e, b0) when some e' >= e has b0' <= b0
            if new[e][0] < best:
                kept[e], best = new[e], new[e][0]
        history.append(kept)
        front = {e: v[0] for e, v in kept.items()}
    out = [None] * k
    e = next(iter(history[-1]))
    for d in range(half - 1, -1, -1):
        b0, a, b = history[d][e]
        out[d], out[k - 1 - d] = (a, e), (b0, b)
        e = a
    return out


def _fit_greedy_shared(n: int, k: int, time_ok, owner: list, use, tr_max, budget: float, set_aside: list):
    """Split n blocks into k chunks in order, each taking the most blocks that keep its time within bound and its
    device within ``budget``, with ``set_aside[d]`` bytes kept free for each later chunk of device d.

    For devices holding several chunks (interleaved), whose budget couples chunks far apart in the block order.
    ``owner[c]``: the device of chunk c; ``use(c, a, e)``: bytes chunk c = [a, e) adds to its device, transient
    excluded; ``tr_max(a, e)``: largest transient of [a, e) (counted once per device). A heuristic: a split it
    returns fits, but it may miss a fitting split (it never moves an earlier boundary back). Returns the chunks'
    (start, end) or None.
    """
    used, trs = [0.0] * len(set_aside), [0.0] * len(set_aside)
    later = [owner.count(d) for d in range(len(set_aside))]
    out, a = [], 0
    for c in range(k):
        d = owner[c]
        later[d] -= 1

        def ok(e):
            return (time_ok(a, e) and
                    used[d] + use(c, a, e) + max(trs[d], tr_max(a, e)) + later[d] * set_aside[d] <= budget)
        if c == k - 1:
            e = n if ok(n) else a
        else:
            e, last = a, n - (k - c - 1)
            while e < last and ok(e + 1):
                e += 1
        if e == a:
            return None
        used[d] += use(c, a, e)
        trs[d] = max(trs[d], tr_max(a, e))
        out.append((a, e))
        a = e
    return out


def memory_aware_partition(times: list, state_bytes: list, act_bytes: list, transient_bytes: list,
                           devices: list, budget: float) -> list | None:
    """Contiguous split of the blocks over the chunks of ``devices`` minimising the largest chunk time subject to
    every device's memory <= ``budget``; None when no split fits.

    Per-block inputs, in block order: time per micro-batch, model-state bytes of the block on a device holding it,
    stored activation bytes per micro-batch, transient working-set bytes. ``devices`` is :func:`device_chunks`.
    Memory of a device = sum over its chunks c of (state bytes of c + micro-batches(c) x activation bytes of c)
    + the largest transient of its blocks; the caller folds fixed terms (reserve) into ``budget``.
    Assumptions: state bytes add over blocks (memory.model_state_bytes is linear in the parameters); times and
    memory are monotone in the chunk's blocks (all per-block terms are >= 0).

    The optimal bound is one of the chunk-time sums, so it is found by bisection over their distinct values, with
    one feasibility check per bound (memory alone first, at the largest bound):
    * every device holds one chunk (1F1B): :func:`_fit_independent`, exact;
    * DualPipe mirror pairs (device d holds chunks d and k-1-d): :func:`_fit_mirror`, exact up to its pruning;
    * several chunks per device (interleaved): :func:`_fit_greedy_shared`, a heuristic whose splits fit but
      which may miss the fastest fitting split (one bisection step then finds no split, and a larger bound
      is kept).
    """
    n, k = len(times), max((c for held in devices for c, _ in held), default=-1) + 1
    if n < k or k == 0:
        return None
    tp, sp, ap = _prefix(times), _prefix(state_bytes), _prefix(act_bytes)
    rmax = _range_max(transient_bytes)
    mirror = k % 2 == 0 and len(devices) == k and all(
        len(held) == 2 and {c for c, _ in held} == {d, k - 1 - d} for d, held in enumerate(devices))
    single = all(len(held) == 1 for held in devices)
    owner, alpha = [0] * k, [0.0] * k
    for d, held in enumerate(devices):
        for c, mb in held:
            owner[c], alpha[c] = d, mb

    def use(c, a, e):
        return sp[e] - sp[a] + alpha[c] * (ap[e] - ap[a])

    def fits_bound(t_max: float):
        def time_ok(a, e):
            return tp[e] - tp[a] <= t_max
        if mirror:
            def pair_ok(d, left, right):
                for held in (devices[d], devices[k - 1 - d]):
                    used = sum(sp[e] - sp[a] + mb * (ap[e] - ap[a]) for c, mb in held
                               for a, e in [left if c == d else right])
                    if used + max(rmax(*left), rmax(*right)) > budget:
                        return False
                return True
            return _fit_mirror(n, k, time_ok, pair_ok)
        if single:
            return _fit_independent(n, k, lambda c, a, e: time_ok(a, e) and use(c, a, e) + rmax(a, e) <= budget)
        set_aside = [min(state_bytes[i] + held[0][1] * act_bytes[i] for i in range(n)) for held in devices]
        return _fit_greedy_shared(n, k, time_ok, owner, use, rmax, budget, set_aside)

    best = fits_bound(tp[n])
    if best is None:
        return None
    bounds = sorted({tp[e] - tp[a] for a in range(n) for e in range(a + 1, min(n, a + n - k + 1) + 1)})
    lo, hi = 0, len(bounds) - 1                # any split's chunks are within bounds[-1]
    while lo < hi:
        mid = (lo + hi) // 2
        split = fits_bound(bounds[mid])
        if split is None:
            lo = mid + 1
        else:
            hi, best = mid, split
    return best
