"""layers/explicit_broadcast.py: the Softmax Cell's written-out backward equals the softmax Jacobian computed in
numpy (fp64), in graph mode, and ``expand_as`` gives NumPy broadcasting's values."""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from pangu_ms.layers.explicit_broadcast import Softmax, expand_as


class _Loss(nn.Cell):
    """sum(softmax(x) * weights): its gradient is J^T weights."""

    def __init__(self):
        super().__init__()
        self.softmax = Softmax()

    def construct(self, x, weights):
        return (self.softmax(x) * weights).sum()


def test_softmax_backward_matches_the_numpy_jacobian():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 5)), rng.standard_normal((2, 3, 5))
    grad = ms.jit(ms.grad(_Loss(), grad_position=0))(Tensor(x, ms.float64), Tensor(w, ms.float64)).asnumpy()
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    jac = p[..., :, None] * (np.eye(5) - p[..., None, :])              # d p_i / d x_j
    np.testing.assert_allclose(grad, np.einsum("...i,...ij->...j", w, jac), rtol=1e-12, atol=1e-14)
    fwd = Softmax()(Tensor(x, ms.float64)).asnumpy()
    np.testing.assert_array_equal(fwd, ops.softmax(Tensor(x, ms.float64), -1).asnumpy())


def test_expand_as_is_numpy_broadcasting():
    small, like = np.arange(3.0).reshape(3, 1), np.zeros((2, 3, 4))
    got = expand_as(Tensor(small, ms.float32), Tensor(like, ms.float32)).asnumpy()
    np.testing.assert_array_equal(got, np.broadcast_to(small, like.shape))
