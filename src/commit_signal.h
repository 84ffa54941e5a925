// How the intake's writer tells waiting callers that their events are committed: a sequence
// number and a Linux futex on a generation counter. A caller sleeps until the writer has
// published its sequence number or its deadline passes; the writer wakes every caller at once,
// and none of them needs a lock to wake, so a hundred callers waiting for one commit do not line
// up behind one mutex to leave (what a condition variable would make them do).
//
// Thread-safe. publish() never blocks; it makes a system call only when someone is waiting.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace stripe_billing {

class CommitSignal {
 public:
  // Everything up to `sequence` is committed (or counted as lost).
  void publish(std::uint64_t sequence);
  // True once `sequence` is published; false when `deadline` passes first.
  bool wait_until(std::uint64_t sequence, std::chrono::steady_clock::time_point deadline);
  std::uint64_t published() const { return published_.load(std::memory_order_acquire); }

 private:
  std::atomic<std::uint64_t> published_{0};
  std::atomic<std::uint32_t> generation_{0};  // the futex word
  std::atomic<std::uint32_t> waiters_{0};
};

}  // namespace stripe_billing
