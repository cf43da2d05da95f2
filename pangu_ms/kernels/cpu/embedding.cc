// Token-embedding lookup as one CPU kernel forward and one backward, for MindSpore's AOT Custom op
// (pangu_ms/kernels/ops.py). MindSpore's CPU backward of Gather (UnsortedSegmentSum into [V, d]) is slow.
//
// forward  (weight [V, d], ids [T] int32) -> rows [T, d] = weight[ids]
// backward (drows [T, d], ids [T], weight [V, d] (its shape only)) -> dweight [V, d]: dweight[v] = sum of the
//          drows of the tokens with id v, added in token order (column ranges run in parallel: deterministic)
// An id outside [0, V) is an error (return code 3).
#include <cstdint>
#include <cstring>

#include "common.h"
#include "parallel.h"

namespace {

using namespace pangu_kernels;  // NOLINT: the kernels' shared helpers

template <typename T>
int forward(const T *weight, const int32_t *ids, T *rows, int64_t vocab, int64_t tokens, int64_t d) {
  for (int64_t t = 0; t < tokens; ++t)
    if (ids[t] < 0 || ids[t] >= vocab) return 3;
  parallel_rows(tokens, d, [=](int, int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) std::memcpy(rows + t * d, weight + ids[t] * d, sizeof(T) * d);
  });
  return 0;
}

template <typename T>
int backward(const T *drows, const int32_t *ids, T *dweight, int64_t vocab, int64_t tokens, int64_t d) {
  for (int64_t t = 0; t < tokens; ++t)
    if (ids[t] < 0 || ids[t] >= vocab) return 3;
  std::memset(dweight, 0, sizeof(T) * vocab * d);
  // split the d columns (not the tokens) so that every element's sum keeps the token order
  parallel_rows(d, tokens, [=](int, int64_t begin, int64_t end) {
    for (int64_t t = 0; t < tokens; ++t) {
      const T *src = drows + t * d;
      T *dst = dweight + ids[t] * d;
#pragma omp simd
      for (int64_t j = begin; j < end; ++j) dst[j] += src[j];
    }
  });
  return 0;
}

}  // namespace

extern "C" int EmbeddingForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *stream, void *extra) {
  if (nparam != 3 || ndims[0] != 2 || ndims[1] != 1 || !is_i32(dtypes[1])) return 1;
  const int64_t vocab = shapes[0][0], d = shapes[0][1], tokens = shapes[1][0];
  const int32_t *ids = static_cast<const int32_t *>(params[1]);
  return with_float_type(dtypes[0], [&](auto zero) {
    using T = decltype(zero);
    return forward(input<T>(params, 0), ids, output<T>(params, 2), vocab, tokens, d);
  });
}

extern "C" int EmbeddingBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *stream, void *extra) {
  if (nparam != 4 || ndims[0] != 2 || ndims[1] != 1 || !is_i32(dtypes[1])) return 1;
  const int64_t tokens = shapes[0][0], d = shapes[0][1], vocab = shapes[2][0];
  const int32_t *ids = static_cast<const int32_t *>(params[1]);
  return with_float_type(dtypes[0], [&](auto zero) {
    using T = decltype(zero);
    return backward(input<T>(params, 0), ids, output<T>(params, 3), vocab, tokens, d);
  });
}
