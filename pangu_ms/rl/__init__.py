"""GRPO-family reinforcement learning with verifiable rewards (one concept per module).

``tasks``       the arithmetic task generator (exact answers, seeded train / held-out split) and its tokenizer
``rewards``     reward registry (rule rewards ``correct``, ``format``; room for model-based ones) and the
                multi-capability weighted combination
``rollout``     KV-cache rollout sampler (G samples per prompt, temperature / top-p, stop token, max new tokens)
``advantages``  group-normalised advantages, dynamic-sampling filter
``loss``        token log-probs, clipped policy loss (low/high clip), k3 KL, entropy; the jitted GRPO train step
``mining``      hard-example mining queue (re-queue prompts the policy fails)

The loop that ties them together is ``pangu_ms/train/rl.py`` (``stage.name: rl``).
"""
