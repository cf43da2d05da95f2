// Row-parallel loops for the fused CPU kernels: std::thread over contiguous row ranges, only when the work is
// large enough to pay for starting a thread (~20-50 us); small calls run on the calling thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

namespace pangu_kernels {

// elements of work below which one more thread does not pay for itself
constexpr int64_t kMinWorkPerThread = 1 << 16;

// $PANGU_MS_KERNEL_THREADS, else the machine's hardware threads
inline int max_threads() {
  static const int n = [] {
    const char *env = std::getenv("PANGU_MS_KERNEL_THREADS");
    const int value = env ? std::atoi(env) : static_cast<int>(std::thread::hardware_concurrency());
    return std::max(1, value);
  }();
  return n;
}

// how many ranges parallel_rows splits `rows` rows of `work_per_row` elements into
inline int row_ranges(int64_t rows, int64_t work_per_row) {
  const int64_t by_work = std::max<int64_t>(1, rows * work_per_row / kMinWorkPerThread);
  return static_cast<int>(std::min<int64_t>({static_cast<int64_t>(max_threads()), by_work, std::max<int64_t>(1, rows)}));
}

// fn(range index, first row, end row) for each of row_ranges(...) contiguous ranges of [0, rows)
template <typename F>
void parallel_rows(int64_t rows, int64_t work_per_row, F fn) {
  const int ranges = row_ranges(rows, work_per_row);
  const int64_t chunk = (rows + ranges - 1) / ranges;
  std::vector<std::thread> helpers;
  for (int t = 1; t < ranges; ++t) {
    const int64_t begin = t * chunk, end = std::min(rows, begin + chunk);
    if (begin < end) helpers.emplace_back(fn, t, begin, end);
  }
  fn(0, 0, std::min(rows, chunk));
  for (auto &helper : helpers) helper.join();
}

}  // namespace pangu_kernels
