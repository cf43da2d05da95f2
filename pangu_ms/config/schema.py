"""Typed configuration tree of pangu_ms.

One YAML recipe maps onto :class:`Config`, whose sections are dataclasses. Every field has a default and a
docstring line below; fields whose value must come from a fixed set carry ``metadata={"choices": ...}`` so
that the loader can reject a bad value with the key path before anything is built.

Sections
--------
model     architecture of the transformer (MLA / GQA attention, DSSN sandwich norm, TinyInit, MTP).
moe       routed + shared experts, router, dispatcher, load-balancing loss.
parallel  DP / TP / PP / VPP / EP / CP degrees and micro-batching (see ``pangu_ms/parallel``).
train     optimisation, schedule, precision, logging and checkpoint cadence.
data      where the tokens come from.
stage     which training stage the recipe runs (pretrain, long_context, sft, rl).
sim       simulator inputs (hardware profile, optimisation switches); see ``config/sim.py``.
long_context / sft / rl   stage-specific settings (``config/long_context.py``, ``config/post_training.py``).

Choices made where the paper is silent are written next to the field ("choice:").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .expert_grid import expert_grid
from .long_context import LongContextConfig
from .post_training import RLConfig, SFTConfig
from .sim import SimConfig
from .swap import SwapConfig


#: Values of ``parallel.pipeline_split`` (pangu_ms/parallel/split.py implements them).
PIPELINE_SPLITS = ("balanced", "time_balanced", "memory_aware", "explicit")


def _choice(default, choices, doc=""):
    return field(default=default, metadata={"choices": tuple(choices), "doc": doc})


@dataclass
class ModelConfig:
    """Transformer architecture.

    Attributes:
        vocab_size: token vocabulary (the 718B recipe pads 153,376 tokens to 153,600).
        hidden_size: model width d.
        num_layers: decoder layers L (MTP layers not included).
        num_dense_layers: the first k layers use a dense SwiGLU FFN instead of MoE.
        dense_ffn_hidden: intermediate size of the dense SwiGLU FFN.
        attention_type: ``mla`` (multi-head latent attention, the training path), ``gqa`` or ``mha``
            (grouped-query / multi-head; used by the simulator for Llama / Mixtral families and by training).
        num_heads: attention heads.
        num_kv_heads: key/value heads for ``gqa`` (``mha`` uses ``num_heads``).
        head_dim: per-head dim for ``gqa`` / ``mha``; 0 means ``hidden_size // num_heads``.
        q_lora_rank: MLA query compression rank; 0 disables query compression.
        kv_lora_rank: MLA key/value compression rank (the size of the compressed KV cache).
        qk_nope_head_dim / qk_rope_head_dim / v_head_dim: MLA per-head dims (rope part is decoupled and shared
            by all heads for keys).
        max_position_embeddings: longest sequence the RoPE tables are built for.
        rope_theta: RoPE base.
        rope_interleaved: rotate adjacent pairs (DeepSeek / Pangu convention) instead of the two halves.
        norm_eps: RMSNorm epsilon.
        latent_norm_eps: RMSNorm epsilon of MLA's latent norms (``q_a_norm``, ``kv_a_norm``); 0 means ``norm_eps``.
            HF DeepSeek-V3 and openPangu use 1e-6 there whatever their ``rms_norm_eps`` (the converter sets it).
        sandwich_norm: Depth-Scaled Sandwich-Norm (pre- and post-norm around attention and FFN). ``False`` gives
            plain pre-norm as in DeepSeek-V3.
        dssn_c_attn / dssn_c_mlp: DSSN constants; post-norm gamma is initialised to c/sqrt(L). choice: the
            Pangu Ultra (dense) values 0.283 / 0.432, since the MoE paper does not publish its own.
        init_method: ``tiny`` = TinyInit, std sqrt(1/(2 d L)) for every matrix; ``normal`` = N(0, init_std).
        init_std: std of the ``normal`` init.
        embedding_init_std: std of the input embedding (TinyInit uses 0.5).
        init_depth_counts_mtp: whether L in TinyInit / DSSN counts the MTP layers. choice: False (L = 61 for
            the 718B model), since the MTP block is an add-on predicted from the last layer.
        mtp_depth: number of multi-token-prediction modules (0 disables MTP).
        mtp_loss_weight: weight of the MTP cross-entropy in the total loss. choice: 0.3 (DeepSeek-V3's
            value for the first part of pretraining; the Pangu paper does not give one).
        tie_embeddings: share input embedding and LM head.
        compute_dtype / param_dtype: ``float32`` on CPU (no bf16 matmul there); ``float64`` for gradient checks;
            ``bfloat16``/``float16`` on Ascend.
        backend: ``cpu`` (reference ops, the test oracle), ``cpu_fused`` (the reference with fused C++ CPU
            kernels, built on first use with g++: pangu_ms/kernels) or ``ascend`` (fused RmsNorm / Swiglu /
            FlashAttentionScore kernels; needs an Ascend device, see pangu_ms/backend.py).
    """

    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_dense_layers: int = 1
    dense_ffn_hidden: int = 256
    attention_type: str = _choice("mla", ("mla", "gqa", "mha"))
    num_heads: int = 4
    num_kv_heads: int = 4
    head_dim: int = 0
    q_lora_rank: int = 64
    kv_lora_rank: int = 32
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 8
    v_head_dim: int = 16
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rope_interleaved: bool = True
    norm_eps: float = 1e-5
    latent_norm_eps: float = 0.0
    sandwich_norm: bool = True
    dssn_c_attn: float = 0.283
    dssn_c_mlp: float = 0.432
    init_method: str = _choice("tiny", ("tiny", "normal"))
    init_std: float = 0.02
    embedding_init_std: float = 0.5
    init_depth_counts_mtp: bool = False
    mtp_depth: int = 1
    mtp_loss_weight: float = 0.3
    tie_embeddings: bool = False
    compute_dtype: str = _choice("float32", ("float32", "float64", "float16", "bfloat16"))
    param_dtype: str = _choice("float32", ("float32", "float64", "float16", "bfloat16"))
    backend: str = _choice("cpu", ("cpu", "cpu_fused", "ascend"))

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def latent_eps(self) -> float:
        """Epsilon of the MLA latent norms."""
        return self.latent_norm_eps or self.norm_eps

    @property
    def init_depth(self) -> int:
        """L used by TinyInit and DSSN."""
        return self.num_layers + (self.mtp_depth if self.init_depth_counts_mtp else 0)


@dataclass
class MoEConfig:
    """Mixture-of-experts layers (layers ``num_dense_layers .. num_layers-1`` and the MTP block).

    Attributes:
        num_experts: routed experts per MoE layer; 0 makes every layer dense.
        num_shared_experts: always-on experts; they form one SwiGLU of width num_shared * expert_ffn_hidden.
        expert_ffn_hidden: intermediate size of one expert.
        top_k: routed experts per token.
        router_num_groups: group-limited routing (DeepSeek-V3's node-limited routing; HF ``n_group``): the routed
            experts form this many equal groups of consecutive experts (1 = no groups). On the expert-parallel
            path consecutive experts share a rank, so a group lies on one node when the groups are at least as
            many as the nodes of the EP group (DeepSeek-V3: 8 groups, EP over 8 nodes).
        router_group_topk: groups a token may use (HF ``topk_group``): the groups ranked by the sum of their two
            highest selection scores, the k experts then chosen inside the best ``router_group_topk`` groups
            (DeepSeek-V3: 4 of 8, "each token is sent to at most 4 nodes"). 0 = all groups.
        router_score: ``sigmoid`` (Pangu / DeepSeek-V3) or ``softmax`` (Mixtral). Scores are computed in fp32.
        norm_topk_prob: renormalise the k selected scores to sum to 1 before scaling.
        routed_scaling_factor: the combine weights of a token sum to this (2.5 in the 718B model).
        expert_bias: aux-loss-free balancing bias added to the scores for *selection only* (DeepSeek-V3);
            off in the released Pangu model.
        expert_bias_update_rate: step of the sign update of that bias.
        aux_loss_coeff: alpha of the load-balancing loss (1e-2 as reported).
        aux_loss_scope: token set over which expert load f_i and mean score P_i are measured:
            ``sequence`` (each sequence separately, averaged), ``micro_batch`` (this rank's micro-batch),
            ``ep_group`` (union of the micro-batches of the expert-parallel group: statistics all-reduced over
            the EP group; Pangu Ultra MoE's choice), ``global_batch`` (statistics all-reduced over every rank),
            or ``none``. In a single process ``ep_group``/``global_batch`` equal ``micro_batch``.
        dispatcher: ``dropless`` (every token reaches its k experts) or ``drop_and_pad`` (fixed capacity
            ceil(capacity_factor * T * k / E) per expert; overflow tokens are dropped and the drop rate reported).
        capacity_factor: capacity factor of ``drop_and_pad``.
        dropless_impl: implementation of the dropless CPU path: ``masked_dense`` (every expert sees every
            token, unselected weights zero: no padding, wins for few small experts), ``sorted_block``
            (tokens sorted by expert into blocks of ``sorted_block_size`` rows, MegaBlocks-style; wins for many
            experts), or ``auto`` (masked_dense when num_experts / top_k <= 4, see ``auto_dropless_impl``).
        sorted_block_size: rows per block of ``sorted_block``.
        expert_placement: dynamic expert placement on the explicit expert-parallel path (msrun): the routed
            experts of each MoE layer are re-placed across the EP ranks from their predicted load, weights and both
            AdamW moments moving with them (``pangu_ms/parallel/placement_*.py``, docs/moe_placement.md). Needs
            parallel.ep > 1 and the flat all-to-all.
        placement_interval: steps between two placement checks (MindSpeed: 50).
        placement_theta: EMA factor of the load predictor, pred <- theta * pred + (1 - theta) * load (0.9).
        placement_threshold: a layer migrates only if the plan lowers the predicted coefficient of variation of
            its EP-rank load by at least this much (absolute, in [0, 1]; MindSpeed: 0.08).
    """

    num_experts: int = 8
    num_shared_experts: int = 1
    expert_ffn_hidden: int = 64
    top_k: int = 2
    router_num_groups: int = 1
    router_group_topk: int = 0
    router_score: str = _choice("sigmoid", ("sigmoid", "softmax"))
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 2.5
    expert_bias: bool = False
    expert_bias_update_rate: float = 1e-3
    aux_loss_coeff: float = 1e-2
    aux_loss_scope: str = _choice("ep_group", ("ep_group", "micro_batch", "sequence", "global_batch", "none"))
    dispatcher: str = _choice("dropless", ("dropless", "drop_and_pad"))
    capacity_factor: float = 1.25
    dropless_impl: str = _choice("auto", ("auto", "masked_dense", "sorted_block"))
    sorted_block_size: int = 32
    expert_placement: bool = False
    placement_interval: int = 50
    placement_theta: float = 0.9
    placement_threshold: float = 0.08

    @property
    def enabled(self) -> bool:
        return self.num_experts > 0

    @property
    def group_limited(self) -> bool:
        """True when routing is restricted to ``router_group_topk`` of ``router_num_groups`` groups."""
        return self.router_num_groups > 1 and 0 < self.router_group_topk < self.router_num_groups

    def resolved_dropless_impl(self) -> str:
        if self.dropless_impl != "auto":
            return self.dropless_impl
        return auto_dropless_impl(self.num_experts, self.top_k)


AUTO_MASKED_DENSE_MAX_RATIO = 4   # E/k up to which masked_dense is chosen (measured: docs/benchmark.md)


def auto_dropless_impl(num_experts: int, top_k: int) -> str:
    """The ``moe.dropless_impl: auto`` rule. masked_dense computes E/k x the routed expert FLOPs in two large
    matmuls and no dispatch kernels; sorted_block computes (T k + E (block - 1)) / (T k) x the routed FLOPs plus
    a fixed set of permute / weight-gather / scatter kernels. Measured with ``tools/bench_dispatch.py --grid``
    (one MoE layer, forward + backward, at the tiny and small recipes' widths): at E/k = 4 the two are within
    noise of each other, masked_dense ahead at 8 experts top-2; at E/k >= 8 sorted_block is 1.7-3x faster.
    So masked_dense while E/k <= 4, sorted_block above."""
    return "masked_dense" if num_experts <= AUTO_MASKED_DENSE_MAX_RATIO * top_k else "sorted_block"


@dataclass
class ParallelConfig:
    """Parallel layout. world = dp * tp * pp * cp; in MoE layers a stage's dp * cp * tp ranks are re-factored as
    expert-DP x EP x ETP (config/expert_grid.py), so EP width x ETP divides dp * cp * tp.

    Attributes:
        dp / tp / pp / vpp / ep / cp: data, tensor, pipeline, virtual-pipeline (chunks per stage), expert and
            context parallel degrees (ep = the expert-parallel width, or ep * tp with tp_extend_ep).
        etp: expert tensor-parallel size (each routed expert's FFN dim is split over etp ranks), independent of
            tp (MoE parallel folding); null = derived: tp, or 1 with tp_extend_ep.
        micro_batch_size: sequences per micro-batch per data-parallel rank; gradient accumulation steps =
            global_batch_size / (micro_batch_size * dp).
        tp_extend_ep: in MoE layers the TP group shards the expert set instead of expert weights
            (expert-parallel width tp * ep): the special case etp = 1 with EP width ep * tp.
        hierarchical_alltoall: EP dispatch as inter-node AllGather + intra-node all-to-all.
        ranks_per_node: ranks per node (for the hierarchical dispatcher and the simulator).
        optimizer_shard: shard optimizer states over DP (ZeRO-1).
        device_num: total devices the layout is meant for; 0 means "the launch's world size".
        pipeline_split: how the decoder layers and MTP modules are cut into the pp * vpp virtual stages, read by
            both the training plan and the simulator (pangu_ms/parallel/split.py): ``balanced`` (equal layer
            counts, lighter stages at the ends), ``time_balanced`` / ``memory_aware`` (from the simulator's
            per-layer costs: the smallest largest-stage time, subject to every device's memory for
            memory_aware; training gets them as the explicit list ``tools/simulate.py --emit-recipe`` writes)
            or ``explicit``.
        layers_per_virtual_stage: the explicit split (``pipeline_split: explicit``; MindSpeed
            ``num_layer_list``): items per virtual stage, in order, pp * vpp entries >= 1 summing to
            model.num_layers + model.mtp_depth; the embedding runs with the first stage, final norm + LM head
            and every MTP module with the last (so its entry is >= mtp_depth). Virtual stage c runs on pipeline
            rank c mod pp.
    """

    dp: int = 1
    tp: int = 1
    pp: int = 1
    vpp: int = 1
    ep: int = 1
    cp: int = 1
    micro_batch_size: int = 1
    etp: int | None = None
    tp_extend_ep: bool = False
    hierarchical_alltoall: bool = False
    ranks_per_node: int = 8
    optimizer_shard: bool = False
    device_num: int = 0
    pipeline_split: str = _choice("balanced", PIPELINE_SPLITS)
    layers_per_virtual_stage: list[int] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp * self.cp

    def expert_grid(self) -> tuple[int, int]:
        """(EP width, expert TP size) of this layout (config/expert_grid.py; ConfigError when it cannot form).
        Callers that know the model has no experts pass tp_extend_ep=False themselves (ParallelDims)."""
        return expert_grid(self.dp, self.cp, self.tp, self.ep, self.etp, self.tp_extend_ep)


@dataclass
class PhaseConfig:
    """One phase of a multi-phase pretraining schedule (e.g. general -> reasoning -> annealing).

    Attributes:
        name: label used in logs.
        steps: optimizer steps of the phase.
        lr / min_lr / warmup_steps / lr_schedule / decay_fraction: the phase's own LR curve (warm-up from 0,
            then cosine / WSD / constant down to ``min_lr`` at the end of the phase).
        weights: data-mixture weights by corpus name (empty = the prepared data's own weights).
    """

    name: str = "phase"
    steps: int = 100
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 0
    lr_schedule: str = _choice("cosine", ("cosine", "wsd", "constant"))
    decay_fraction: float = 0.2
    weights: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping.

    Attributes:
        seed: seed of weights, data order and sampling.
        steps: optimizer steps.
        seq_length: tokens per sample fed to the model (labels are the next tokens).
        global_batch_size: sequences per optimizer step over all DP ranks (accumulation fills the rest).
        lr / min_lr / warmup_steps / lr_schedule: peak LR, floor, linear warm-up steps and decay shape
            (``cosine``, ``wsd`` = warm-up/stable/decay with ``decay_fraction`` of the steps decaying, ``constant``).
        adam_beta1 / adam_beta2 / adam_eps / weight_decay / grad_clip: AdamW (with bias correction) and global
            norm clipping; defaults are the Pangu Ultra values.
        mode: ``graph`` (``ms.jit`` step, default) or ``pynative``.
        log_interval / eval_interval / save_interval / keep_last: cadence in steps; checkpoints kept.
        output_dir: run directory (logs, tensorboard, checkpoints).
        phases: multi-phase schedule; when given, the phases' steps must add up to ``steps`` and each phase's LR
            curve and mixture replace the single schedule above.
        checkpoint_format: ``safetensors`` or ``ckpt``.
        resume: continue automatically from the latest complete checkpoint in ``output_dir``.
        eval_batches: validation batches per evaluation.
        sample_tokens: tokens generated from a prompt at the end of training (0 disables).
        peak_flops: fp32 FLOP/s used for MFU; 0 measures this machine's GEMM peak at start-up.
        on_nonfinite: a step whose loss or gradient norm is inf/NaN never updates the weights; ``stop`` then ends
            the run with an error naming the step, ``skip_step`` goes on (the step is counted and logged).
        max_skipped_steps: with ``skip_step``, this many non-finite steps in a row end the run.
        loss_spike_factor: > 0 logs (and counts as ``train/loss_spikes``) a loss above this factor times the
            median of the last ``loss_spike_window`` losses; 0 turns the check off.
        deterministic: single-thread deterministic CPU kernels (``pangu_ms.train.determinism``), so the same
            command gives bit-identical losses run to run; false uses MindSpore's default thread pool.
        recompute: activation recompute (``pangu_ms/config/recompute.py``): ``none``, ``full`` (whole decoder
            layers), a preset (``selective``, ``moe_fine``), a list of modules (norm, mla_up_proj, core_attn,
            moe_act, mlp_act, experts, shared_expert, mlp, mtp), or ``auto`` (the trainer picks the cheapest
            granularity whose predicted peak fits ``memory_budget_gb``: ``pangu_ms/sim/recompute_choice.py``).
            Applied with ``Cell.recompute()``.
        memory_budget_gb: device memory budget (GB = 1e9 bytes) for ``recompute: auto``; 0 = not set.
        recompute_layers_per_stage: full-layer recompute of the first n_c decoder layers of each virtual pipeline
            stage c (pp*vpp entries; MindFormers ``recompute: [...]``; ``pangu_ms/config/stage_recompute.py``).
            Empty = off.
        swap: offload to host memory between uses (optimizer state, activations), Ascend only
            (``pangu_ms/config/swap.py``, docs/swap.md).
        reset_attention_mask: packed rows attend only within each document (the stored ``segment_ids``; as
            Megatron / MindSpeed ``--reset-attention-mask``); false attends across the whole row.
        reset_position_ids: RoPE positions restart at 0 in every document of a packed row (``--reset-position-ids``).
            Both apply to training and validation of the pretrain and long-context stages (prepared data only);
            the loss still counts every token, including a document's last token predicting the next one's first.
    """

    seed: int = 1234
    steps: int = 100
    seq_length: int = 64
    global_batch_size: int = 4
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 10
    lr_schedule: str = _choice("cosine", ("cosine", "wsd", "constant"))
    decay_fraction: float = 0.2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    mode: str = _choice("graph", ("graph", "pynative"))
    log_interval: int = 10
    eval_interval: int = 50
    save_interval: int = 100
    keep_last: int = 3
    output_dir: str = "output/run"
    phases: list[PhaseConfig] = field(default_factory=list)
    checkpoint_format: str = _choice("safetensors", ("safetensors", "ckpt"))
    resume: bool = True
    eval_batches: int = 20
    sample_tokens: int = 64
    peak_flops: float = 0.0
    on_nonfinite: str = _choice("stop", ("stop", "skip_step"))
    max_skipped_steps: int = 5
    loss_spike_factor: float = 0.0
    loss_spike_window: int = 50
    deterministic: bool = False
    recompute: Any = "none"
    memory_budget_gb: float = 0.0
    recompute_layers_per_stage: list[int] = field(default_factory=list)
    swap: SwapConfig = field(default_factory=SwapConfig)
    reset_attention_mask: bool = False
    reset_position_ids: bool = False


@dataclass
class DataConfig:
    """Where training tokens come from.

    Attributes:
        source: ``synthetic`` (random Zipf-distributed tokens from ``train.seed``; needs no files) or
            ``mindrecord`` (packed shards written by ``tools/preprocess_data.py``).
        path: directory of the prepared data (``mindrecord``). When it does not exist and ``corpus`` is set, the
            training entry prepares it first (tokenizer trained with vocab = ``model.vocab_size``).
        corpus: what to prepare, ``name[:weight],...`` of built-in corpora (shakespeare, cantonese, wikipedia)
            or .txt / .jsonl files.
        tokenizer: existing tokenizer.json or sentencepiece model to prepare with (empty: train a BPE).
        valid_fraction: documents held out for validation when preparing.
        weights: mixture weights by corpus name for single-phase runs (empty = the prepared data's weights).
        max_docs: when preparing, keep at most this many documents per corpus (0 = all).
    """

    source: str = _choice("synthetic", ("synthetic", "mindrecord"))
    path: str = ""
    corpus: str = ""
    tokenizer: str = ""
    valid_fraction: float = 0.01
    weights: dict[str, float] = field(default_factory=dict)
    max_docs: int = 0


@dataclass
class StageConfig:
    """Training stage.

    Attributes:
        name: ``pretrain``, ``long_context``, ``sft`` or ``rl``.
        init_from: checkpoint to start from (required by stages that follow pretraining).
    """

    name: str = _choice("pretrain", ("pretrain", "long_context", "sft", "rl"))
    init_from: str = ""


@dataclass
class Config:
    """A whole recipe."""

    model: ModelConfig = field(default_factory=ModelConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    long_context: LongContextConfig = field(default_factory=LongContextConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rl: RLConfig = field(default_factory=RLConfig)
