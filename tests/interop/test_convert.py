"""pangu_ms -> HF -> pangu_ms round trips (bit-exact; DeepSeek-V3 naming pre-norm, openPangu naming with sandwich
norm and MTP; sharded output; an EP=2 checkpoint exports like the one-process one), the files are plain
safetensors (read back by the ``safetensors`` package and by MindSpore), and bad HF directories give one clear
error each: wrong shape, unknown name, missing tensor, truncated shard, config/tensor mismatch, unsupported
config key."""
import json
import os
import shutil

import numpy as np
import pytest

from pangu_ms.config import ConfigError, dump_config, load_config
from pangu_ms.interop.errors import ConversionError
from pangu_ms.interop.hf_export import export_hf
from pangu_ms.interop.hf_import import import_hf
from pangu_ms.interop.sources import INDEX, CheckpointSource
from pangu_ms.interop.verify import verify
from pangu_ms.model import build_model
from pangu_ms.model.inventory import parameter_inventory
from pangu_ms.train.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import tiny_overrides

FORMATS = {"openpangu": {"model.sandwich_norm": "true", "model.mtp_depth": 1},
           "deepseek_v3": {"model.sandwich_norm": "false", "model.mtp_depth": 1, "moe.expert_bias": "true"}}


def _quiet(_):
    pass


def _run(tmp, fmt):
    """A tiny model of ``fmt``'s shape saved as a run (checkpoint + config.yaml); every tensor random."""
    cfg = load_config(None, tiny_overrides(**FORMATS[fmt], **{"model.latent_norm_eps": 1e-6}))
    net = build_model(cfg)
    rng = np.random.default_rng(1)
    from mindspore import Tensor
    for p in net.get_parameters():
        p.set_data(Tensor(rng.standard_normal(p.shape).astype(np.float32)))
    run = os.path.join(tmp, f"run_{fmt}")
    directory = save_checkpoint(net, run, 1)
    dump_config(cfg, os.path.join(run, "config.yaml"))
    return cfg, net, directory


@pytest.fixture(scope="module", autouse=True)
def small_row_blocks():
    """Row blocks of 512 bytes: the tiny model's matrices go through the multi-block streaming paths."""
    from pangu_ms.interop import hf_export
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hf_export, "ROW_BLOCK_BYTES", 512)
        yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_row_blocks):
    tmp = str(tmp_path_factory.mktemp("interop"))
    out = {}
    for fmt in FORMATS:
        cfg, net, directory = _run(tmp, fmt)
        hf = os.path.join(tmp, f"hf_{fmt}")
        export_hf(directory, hf, fmt, shard_size=30_000, log=_quiet)
        out[fmt] = (cfg, net, directory, hf)
    return tmp, out


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip_is_bit_exact(exported, fmt):
    tmp, runs = exported
    cfg, net, directory, hf = runs[fmt]
    index = json.load(open(os.path.join(hf, INDEX)))
    assert len(set(index["weight_map"].values())) > 1                      # really sharded
    names = set(index["weight_map"])
    L = cfg.model.num_layers
    want = {"openpangu": [f"model.layers.1.post_attention_layernorm.weight", "model.layers.1.pre_mlp_layernorm.weight",
                          "model.layers.1.post_mlp_layernorm.weight"],
            "deepseek_v3": ["model.layers.1.post_attention_layernorm.weight",
                            "model.layers.1.mlp.gate.e_score_correction_bias"]}[fmt]
    mtp = [f"model.layers.{L}.{n}.weight" for n in ("enorm", "hnorm", "eh_proj", "shared_head.norm",
                                                     "shared_head.head", "embed_tokens",
                                                     "mlp.experts.3.down_proj", "self_attn.kv_a_proj_with_mqa")]
    assert set(want + mtp) <= names, sorted(set(want + mtp) - names)
    back = os.path.join(tmp, f"back_{fmt}")
    ckpt = import_hf(hf, back, "auto", log=_quiet)
    a, b = CheckpointSource(directory), CheckpointSource(ckpt)
    for p in parameter_inventory(cfg):
        np.testing.assert_array_equal(a.read(p.name), b.read(p.name), err_msg=p.name)
    again = load_config(os.path.join(back, "config.yaml"))
    assert again.model == cfg.model and again.moe == cfg.moe              # the recipe maps back exactly
    checks = verify(hf, ckpt)
    assert len(checks) == len(names) and all(c.max_abs_diff == 0 and c.hf_checksum == c.pangu_checksum
                                             for c in checks)
    fresh = build_model(again, seed=7)                                     # MindSpore loads what the importer wrote
    load_checkpoint(fresh, ckpt)
    for p, q in zip(net.get_parameters(), fresh.get_parameters()):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy(), err_msg=p.name)


def test_files_are_plain_safetensors_and_expert_tensors_are_the_transposed_slices(exported):
    from safetensors.numpy import load_file
    _, runs = exported
    cfg, net, directory, hf = runs["openpangu"]
    index = json.load(open(os.path.join(hf, INDEX)))
    name = "model.layers.1.mlp.experts.2.up_proj.weight"
    got = load_file(os.path.join(hf, index["weight_map"][name]))[name]
    w = {p.name: p.asnumpy() for p in net.get_parameters()}["layers.1.moe.experts.w_gate_up"]
    f = cfg.moe.expert_ffn_hidden
    np.testing.assert_array_equal(got, w[2, :, f:].T)                     # independent of hf_names' own helpers
    down = load_file(os.path.join(hf, index["weight_map"]["model.layers.0.mlp.down_proj.weight"]))
    np.testing.assert_array_equal(down["model.layers.0.mlp.down_proj.weight"],
                                  {p.name: p.asnumpy() for p in net.get_parameters()}["layers.0.mlp.down_proj.weight"])


def test_no_mtp_export_and_bf16(exported, tmp_path):
    _, runs = exported
    cfg, net, directory, hf = runs["openpangu"]
    out = str(tmp_path / "nomtp")
    index = export_hf(directory, out, "openpangu", mtp=False, dtype="bfloat16", log=_quiet)
    assert not any(n.startswith(f"model.layers.{cfg.model.num_layers}.") for n in index["weight_map"])
    assert json.load(open(os.path.join(out, "config.json")))["num_mtp_layers"] == 0
    checks = verify(out, directory)
    worst = max(c.max_abs_diff for c in checks)
    assert 0 < worst < 2e-2                                                # bf16 rounding, nothing else


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _rewrite(hf, edit):
    """Apply ``edit(tensors: dict)`` to the tensors of an HF directory (re-saved as one shard + index)."""
    from safetensors.numpy import load_file, save_file
    index = json.load(open(os.path.join(hf, INDEX)))
    tensors = {}
    for f in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(os.path.join(hf, f)))
        os.remove(os.path.join(hf, f))
    edit(tensors)
    save_file(tensors, os.path.join(hf, "model-00001-of-00001.safetensors"), {"format": "pt"})
    json.dump({"metadata": {}, "weight_map": {n: "model-00001-of-00001.safetensors" for n in tensors}},
              open(os.path.join(hf, INDEX), "w"))


def _edit_config(hf, **changes):
    cj = json.load(open(os.path.join(hf, "config.json")))
    cj.update(changes)
    json.dump(cj, open(os.path.join(hf, "config.json"), "w"))


def test_bad_hf_directories_give_one_clear_error_each(exported, tmp_path):
    _, runs = exported
    hf = runs["openpangu"][3]
    cases = []
    d = _copy(hf, tmp_path / "shape")
    _rewrite(d, lambda t: t.update({"model.layers.0.self_attn.o_proj.weight":
                                    t["model.layers.0.self_attn.o_proj.weight"][:, :-1].copy()}))
    cases.append((d, r"tensor 'model\.layers\.0\.self_attn\.o_proj\.weight' in model-00001-of-00001\.safetensors "
                     r"has shape \[32, 15\], config\.json implies \[32, 16\]"))
    d = _copy(hf, tmp_path / "unknown")
    _rewrite(d, lambda t: t.update({"model.layers.0.mlp.bias": np.zeros(4, np.float32)}))
    cases.append((d, r"1 tensor\(s\) not in the openpangu mapping of its config\.json, e\.g\. "
                     r"'model\.layers\.0\.mlp\.bias'"))
    d = _copy(hf, tmp_path / "missing")
    _rewrite(d, lambda t: t.pop("model.layers.2.mlp.experts.1.gate_proj.weight"))
    cases.append((d, r"1 tensor\(s\) of the openpangu mapping missing, e\.g\. "
                     r"'model\.layers\.2\.mlp\.experts\.1\.gate_proj\.weight'"))
    d = _copy(hf, tmp_path / "truncated")
    shard = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))[-1]
    with open(os.path.join(d, shard), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(d, shard)) - 10)
    cases.append((d, rf"{shard}: truncated: tensor '.*' needs bytes up to \d+, the file has \d+"))
    d = _copy(hf, tmp_path / "experts")
    _edit_config(d, num_routed_experts=8)
    cases.append((d, r"config/tensor mismatch: layer 1 holds 4 routed experts \(ids 0\.\.3\), .*config\.json says "
                     r"num_routed_experts=8"))
    d = _copy(hf, tmp_path / "layers")
    _edit_config(d, num_hidden_layers=2)
    cases.append((d, r"config/tensor mismatch: the tensors hold 2 layers after the 2 main layers, .*config\.json "
                     r"says num_mtp_layers=1"))
    d = _copy(hf, tmp_path / "scaling")
    _edit_config(d, rope_scaling={"type": "yarn", "factor": 4})
    cases.append((d, r"config\.json: rope_scaling=.* is not mapped"))
    for i, (d, message) in enumerate(cases):
        with pytest.raises(ConfigError if "scaling" in str(d) else ConversionError, match=message):
            import_hf(str(d), str(tmp_path / f"out{i}"), log=_quiet)
        assert not os.path.exists(tmp_path / f"out{i}" / "checkpoints" / "step_00000000" / "manifest.json")


def test_cli_error_line_and_ep2_checkpoint_exports_like_one_process(exported, tmp_path, capsys):
    from pangu_ms.cli import run_cli
    from tools.convert_ckpt import main
    _, runs = exported
    cfg, net, directory, hf = runs["deepseek_v3"]
    assert run_cli(main, ["export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --checkpoint: no complete checkpoint under")
    assert run_cli(main, ["export", "--checkpoint", directory, "--out", str(tmp_path / "x"),
                          "--format", "deepseek_v3", "--shard-size", "lots"]) == 2
    assert "--shard-size: 'lots' is not a size" in capsys.readouterr().err
    # the same weights saved as two EP ranks' parts export to the same HF tensors
    from pangu_ms.train.checkpoint import CheckpointManager, local_parameter_names
    from pangu_ms.parallel.grads import expert_param_names
    from tests.train.test_checkpoint_reshard import _Slice
    total = cfg.moe.num_experts
    w = {p.name: p.asnumpy() for p in net.get_parameters()}
    local = local_parameter_names(net, expert_param_names(net))
    run = str(tmp_path / "ep2")
    for r in (1, 0):
        part = build_model(cfg, hooks=_Slice(r * total // 2, total // 2))
        from mindspore import Tensor
        for p in part.get_parameters():
            v = w[p.name]
            p.set_data(Tensor(v[r * total // 2:(r + 1) * total // 2] if p.name in local else v))
        CheckpointManager(run, r, 2, local, log=_quiet, experts=(r * total // 2, total // 2, total)).save(part, 1)
    dump_config(cfg, os.path.join(run, "config.yaml"))
    assert run_cli(main, ["export", "--checkpoint", run, "--out", str(tmp_path / "hf2"), "--format",
                          "deepseek_v3"]) == 0
    assert run_cli(main, ["verify", "--hf-dir", str(tmp_path / "hf2"), "--checkpoint", directory]) == 0
    assert "0 differ by more than 0" in capsys.readouterr().out
