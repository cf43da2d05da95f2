"""layers/explicit_broadcast.py: the Softmax Cell's written-out backward and RecomputableSoftmax's autodiff
gradient equal the softmax Jacobian computed in numpy (fp64), in graph mode; both forwards equal the built-in
softmax; the two give bit-identical fp32 gradients (recompute swaps one for the other); ``expand_as`` gives
NumPy broadcasting's values."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from pangu_ms.layers.explicit_broadcast import RecomputableSoftmax, Softmax, expand_as


class _Loss(nn.Cell):
    """sum(softmax(x) * weights): its gradient is J^T weights."""

    def __init__(self, softmax_cls=Softmax):
        super().__init__()
        self.softmax = softmax_cls()

    def construct(self, x, weights):
        return (self.softmax(x) * weights).sum()


@pytest.mark.parametrize("softmax_cls", [Softmax, RecomputableSoftmax])
def test_softmax_backward_matches_the_numpy_jacobian(softmax_cls):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
    grad = ms.jit(ms.grad(_Loss(softmax_cls), grad_position=0))(Tensor(x, ms.float64), Tensor(w, ms.float64)).asnumpy()
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    jac = p[..., :, None] * (np.eye(5) - p[..., None, :])              # d p_i / d x_j
    np.testing.assert_allclose(grad, np.einsum("...i,...ij->...j", w, jac), rtol=1e-12, atol=1e-14)
    fwd = ms.jit(softmax_cls())(Tensor(x, ms.float64)).asnumpy()
    np.testing.assert_array_equal(fwd, ops.softmax(Tensor(x, ms.float64), -1).asnumpy())


def test_the_two_softmax_gradients_are_bit_identical():
    rng = np.random.default_rng(1)
    x, w = (Tensor(rng.standard_normal((2, 4, 8, 8)).astype(np.float32)) for _ in range(2))
    a, b = (ms.jit(ms.grad(_Loss(cls), grad_position=0))(x, w).asnumpy() for cls in (Softmax, RecomputableSoftmax))
    np.testing.assert_array_equal(a, b)


def test_expand_as_is_numpy_broadcasting():
    small, like = np.arange(3.0).reshape(3, 1), np.zeros((2, 3, 4))
    got = expand_as(Tensor(small, ms.float32), Tensor(like, ms.float32)).asnumpy()
    np.testing.assert_array_equal(got, np.broadcast_to(small, like.shape))
