"""Hard-example mining: prompts the policy fails are re-queued and served again.

After each rollout, ``update(problem_id, score)`` is called with the group's mean ``correct`` reward. A prompt
scoring below ``threshold`` enters (or stays in) the queue, up to ``max_requeue`` times; a prompt that reaches
the threshold leaves it. ``take(n)`` pops up to n queued prompts (FIFO) for the next step, which mixes them with
freshly drawn ones (``rl.hard_fraction``). ``state()`` / ``load_state()`` round-trip the queue for checkpoints.
"""
from __future__ import annotations

from collections import OrderedDict


class HardExampleQueue:
    def __init__(self, threshold: float = 0.5, max_requeue: int = 3, capacity: int = 4096):
        self.threshold = threshold
        self.max_requeue = max_requeue
        self.capacity = capacity
        self.queue: OrderedDict[str, None] = OrderedDict()
        self.count: dict[str, int] = {}
        self.added = 0
        self.solved = 0

    def __len__(self) -> int:
        return len(self.queue)

    def update(self, problem_id: str, score: float) -> None:
        if score >= self.threshold:
            if self.count.pop(problem_id, None) is not None:
                self.solved += 1
            self.queue.pop(problem_id, None)
            return
        n = self.count.get(problem_id, 0)
        if n >= self.max_requeue or (problem_id not in self.queue and len(self.queue) >= self.capacity):
            return
        self.count[problem_id] = n + 1
        self.queue[problem_id] = None
        self.queue.move_to_end(problem_id)
        self.added += 1

    def take(self, n: int) -> list[str]:
        out = []
        while self.queue and len(out) < n:
            pid, _ = self.queue.popitem(last=False)
            out.append(pid)
        return out

    def state(self) -> dict:
        return {"queue": list(self.queue), "count": dict(self.count), "added": self.added, "solved": self.solved}

    def load_state(self, st: dict) -> None:
        self.queue = OrderedDict((k, None) for k in st.get("queue", []))
        self.count = dict(st.get("count", {}))
        self.added = int(st.get("added", 0))
        self.solved = int(st.get("solved", 0))
