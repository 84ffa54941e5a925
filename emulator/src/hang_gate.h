// Holds requests hit by a kHang fault until their time is up, release_all() or shut(). After
// shut() nothing is held any more, so stopping the server never waits on a hang. Thread-safe;
// hold() blocks only the calling request thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace stripe_emulator {

class HangGate {
 public:
  void hold(std::chrono::milliseconds duration);
  void release_all();
  void shut();
  std::size_t held() const;
  // True once `count` requests are held at the same time; false if `timeout` passes first.
  bool wait_until_held(std::size_t count, std::chrono::milliseconds timeout) const;

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::size_t held_ = 0;
  std::uint64_t releases_ = 0;
  bool shut_ = false;
};

}  // namespace stripe_emulator
