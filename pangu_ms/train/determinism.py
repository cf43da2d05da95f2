"""Run-to-run determinism on CPU: the one place where MindSpore's execution settings for it are applied.

Known source of run-to-run differences in MindSpore 2.9's CPU kernels: a reduction of *all* elements of a long
tensor (``ReduceCpuKernelFunc::AccelerateLongVector``, used e.g. by the global gradient norm over the flat
gradient buffer) splits the tensor into blocks whose size is chosen by timing the first calls
(``ParallelLaunchAutoSearch``) and adds the per-block partial sums in the order the threads *finish* (under a
mutex). With more than one kernel thread the fp32 sum therefore depends on thread scheduling; through the clip
factor the difference reaches the weights. One kernel thread (``runtime_num_threads=1``) makes every block run in
order on one thread. ``train.deterministic: true`` applies that plus ``deterministic="ON"`` (MindSpore's switch
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
