// Shared by the fused CPU kernels: the dtype names MindSpore's AOT interface passes, and row counts.
#pragma once

#include <cstdint>
#include <cstring>

namespace pangu_kernels {

inline bool is_f64(const char *dtype) { return std::strcmp(dtype, "float64") == 0; }
inline bool is_f32(const char *dtype) { return std::strcmp(dtype, "float32") == 0 || std::strcmp(dtype, "float") == 0; }
inline bool is_i32(const char *dtype) { return std::strcmp(dtype, "int32") == 0; }

// rows of a [..., d] tensor: the product of all but its last dimension
inline int64_t leading_rows(int ndim, const int64_t *shape) {
  int64_t rows = 1;
  for (int i = 0; i + 1 < ndim; ++i) rows *= shape[i];
  return rows;
}

}  // namespace pangu_kernels
