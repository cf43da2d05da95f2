// SwiGLU as one CPU kernel forward and one backward, for MindSpore's AOT Custom op (pangu_ms/kernels/ops.py).
//
// forward  (h [..., 2F] = gate | up) -> a [..., F] = silu(gate) * up,  silu(g) = g * sigmoid(g)
// backward (da [..., F], h) -> dh [..., 2F]:  dgate = da * up * s * (1 + g (1 - s)),  dup = da * silu(g),
//          s = sigmoid(g)
//
// Built with -ffast-math (vectorised exp). float32 and float64.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common.h"
#include "parallel.h"

namespace {

using namespace pangu_kernels;  // NOLINT: the kernels' shared helpers

template <typename T>
void forward(const T *h, T *a, int64_t rows, int64_t f) {
  parallel_rows(rows, 2 * f, [=](int, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T *gate = h + r * 2 * f, *up = gate + f;
      T *out = a + r * f;
#pragma omp simd
      for (int64_t j = 0; j < f; ++j) {
        const T s = static_cast<T>(1) / (static_cast<T>(1) + std::exp(-gate[j]));
        out[j] = (gate[j] * s) * up[j];
      }
    }
  });
}

template <typename T>
void backward(const T *da, const T *h, T *dh, int64_t rows, int64_t f) {
  parallel_rows(rows, 3 * f, [=](int, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T *gate = h + r * 2 * f, *up = gate + f, *d = da + r * f;
      T *dgate = dh + r * 2 * f, *dup = dgate + f;
#pragma omp simd
      for (int64_t j = 0; j < f; ++j) {
        const T g = gate[j];
        const T s = static_cast<T>(1) / (static_cast<T>(1) + std::exp(-g));
        dgate[j] = d[j] * up[j] * (s * (static_cast<T>(1) + g * (static_cast<T>(1) - s)));
        dup[j] = d[j] * (g * s);
      }
    }
  });
}

}  // namespace

extern "C" int SwigluForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  if (nparam != 2) return 1;
  const int64_t two_f = shapes[0][ndims[0] - 1];
  if (two_f % 2 != 0) return 3;
  const int64_t rows = leading_rows(ndims[0], shapes[0]);
  return with_float_type(dtypes[0], [&](auto zero) {
    using T = decltype(zero);
    forward(input<T>(params, 0), output<T>(params, 1), rows, two_f / 2);
    return 0;
  });
}

extern "C" int SwigluBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream, void *extra) {
  if (nparam != 3) return 1;
  const int64_t f = shapes[0][ndims[0] - 1];
  const int64_t rows = leading_rows(ndims[0], shapes[0]);
  return with_float_type(dtypes[0], [&](auto zero) {
    using T = decltype(zero);
    backward(input<T>(params, 0), input<T>(params, 1), output<T>(params, 2), rows, f);
    return 0;
  });
}
