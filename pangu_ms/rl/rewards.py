"""Reward registry and the multi-capability weighted reward.

A reward is a callable ``f(completion: Completion, problem: dict) -> float`` registered under a name with
``@register_reward("name")``. Rule rewards here are verifiable (no model); a model-based reward is registered the
same way (e.g. a closure that scores ``completion.text`` with a reward model) and weighted like the others.

``MultiCapabilityReward(weights)`` combines them: ``total = sum_r w[cap, r] * reward_r`` where ``w[cap, r]`` is
``weights["<cap>.<r>"]`` when given, else ``weights[r]`` (cap = the problem's ``capability``). It returns the
total and every component, so the trainer can log the mean of each reward per capability.

Built-in rule rewards:
    ``correct``  1 if the completion is exactly an integer (``-?[0-9]+``, surrounding whitespace allowed) equal to
                 ``problem["answer"]``; compared as canonical decimal strings (no int() of the completion, so huge
                 or malformed numbers cannot raise; an int answer beyond Python's int-to-str digit limit scores 0).
    ``format``   1 if the completion ended with the stop token (not cut at max_new_tokens) and is a well-formed
                 integer; else 0.
    ``length``   -(tokens / max_new_tokens) (a length penalty; weight 0 by default, not used in the demo).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

REWARDS: dict = {}
_INT = re.compile(r"\s*(-?)([0-9]+)\s*")


@dataclass
class Completion:
    text: str             # decoded completion without the stop token
    stopped: bool         # the stop token was generated
    n_tokens: int = 0     # generated tokens (stop token included)
    max_tokens: int = 1


def register_reward(name: str):
    def deco(fn):
        if name in REWARDS and REWARDS[name] is not fn:
            raise ValueError(f"reward '{name}' is already registered")
        REWARDS[name] = fn
        return fn
    return deco


def canonical_int(text) -> str | None:
    """'  007 ' -> '7', '-0' -> '0', '-12' -> '-12'; None unless the whole text is one integer."""
    if not isinstance(text, str):
        return None
    m = _INT.fullmatch(text)
    if m is None:
        return None
    digits = m.group(2).lstrip("0") or "0"
    return digits if digits == "0" or not m.group(1) else "-" + digits


def _canonical_answer(answer) -> str | None:
    if isinstance(answer, bool):
        return None
    try:
        if isinstance(answer, int):
            return str(answer)
        if isinstance(answer, float):
            return str(int(answer)) if answer.is_integer() else None
        return canonical_int(str(answer))
    except (ValueError, OverflowError):       # > sys.get_int_max_str_digits() digits, inf, nan
        return None


@register_reward("correct")
def correct_reward(c: Completion, problem: dict) -> float:
    got = canonical_int(c.text)
    want = _canonical_answer(problem.get("answer"))
    return float(got is not None and want is not None and got == want)


@register_reward("format")
def format_reward(c: Completion, problem: dict) -> float:
    return float(bool(c.stopped) and canonical_int(c.text) is not None)


@register_reward("length")
def length_reward(c: Completion, problem: dict) -> float:
    return -float(c.n_tokens) / max(int(c.max_tokens), 1)


class MultiCapabilityReward:
    def __init__(self, weights: dict[str, float]):
        self.weights = dict(weights)
        names = {k.split(".")[-1] for k in self.weights}
        unknown = sorted(n for n in names if n not in REWARDS)
        if unknown:
            raise ValueError(f"rl.rewards: unknown reward '{unknown[0]}' (registered: {', '.join(sorted(REWARDS))})")
        self.names = sorted(names)

    def weight(self, capability: str, name: str) -> float:
        return float(self.weights.get(f"{capability}.{name}", self.weights.get(name, 0.0)))

    def __call__(self, c: Completion, problem: dict):
        cap = problem.get("capability", "default")
        parts = {n: REWARDS[n](c, problem) for n in self.names}
        total = sum(self.weight(cap, n) * v for n, v in parts.items())
        return total, parts
