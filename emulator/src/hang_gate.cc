#include "hang_gate.h"

namespace stripe_emulator {

void HangGate::hold(std::chrono::milliseconds duration) {
  std::unique_lock lock(mutex_);
  const auto release_at_entry = releases_;
  ++held_;
  changed_.notify_all();
  changed_.wait_for(lock, duration, [&] { return shut_ || releases_ != release_at_entry; });
  --held_;
  changed_.notify_all();
}

void HangGate::release_all() {
  std::lock_guard lock(mutex_);
  ++releases_;
  changed_.notify_all();
}

void HangGate::shut() {
  std::lock_guard lock(mutex_);
  shut_ = true;
  changed_.notify_all();
}

std::size_t HangGate::held() const {
  std::lock_guard lock(mutex_);
  return held_;
}

bool HangGate::wait_until_held(std::size_t count, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return held_ >= count; });
}

}  // namespace stripe_emulator
