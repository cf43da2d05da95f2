"""The fused CPU kernels as MindSpore primitives (AOT ``Custom`` ops with their bprop).

Each factory returns fresh primitives, so every Cell owns its own (a shard strategy set on one never leaks into
another). Inputs must share one dtype, float32 or float64; a kernel returns an error code otherwise.
"""
from __future__ import annotations

from mindspore import ops

from .build import library


def rms_norm_primitives():
    """(forward, backward) of ``cpu/rms_norm.cc``.

    forward(x [..., d], weight [d], eps [1]) -> (y [..., d], inv_rms [...]); its bprop calls backward(dy, x,
    weight, inv_rms) -> (dx, dweight). The gradient reaching ``inv_rms`` is ignored: callers use ``y`` only.
    """
    path = library("rms_norm")
    backward = ops.Custom(f"{path}:RmsNormBackward", out_shape=lambda dy, x, w, inv: (x, w),
                          out_dtype=lambda dy, x, w, inv: (x, w), func_type="aot")
    zeros_like = ops.ZerosLike()

    def bprop(x, weight, eps, out, dout):
        dx, dweight = backward(dout[0], x, weight, out[1])
        return dx, dweight, zeros_like(eps)

    forward = ops.Custom(f"{path}:RmsNormForward", out_shape=lambda x, w, eps: (x, x[:-1]),
                         out_dtype=lambda x, w, eps: (x, x), func_type="aot", bprop=bprop)
    return forward, backward


def masked_softmax_primitives():
    """(forward, backward) of ``cpu/masked_softmax.cc``.

    forward(scores [B, N, S, Sk], mask [S, Sk] or [B, 1, S, Sk], scale [1]) -> softmax(scores * scale + mask);
    its bprop calls backward(dprobs, probs, scale) -> dscores. The mask and the scale get zero gradients.
    """
    path = library("masked_softmax")
    backward = ops.Custom(f"{path}:MaskedSoftmaxBackward", out_shape=lambda dp, p, scale: dp,
                          out_dtype=lambda dp, p, scale: dp, func_type="aot")
    zeros_like = ops.ZerosLike()

    def bprop(scores, mask, scale, out, dout):
        return backward(dout, out, scale), zeros_like(mask), zeros_like(scale)

    forward = ops.Custom(f"{path}:MaskedSoftmaxForward", out_shape=lambda scores, mask, scale: scores,
                         out_dtype=lambda scores, mask, scale: scores, func_type="aot", bprop=bprop)
    return forward, backward


def swiglu_primitives():
    """(forward, backward) of ``cpu/swiglu.cc``: forward(h [..., 2F] = gate | up) -> silu(gate) * up [..., F];
    its bprop calls backward(da, h) -> dh."""
    path = library("swiglu")
    backward = ops.Custom(f"{path}:SwigluBackward", out_shape=lambda da, h: h, out_dtype=lambda da, h: h,
                          func_type="aot")

    def bprop(h, out, dout):
        return (backward(dout, h),)

    forward = ops.Custom(f"{path}:SwigluForward", out_shape=lambda h: list(h[:-1]) + [h[-1] // 2],
                         out_dtype=lambda h: h, func_type="aot", bprop=bprop)
    return forward, backward


def rope_primitives():
    """(forward, backward) of ``cpu/rope.cc``: forward(x [B, ..., S, D], cos, sin, interleaved [1]) ->
    x * cos + rotate(x) * sin (tables [S, D], or [B, 1, S, D] / [B, S, D] at explicit positions); its bprop calls
    backward(dy, cos, sin, interleaved) -> dx. The tables and the flag get zero gradients."""
    path = library("rope")
    backward = ops.Custom(f"{path}:RopeBackward", out_shape=lambda dy, c, s, flag: dy,
                          out_dtype=lambda dy, c, s, flag: dy, func_type="aot")
    zeros_like = ops.ZerosLike()

    def bprop(x, cos, sin, interleaved, out, dout):
        return backward(dout, cos, sin, interleaved), zeros_like(cos), zeros_like(sin), zeros_like(interleaved)

    forward = ops.Custom(f"{path}:RopeForward", out_shape=lambda x, c, s, flag: x,
                         out_dtype=lambda x, c, s, flag: x, func_type="aot", bprop=bprop)
    return forward, backward


def embedding_primitives():
    """(forward, backward) of ``cpu/embedding.cc``: forward(weight [V, d], ids [T] int32) -> weight[ids] [T, d];
    its bprop calls backward(drows, ids, weight) -> dweight [V, d] (ids get a zero gradient)."""
    path = library("embedding")
    backward = ops.Custom(f"{path}:EmbeddingBackward", out_shape=lambda dy, ids, w: w,
                          out_dtype=lambda dy, ids, w: w, func_type="aot")
    zeros_like = ops.ZerosLike()

    def bprop(weight, ids, out, dout):
        return backward(dout, ids, weight), zeros_like(ids)

    forward = ops.Custom(f"{path}:EmbeddingForward", out_shape=lambda w, ids: [ids[0], w[1]],
                         out_dtype=lambda w, ids: w, func_type="aot", bprop=bprop)
    return forward, backward


def weighted_scatter_primitives():
    """(forward, backward) of ``cpu/weighted_scatter.cc``: forward(rows [R, d], index [R] int32, weight [R],
    like [T, d]) -> y [T, d], y[t] = sum_{index[r] = t} weight[r] rows[r]; its bprop calls backward(dy, rows,
    index, weight) -> (drows, dweight). ``like`` (shape only) and the index get zero gradients."""
    path = library("weighted_scatter")
    backward = ops.Custom(f"{path}:WeightedScatterBackward", out_shape=lambda dy, rows, index, w: (rows, w),
                          out_dtype=lambda dy, rows, index, w: (rows, w), func_type="aot")
    zeros_like = ops.ZerosLike()

    def bprop(rows, index, weight, like, out, dout):
        drows, dweight = backward(dout, rows, index, weight)
        return drows, zeros_like(index), dweight, zeros_like(like)

    forward = ops.Custom(f"{path}:WeightedScatterForward", out_shape=lambda rows, index, w, like: like,
                         out_dtype=lambda rows, index, w, like: like, func_type="aot", bprop=bprop)
    return forward, backward
