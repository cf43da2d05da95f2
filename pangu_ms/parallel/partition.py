"""Contiguous partition algorithms behind :func:`pangu_ms.parallel.split.pipeline_split` (pure Python).

``partition``: k contiguous groups minimising the largest group time. ``memory_aware_partition``: the same subject to
every device's memory budget, given which chunks each device holds and how many micro-batches of each it keeps in
flight. Costs come from the caller (the simulator computes them per decoder layer / MTP module); nothing here knows
what a block is.
"""
from __future__ import annotations


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


def bounds_from_counts(counts: list) -> list:
    """``[3, 2, 4]`` (blocks per chunk) -> ``[(0, 3), (3, 5), (5, 9)]``."""
    out, start = [], 0
    for c in counts:
        out.append((start, start + c))
        start += c
    return out


def device_bytes(bounds: list, state_bytes: list, act_bytes: list, transient_bytes: list, devices: list) -> list:
    """Memory of every device for the chunks ``bounds`` (the quantity :func:`memory_aware_partition` bounds):
    sum over its chunks of (state bytes + micro-batches x activation bytes) + the largest transient of its blocks."""
    out = []
    for held in devices:
        used = sum(sum(state_bytes[a:e]) + mb * sum(act_bytes[a:e]) for c, mb in held for a, e in [bounds[c]])
        out.append(used + max((max(transient_bytes[a:e], default=0.0) for c, _ in held for a, e in [bounds[c]]),
                              default=0.0))
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
    stored activation bytes per micro-batch, transient working-set bytes. ``devices``: per device, its
    ``(chunk, micro-batches in flight)`` pairs (sim/schedule.py ``device_chunks``).
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
