// Row-parallel loops for the fused CPU kernels on a small persistent pool of helper threads (created on first
// use, woken per call through a condition variable: ~10 us, against ~50 us to start a thread). Calls whose work
// is too small to pay for a wake-up, and calls made while another kernel holds the pool, run on the caller.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <unistd.h>

namespace pangu_kernels {

// elements of work below which one more thread does not pay for itself
constexpr int64_t kMinWorkPerThread = 1 << 15;

// $PANGU_MS_KERNEL_THREADS, else the machine's hardware threads
inline int max_threads() {
  static const int n = [] {
    const char *env = std::getenv("PANGU_MS_KERNEL_THREADS");
    const int value = env ? std::atoi(env) : static_cast<int>(std::thread::hardware_concurrency());
    return std::max(1, value);
  }();
  return n;
}

class Pool {
 public:
  static Pool &instance() {
    static Pool *pool = new Pool(max_threads() - 1);   // never destroyed: helpers live as long as the process
    return *pool;
  }

  // fn(i) for i in [0, n): i = 0 on the caller, the others on helpers; false (nothing run) if the pool is busy,
  // or in a process forked after the pool started (its helpers did not survive the fork)
  bool run(int n, const std::function<void(int)> &fn) {
    if (getpid() != owner_) return false;
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &fn;
      tasks_ = n;
      pending_ = n - 1;
      ++generation_;
    }
    wake_.notify_all();
    fn(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    task_ = nullptr;
    return true;
  }

  int helpers() const { return static_cast<int>(threads_.size()); }

 private:
  explicit Pool(int helpers) : owner_(getpid()) {
    for (int h = 0; h < helpers; ++h) threads_.emplace_back([this, h] { loop(h + 1); });
    for (auto &t : threads_) t.detach();
  }

  void loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)> *task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (index >= tasks_) continue;
        task = task_;
      }
      (*task)(index);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  const pid_t owner_;
  std::vector<std::thread> threads_;
  std::mutex busy_, mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)> *task_ = nullptr;
  int tasks_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
};

// how many ranges parallel_rows splits `rows` rows of `work_per_row` elements into
inline int row_ranges(int64_t rows, int64_t work_per_row) {
  const int64_t by_work = std::max<int64_t>(1, rows * work_per_row / kMinWorkPerThread);
  return static_cast<int>(std::min<int64_t>({static_cast<int64_t>(max_threads()), by_work, std::max<int64_t>(1, rows)}));
}

// fn(range index, first row, end row) for each of row_ranges(...) contiguous ranges of [0, rows); the ranges
// (and so any per-range partial sums) are the same whether the pool runs them or the caller does
template <typename F>
void parallel_rows(int64_t rows, int64_t work_per_row, F fn) {
  const int ranges = row_ranges(rows, work_per_row);
  const int64_t chunk = (rows + ranges - 1) / ranges;
  auto range = [&](int t) {
    const int64_t begin = t * chunk, end = std::min(rows, begin + chunk);
    if (begin < end) fn(t, begin, end);
  };
  if (ranges > 1 && Pool::instance().run(ranges, range)) return;
  for (int t = 0; t < ranges; ++t) range(t);
}

}  // namespace pangu_kernels
