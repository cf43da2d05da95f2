// The attention core's scaled, masked softmax as one CPU kernel forward and one backward, for MindSpore's AOT
// Custom op (pangu_ms/kernels/ops.py).
//
// forward  (scores [B, N, S, Sk], mask [S, Sk] or [B, 1, S, Sk] (additive), scale [1]) -> probs [B, N, S, Sk]
//          probs = softmax(scores * scale + mask) over the last axis   (the reference path's order of ops)
// backward (dprobs, probs, scale [1]) -> dscores = scale * probs * (dprobs - sum(dprobs * probs))
//
// Built with -ffast-math (vectorised exp); the mask's large negative entries (-1e9) give exact zeros, as does
// any score more than 80 below its row's maximum (its reference probability is < 2e-35).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "common.h"
#include "parallel.h"

namespace {

using namespace pangu_kernels;  // NOLINT: the kernels' shared helpers

// exp(-80) ~ 1.8e-35: below it an entry's probability is taken as exactly 0 (float32's smallest normal is 1.2e-38)
constexpr float kUnderflow = 80.0f;

template <typename T>
void forward(const T *scores, const T *mask, int mask_ndim, T scale, T *probs, int64_t batch, int64_t heads,
             int64_t s, int64_t sk) {
  const int64_t rows = batch * heads * s;
  parallel_rows(rows, 4 * sk, [=](int, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t i = r % s, b = r / (heads * s);
      const T *m = mask + (mask_ndim == 2 ? i * sk : (b * s + i) * sk);
      const T *x = scores + r * sk;
      T *p = probs + r * sk;
      T top = x[0] * scale + m[0];
      for (int64_t j = 0; j < sk; ++j) {
        const T z = x[j] * scale + m[j];
        p[j] = z;
        top = z > top ? z : top;
      }
      // exp of a masked entry (-1e9) is exactly 0; feeding it to the vector exp would send the whole vector
      // down glibc's scalar special-case path (underflow), so such lanes skip it: below -kUnderflow, e = 0
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < sk; ++j) {
        const T z = p[j] - top;
        const T e = std::exp(z < -kUnderflow ? -kUnderflow : z);
        p[j] = z < -kUnderflow ? static_cast<T>(0) : e;
        sum += p[j];
      }
#pragma omp simd
      for (int64_t j = 0; j < sk; ++j) p[j] = p[j] / sum;
    }
  });
}

template <typename T>
void backward(const T *dprobs, const T *probs, T scale, T *dscores, int64_t rows, int64_t sk) {
  parallel_rows(rows, 3 * sk, [=](int, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T *dp = dprobs + r * sk, *p = probs + r * sk;
      T *dx = dscores + r * sk;
      T dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < sk; ++j) dot += dp[j] * p[j];
#pragma omp simd
      for (int64_t j = 0; j < sk; ++j) dx[j] = scale * (p[j] * (dp[j] - dot));
    }
  });
}

}  // namespace

extern "C" int MaskedSoftmaxForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                    void *stream, void *extra) {
  if (nparam != 4 || ndims[0] != 4 || (ndims[1] != 2 && ndims[1] != 4)) return 1;
  const int64_t *shape = shapes[0];
  if (ndims[1] == 4 && (shapes[1][0] != shape[0] || shapes[1][1] != 1)) return 3;   // [B, 1, S, Sk] only
  return with_float_type(dtypes[0], [&](auto zero) {
    using T = decltype(zero);
    forward(input<T>(params, 0), input<T>(params, 1), ndims[1],
            input<T>(params, 2)[0], output<T>(params, 3), shape[0], shape[1], shape[2], shape[3]);
    return 0;
  });
}

extern "C" int MaskedSoftmaxBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                     void *stream, void *extra) {
  if (nparam != 4) return 1;
  int64_t rows = 1;
  for (int k = 0; k + 1 < ndims[0]; ++k) rows *= shapes[0][k];
  const int64_t sk = shapes[0][ndims[0] - 1];
  return with_float_type(dtypes[0], [&](auto zero) {
    using T = decltype(zero);
    backward(input<T>(params, 0), input<T>(params, 1), input<T>(params, 2)[0], output<T>(params, 3), rows, sk);
    return 0;
  });
}
