"""Kernel counting from the compiled graph's IR (pangu_ms/sim/graph_kernels.py) and kernels.py against it."""
import os
import subprocess
import sys

import pytest

from pangu_ms.config import load_config
from pangu_ms.sim.graph_kernels import count_ir
from pangu_ms.sim.kernels import reference_step_kernels

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")

IR = """
  %1(CNode_1) = PrimFunc_MatMul(%para1_x, %para2_w) {instance name: matmul}
      : (<Tensor[Float32], (8, 4)>) -> (<Tensor[Float32], (8, 2)>)
      # Fullname with scope: (Default/net-PanguForCausalLM/layers-CellList/0-DecoderLayer/MatMul-op0)
  %2(CNode_2) = PrimFunc_Reshape(%1, (16)) {instance name: reshape}
      # Fullname with scope: (Default/net-PanguForCausalLM/Reshape-op1)
  %3(CNode_3) = MakeTuple(%1, %2)
      # Fullname with scope: (Default/MakeTuple-op2)
  %4(CNode_4) = PrimFunc_MatMul(%1, %para2_w) {transpose_a: Bool(1)}
      # Fullname with scope: (Gradients/Default/net-PanguForCausalLM/Grad_MatMul/MatMul-op3)
  %5(CNode_5) = StridedSliceGrad(%4, (8, 4))
      # Fullname with scope: (Gradients/Default/net-PanguForCausalLM/Grad_StridedSlice/StridedSliceGrad-op4)
  %6(CNode_6) = PrimFunc_AdamWeightDecay(%para2_w, %5)
      # Fullname with scope: (Default/optimizer-FusedAdamW/AdamWeightDecay-op5)
  %7(CNode_7) = UpdateState(%6, %5)
      # Fullname with scope: (Default/UpdateState-op6)
"""


def test_count_ir_hand_written():
    c = count_ir(IR)
    # kernels: MatMul (fwd), MatMul + StridedSliceGrad (bwd), AdamWeightDecay (other); Reshape is a CPU no-op,
    # MakeTuple / UpdateState launch nothing
    assert (c["forward"], c["backward"], c["other"], c["total"]) == (1, 2, 1, 4)
    assert c["by_op"] == {"MatMul": 2, "StridedSliceGrad": 1, "AdamWeightDecay": 1}


def test_structural_count_matches_compiled_graph():
    """kernels.py (what the simulator charges per-kernel cost for) vs the compiled training step of a small
    MLA + MoE config (1 dense + 1 MoE layer, MTP): fails when the model or train step changes without
    re-deriving kernels.py (tools/count_kernels.py --variants)."""
    sets = ["model.num_layers=2", "model.hidden_size=64", "model.num_heads=2", "moe.num_experts=4",
            "moe.expert_ffn_hidden=32", "model.dense_ffn_hidden=128", "model.q_lora_rank=32",
            "model.kv_lora_rank=16", "train.global_batch_size=2", "parallel.micro_batch_size=2",
            "train.seq_length=16"]
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "count_kernels.py"), "--json", "--set", *sets],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    out = json.loads(r.stdout[r.stdout.index("{"):])["config"]
    cfg = load_config(os.path.join(ROOT, "yaml", "tiny_cpu.yaml"),
                      sets + ["model.compute_dtype=float32", "model.param_dtype=float32"])
    assert out["structural"] == pytest.approx(reference_step_kernels(cfg))
    assert out["total"] > 500
    assert abs(out["structural"] / out["total"] - 1) < 0.03, out
