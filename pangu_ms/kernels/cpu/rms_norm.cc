// RMSNorm forward and backward as one CPU kernel each, for MindSpore's AOT Custom op (pangu_ms/kernels/ops.py).
//
// forward  (x [rows, d], weight [d], eps [1]) -> (y [rows, d], inv_rms [rows])
//          inv_rms = 1 / sqrt(mean(x^2) + eps),  y = (x * inv_rms) * weight   (the reference path's association)
// backward (dy [rows, d], x, weight, inv_rms) -> (dx [rows, d], dweight [d])
//          g = dy * weight,  dx = inv_rms * (g - x * inv_rms^2 * mean(g * x)),  dweight = sum_rows dy * x * inv_rms
//
// Sums over d and over rows accumulate in double. float32 and float64; any leading shape (rows = its product).
// Rows are split over threads (parallel.h); the weight gradient adds the per-range partial sums in range order.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"
#include "parallel.h"

namespace {

using namespace pangu_kernels;  // NOLINT: the kernels' shared helpers

template <typename T>
void forward(const T *x, const T *weight, double eps, T *y, T *inv_rms, int64_t rows, int64_t d) {
  parallel_rows(rows, d, [=](int, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const T *xr = x + r * d;
    T *yr = y + r * d;
    double squares = 0.0;
#pragma omp simd reduction(+ : squares)
    for (int64_t j = 0; j < d; ++j) squares += static_cast<double>(xr[j]) * xr[j];
    const T mean = static_cast<T>(squares / static_cast<double>(d));
    const T inv = static_cast<T>(1) / std::sqrt(mean + static_cast<T>(eps));
    inv_rms[r] = inv;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) yr[j] = (xr[j] * inv) * weight[j];
  }
  });
}

template <typename T>
void backward(const T *dy, const T *x, const T *weight, const T *inv_rms, T *dx, T *dweight, int64_t rows,
              int64_t d) {
  const int ranges = row_ranges(rows, d);
  std::vector<double> partial(static_cast<size_t>(ranges) * d, 0.0);
  parallel_rows(rows, d, [=, &partial](int range, int64_t begin, int64_t end) {
  double *dw = partial.data() + static_cast<size_t>(range) * d;
  for (int64_t r = begin; r < end; ++r) {
    const T *xr = x + r * d;
    const T *dyr = dy + r * d;
    T *dxr = dx + r * d;
    const T inv = inv_rms[r];
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < d; ++j) dot += static_cast<double>(dyr[j] * weight[j]) * xr[j];
    for (int64_t j = 0; j < d; ++j) dw[j] += static_cast<double>(dyr[j]) * (xr[j] * inv);
    const T c = static_cast<T>(dot / static_cast<double>(d)) * inv * inv;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) dxr[j] = inv * (dyr[j] * weight[j] - xr[j] * c);
  }
  });
  for (int64_t j = 0; j < d; ++j) {
    double sum = 0.0;
    for (int range = 0; range < ranges; ++range) sum += partial[static_cast<size_t>(range) * d + j];
    dweight[j] = static_cast<T>(sum);
  }
}

}  // namespace

extern "C" int RmsNormForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream, void *extra) {
  if (nparam != 5) return 1;
  const int64_t d = shapes[0][ndims[0] - 1];
  const int64_t rows = leading_rows(ndims[0], shapes[0]);
  return with_float_type(dtypes[0], [&](auto zero) {
    using T = decltype(zero);
    forward(input<T>(params, 0), input<T>(params, 1), input<T>(params, 2)[0],
            output<T>(params, 3), output<T>(params, 4), rows, d);
    return 0;
  });
}

extern "C" int RmsNormBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                               void *stream, void *extra) {
  if (nparam != 6) return 1;
  const int64_t d = shapes[1][ndims[1] - 1];
  const int64_t rows = leading_rows(ndims[1], shapes[1]);
  return with_float_type(dtypes[0], [&](auto zero) {
    using T = decltype(zero);
    backward(input<T>(params, 0), input<T>(params, 1), input<T>(params, 2),
             input<T>(params, 3), output<T>(params, 4), output<T>(params, 5), rows, d);
    return 0;
  });
}
