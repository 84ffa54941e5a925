#include "commit_signal.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <climits>

namespace stripe_billing {
namespace {

// The futex word is the atomic's own storage (libstdc++ does the same for C++20's atomic wait).
std::uint32_t* word(std::atomic<std::uint32_t>& atomic) {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  return reinterpret_cast<std::uint32_t*>(&atomic);
}

}  // namespace

void CommitSignal::publish(std::uint64_t sequence) {
  published_.store(sequence, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  if (waiters_.load(std::memory_order_acquire) > 0) {
    syscall(SYS_futex, word(generation_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
  }
}

bool CommitSignal::wait_until(std::uint64_t sequence,
                              std::chrono::steady_clock::time_point deadline) {
  if (published() >= sequence) return true;
  waiters_.fetch_add(1, std::memory_order_acq_rel);
  bool done = false;
  while (true) {
    // Read the generation before checking: a publish in between changes it, so the wait below
    // returns at once instead of sleeping through it.
    const std::uint32_t generation = generation_.load(std::memory_order_acquire);
    if (published() >= sequence) {
      done = true;
      break;
    }
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) break;
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec timeout{static_cast<time_t>(ns / 1'000'000'000),
                     static_cast<long>(ns % 1'000'000'000)};
    syscall(SYS_futex, word(generation_), FUTEX_WAIT_PRIVATE, generation, &timeout, nullptr, 0);
  }
  waiters_.fetch_sub(1, std::memory_order_acq_rel);
  return done;
}

}  // namespace stripe_billing
