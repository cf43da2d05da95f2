"""Post-training sections of the recipe (``sft:`` and ``rl:``), used when ``stage.name`` is ``sft`` / ``rl``.

Both stages start from another run's weights (``stage.init_from``: a run directory or one checkpoint) and share
``train:`` (steps, LR schedule, AdamW, logging/checkpoint cadence, output_dir; auto-resume) and ``model:`` / ``moe:``
with pretraining. See ``docs/post_training.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SFTConfig:
    """Supervised fine-tuning on chat jsonl (``pangu_ms/train/sft.py``).

    Attributes:
        data: training jsonl, one example per line: ``{"prompt": ..., "response": ...}`` (other keys ignored).
        valid_data: held-out jsonl of the same form for the masked validation loss (empty = none).
        tokenizer: tokenizer.json (or its directory) used to encode the examples (empty = ``data.tokenizer``).
        pack: pack several examples per row of ``train.seq_length + 1`` tokens (an example never straddles two
            rows; the remainder of a row is padding with loss mask 0). ``false``: one example per row.
        mtp_on_response: keep the MTP loss (masked to response tokens like the main loss).
    """

    data: str = ""
    valid_data: str = ""
    tokenizer: str = ""
    pack: bool = True
    mtp_on_response: bool = True


@dataclass
class RLConfig:
    """GRPO-family reinforcement learning with verifiable rewards (``pangu_ms/train/rl.py``, ``pangu_ms/rl``).

    Attributes:
        data: training prompts jsonl (``{"id", "prompt", "answer", "capability"}`` per line, see
            ``pangu_ms/rl/tasks.py``).
        eval_data: held-out prompts jsonl (same form) for the before/after evaluation.
        tokenizer: tokenizer.json (empty = ``data.tokenizer``).
        group_size: G, completions sampled per prompt (the group of group-normalised advantages).
        prompts_per_step: groups per optimizer step (the rollout batch is prompts_per_step * group_size).
        max_prompt_tokens: prompts longer than this (after the chat template) are skipped; with
            ``max_new_tokens`` it fixes the static sequence length of the jitted graphs.
        max_new_tokens: longest completion (a completion that does not emit the stop token is cut there).
        temperature / top_p: rollout sampling (temperature 0 = greedy).
        stop_token: ``eos`` (the tokenizer's end-of-document token) or an explicit token id as a string.
        clip_low / clip_high: PPO ratio clip [1 - clip_low, 1 + clip_high] (DAPO "clip-higher" when high > low).
        kl_coef: weight of the k3 KL estimator to the frozen reference model (0 disables the reference pass).
        updates_per_rollout: optimizer steps on each rollout batch (>1 makes the policy move away from the
            behaviour policy so the clip is active). Each counts as one ``train.steps`` step.
        scale_adv_by_std: GRPO's (r - mean) / (std + eps); ``false`` gives Dr. GRPO's r - mean.
        adv_eps: epsilon of the std normalisation.
        dynamic_sampling: DAPO dynamic sampling: groups whose rewards are all equal (zero advantage) are dropped
            and more prompts are drawn, up to ``dynamic_sampling_rounds`` rollout rounds per step; slots that
            stay empty are masked out.
        dynamic_sampling_rounds: see above.
        rewards: reward weights by reward name (registry in ``pangu_ms/rl/rewards.py``), e.g.
            ``{correct: 1.0, format: 0.2}``; a key ``<capability>.<reward>`` overrides the weight for prompts of
            that capability (multi-capability reward).
        hard_mining: re-queue prompts whose group mean ``correct`` reward is below ``hard_threshold`` and serve
            them again (``hard_fraction`` of each step's prompts), at most ``hard_max_requeue`` times each.
        hard_threshold / hard_fraction / hard_max_requeue / hard_capacity: see above (capacity bounds the queue).
        aux_loss: keep the MoE load-balancing loss in the RL objective (routing stays dropless via ``moe:``).
        eval_interval: evaluate on ``eval_data`` every N steps (and before the first / after the last step).
        eval_problems: held-out prompts evaluated (first N of eval_data; 0 = all).
        eval_samples: completions sampled per held-out prompt at ``temperature`` (mean reward is over all of
            them); greedy accuracy is reported as well.
        log_samples: completions printed to the log at each log step.
    """

    data: str = ""
    eval_data: str = ""
    tokenizer: str = ""
    group_size: int = 8
    prompts_per_step: int = 8
    max_prompt_tokens: int = 16
    max_new_tokens: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    stop_token: str = "eos"
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.01
    updates_per_rollout: int = 2
    scale_adv_by_std: bool = True
    adv_eps: float = 1e-6
    dynamic_sampling: bool = True
    dynamic_sampling_rounds: int = 3
    rewards: dict[str, float] = field(default_factory=lambda: {"correct": 1.0, "format": 0.2})
    hard_mining: bool = True
    hard_threshold: float = 0.5
    hard_fraction: float = 0.25
    hard_max_requeue: int = 3
    hard_capacity: int = 4096
    aux_loss: bool = True
    eval_interval: int = 50
    eval_problems: int = 0
    eval_samples: int = 4
    log_samples: int = 2
