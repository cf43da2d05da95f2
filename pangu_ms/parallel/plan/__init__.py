"""The Ascend shard plan as data: tensor layouts, op strategies, auto-parallel settings, pipeline stages.

Generated from a :class:`~pangu_ms.config.Config` alone (no MindSpore import, runs on CPU) and validated here;
:mod:`pangu_ms.parallel.apply_ascend` is the only place that turns it into ``.shard()`` / ``pipeline_stage`` /
``set_auto_parallel_context`` calls, on Ascend only.

Meshes (one pipeline stage; MindSpore strategies describe the devices of one stage)

* ``dense``  device matrix ``(dp, cp, tp)``: attention, dense FFN, shared expert, norms, embedding, LM head.
* ``expert`` device matrix ``(edp, ep, etp)`` with ``edp = dp*cp*tp/(ep*etp)``: the routed experts. The expert dim is
  sharded over ``ep`` (the EP width), each expert's FFN dim over ``etp`` (the expert-TP size, = tp without
  tp_extend_ep unless parallel.etp says otherwise).

Both matrices are row-major over the stage's local rank ``rank - stage * stage_size`` (last axis fastest), which
is exactly the coordinate system of :class:`pangu_ms.parallel.dims.ParallelDims`; :func:`local_slice` computes
the block a rank holds from the plan alone, and the tests check it against ``ParallelDims.experts_of``.

Conventions
* Dense weights are ``[out, in]`` applied as ``x @ W^T`` (MatMul ``transpose_b=True``); activations are
  flattened to ``[T, H]`` with ``T = micro_batch_size * dp * seq_length`` tokens (the stage-global micro-batch as
  semi-auto parallel sees it), and T is sharded over ``(dp, cp)`` (batch over DP, sequence over CP).
* Column-parallel (split ``out`` over tp): q_b_proj, kv_b_proj (head-major rows: heads split over tp),
  gate_up_proj, shared_expert.gate_up_proj, eh_proj, lm_head (vocab-parallel). Row-parallel (split ``in`` over
  tp, output AllReduce): o_proj, down_proj, shared_expert.down_proj. Replicated: q_a_proj, kv_a_proj (low-rank
  down-projections), router, every norm weight.
* Fused gate/up weights ``[2F, H]`` (and the expert ``[E, H, 2Fe]``) are marked ``fused_halves=2``: a contiguous
  TP split would give rank 0 all of ``gate``; the checkpoint must be stored in per-shard order
  ``[gate_0; up_0; gate_1; up_1; ...]`` for Ascend, see :func:`fused_shard_permutation`.
"""
from __future__ import annotations

from .build import build_plan
from .slices import fused_shard_permutation, local_slice
from .specs import MESHES, OpPlan, ParamPlan, ShardPlan, TensorSpec
from .summary import summarize
from .validate import plan_problems, validate_plan

__all__ = ["MESHES", "TensorSpec", "OpPlan", "ParamPlan", "ShardPlan", "build_plan", "plan_problems",
           "validate_plan", "local_slice", "fused_shard_permutation", "summarize"]
