#include "meter_event_locks.h"

namespace stripe_emulator {

MeterEventLocks::Lock::~Lock() {
  if (locks_ == nullptr) return;
  std::lock_guard lock(locks_->mutex_);
  locks_->held_.erase(key_);
}

std::optional<MeterEventLocks::Lock> MeterEventLocks::try_lock(const std::string& event_name,
                                                               const std::string& customer) {
  auto key = event_name + '\n' + customer;
  std::lock_guard lock(mutex_);
  if (!held_.insert(key).second) {
    ++refusals_;
    return std::nullopt;
  }
  return Lock(*this, std::move(key));
}

std::size_t MeterEventLocks::refusals() const {
  std::lock_guard lock(mutex_);
  return refusals_;
}

}  // namespace stripe_emulator
