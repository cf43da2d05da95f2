// Rotary position embedding as one CPU kernel forward and one backward, for MindSpore's AOT Custom op
// (pangu_ms/kernels/ops.py).
//
// forward  (x [B, ..., S, D], cos, sin (tables [S, D], or per row [B, 1, S, D] / [B, S, D]), interleaved [1])
//          -> y = x * cos + rotate(x) * sin, rotate(x)[a] = -x[b], rotate(x)[b] = x[a] for each pair (a, b):
//          (2i, 2i + 1) when interleaved != 0, else (i, i + D/2)             (pangu_ms/model/rope.py)
// backward (dy, cos, sin, interleaved) -> dx = dy * cos + rotate^T(dy * sin):
//          dx[a] = dy[a] cos[a] + dy[b] sin[b],  dx[b] = dy[b] cos[b] - dy[a] sin[a]
#include <cstdint>
#include <cstring>

#include "common.h"
#include "parallel.h"

namespace {

using namespace pangu_kernels;  // NOLINT: the kernels' shared helpers

struct Layout {
  int64_t rows, per_batch, s, d;   // rows of x, rows per batch entry, sequence length, head dim
  bool batched_table;              // tables [B, 1, S, D] / [B, S, D] (explicit positions) vs [S, D]
  bool interleaved;
};

Layout layout_of(int ndim, const int64_t *x_shape, int table_ndim, bool interleaved) {
  Layout l{};
  l.d = x_shape[ndim - 1];
  l.s = x_shape[ndim - 2];
  l.rows = 1;
  for (int i = 0; i + 1 < ndim; ++i) l.rows *= x_shape[i];
  l.per_batch = l.rows / x_shape[0];
  l.batched_table = table_ndim > 2;
  l.interleaved = interleaved;
  return l;
}

template <typename T, bool Backward>
void rotate(const T *in, const T *cos, const T *sin, T *out, const Layout l) {
  parallel_rows(l.rows, 4 * l.d, [=](int, int64_t begin, int64_t end) {
    const int64_t half = l.d / 2;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t pos = r % l.s;
      const int64_t table_row = l.batched_table ? (r / l.per_batch) * l.s + pos : pos;
      const T *c = cos + table_row * l.d, *sn = sin + table_row * l.d, *v = in + r * l.d;
      T *o = out + r * l.d;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = l.interleaved ? 2 * i : i, b = l.interleaved ? 2 * i + 1 : i + half;
        if (Backward) {
          o[a] = v[a] * c[a] + v[b] * sn[b];
          o[b] = v[b] * c[b] - v[a] * sn[a];
        } else {
          o[a] = v[a] * c[a] + (-v[b]) * sn[a];
          o[b] = v[b] * c[b] + v[a] * sn[b];
        }
      }
    }
  });
}

template <bool Backward>
int run(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 5 || ndims[0] < 2 || ndims[1] != ndims[2] || shapes[0][ndims[0] - 1] % 2 != 0) return 1;
  return with_float_type(dtypes[0], [&](auto zero) {
    using T = decltype(zero);
    const Layout l = layout_of(ndims[0], shapes[0], ndims[1], input<T>(params, 3)[0] != T(0));
    rotate<T, Backward>(input<T>(params, 0), input<T>(params, 1), input<T>(params, 2), output<T>(params, 4), l);
    return 0;
  });
}

}  // namespace

extern "C" int RopeForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                           void *stream, void *extra) {
  return run<false>(nparam, params, ndims, shapes, dtypes);
}

extern "C" int RopeBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream, void *extra) {
  return run<true>(nparam, params, ndims, shapes, dtypes);
}
