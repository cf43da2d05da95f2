// Shared by the fused CPU kernels: the dtype names MindSpore's AOT interface passes, and row counts.
#pragma once

#include <cstdint>
#include <cstring>

namespace pangu_kernels {

inline bool is_f64(const char *dtype) { return std::strcmp(dtype, "float64") == 0; }
inline bool is_f32(const char *dtype) { return std::strcmp(dtype, "float32") == 0 || std::strcmp(dtype, "float") == 0; }
inline bool is_i32(const char *dtype) { return std::strcmp(dtype, "int32") == 0; }

// f(T{}) (an int return code) with T the C++ type of a float32 / float64 dtype name; 2 for any other dtype
template <typename F>
int with_float_type(const char *dtype, F &&f) {
  if (is_f32(dtype)) return f(float{});
  if (is_f64(dtype)) return f(double{});
  return 2;
}

// parameter i of an AOT call as an input / output array of T
template <typename T>
const T *input(void **params, int i) {
  return static_cast<const T *>(params[i]);
}
template <typename T>
T *output(void **params, int i) {
  return static_cast<T *>(params[i]);
}

// rows of a [..., d] tensor: the product of all but its last dimension
inline int64_t leading_rows(int ndim, const int64_t *shape) {
  int64_t rows = 1;
  for (int i = 0; i + 1 < ndim; ++i) rows *= shape[i];
  return rows;
}

}  // namespace pangu_kernels
