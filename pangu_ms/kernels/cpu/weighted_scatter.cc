// The sorted-block dispatcher's combine as one CPU kernel forward and one backward, for MindSpore's AOT Custom op
// (pangu_ms/kernels/ops.py).
//
// forward  (rows [R, d], index [R] int32 in [0, T), weight [R], like [T, d] (its shape only))
//          -> y [T, d]: y[t] = sum over r with index[r] = t of weight[r] * rows[r]   (in row order)
// backward (dy [T, d], rows, index, weight) -> drows [R, d] = weight[r] * dy[index[r]],
//          dweight [R] = dot(rows[r], dy[index[r]])
// An index outside [0, T) is an error (return code 3).
#include <cstdint>
#include <cstring>

#include "common.h"
#include "parallel.h"

namespace {

using namespace pangu_kernels;  // NOLINT: the kernels' shared helpers

template <typename T>
int forward(const T *rows, const int32_t *index, const T *weight, T *y, int64_t r_count, int64_t t_count,
            int64_t d) {
  for (int64_t r = 0; r < r_count; ++r)
    if (index[r] < 0 || index[r] >= t_count) return 3;
  std::memset(y, 0, sizeof(T) * t_count * d);
  // split the columns, not the rows: each output element adds its rows in row order (deterministic)
  parallel_rows(d, r_count, [=](int, int64_t begin, int64_t end) {
    for (int64_t r = 0; r < r_count; ++r) {
      const T w = weight[r];
      const T *src = rows + r * d;
      T *dst = y + static_cast<int64_t>(index[r]) * d;
#pragma omp simd
      for (int64_t j = begin; j < end; ++j) dst[j] += src[j] * w;
    }
  });
  return 0;
}

template <typename T>
int backward(const T *dy, const T *rows, const int32_t *index, const T *weight, T *drows, T *dweight,
             int64_t r_count, int64_t t_count, int64_t d) {
  for (int64_t r = 0; r < r_count; ++r)
    if (index[r] < 0 || index[r] >= t_count) return 3;
  parallel_rows(r_count, 2 * d, [=](int, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T *g = dy + static_cast<int64_t>(index[r]) * d, *v = rows + r * d;
      T *out = drows + r * d;
      const T w = weight[r];
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < d; ++j) {
        out[j] = g[j] * w;
        dot += static_cast<double>(g[j]) * v[j];
      }
      dweight[r] = static_cast<T>(dot);
    }
  });
  return 0;
}

}  // namespace

extern "C" int WeightedScatterForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                      void *stream, void *extra) {
  if (nparam != 5 || ndims[0] != 2 || ndims[1] != 1 || ndims[2] != 1 || ndims[3] != 2 || !is_i32(dtypes[1]))
    return 1;
  const int64_t r_count = shapes[0][0], d = shapes[0][1], t_count = shapes[3][0];
  const int32_t *index = static_cast<const int32_t *>(params[1]);
  return with_float_type(dtypes[0], [&](auto zero) {
    using T = decltype(zero);
    return forward(input<T>(params, 0), index, input<T>(params, 2), output<T>(params, 4), r_count, t_count, d);
  });
}

extern "C" int WeightedScatterBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                       void *stream, void *extra) {
  if (nparam != 6 || ndims[0] != 2 || ndims[1] != 2 || ndims[2] != 1 || !is_i32(dtypes[2])) return 1;
  const int64_t t_count = shapes[0][0], d = shapes[0][1], r_count = shapes[1][0];
  const int32_t *index = static_cast<const int32_t *>(params[2]);
  return with_float_type(dtypes[0], [&](auto zero) {
    using T = decltype(zero);
    return backward(input<T>(params, 0), input<T>(params, 1), index,
                    input<T>(params, 3), output<T>(params, 4), output<T>(params, 5), r_count, t_count, d);
  });
}
