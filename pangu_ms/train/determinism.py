"""Run-to-run determinism on CPU: the one place where MindSpore's execution settings for it are applied.

Known source of run-to-run differences in MindSpore 2.9's CPU kernels: a reduction of *all* elements of a long
tensor (``ReduceCpuKernelFunc::AccelerateLongVector``, used e.g. by the global gradient norm over the flat
gradient buffer) splits the tensor into blocks whose size is chosen by timing the first calls
(``ParallelLaunchAutoSearch``) and adds the per-block partial sums in the order the threads *finish* (under a
mutex), and the block count itself is chosen by timing, so the fp32 sum differs by an ulp between runs (from
step ~18, when the search settles), even on one thread; through the clip factor the difference reaches the
weights. The gradient norm therefore never reduces a long vector in one go (``pangu_ms.layers.reduce``). ``train.deterministic: true`` applies that plus ``deterministic="ON"`` (MindSpore's switch
for its deterministic kernel variants) and one inter-op thread, before the first kernel runs.
"""
from __future__ import annotations


def apply_determinism(enabled: bool) -> dict:
    """Apply (``enabled``) the single-thread deterministic execution settings; returns what was set."""
    if not enabled:
        return {}
    import mindspore as ms
    settings = {"deterministic": "ON", "runtime_num_threads": 1, "inter_op_parallel_num": 1}
    ms.set_context(**settings)
    return settings
