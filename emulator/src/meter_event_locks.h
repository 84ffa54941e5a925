// Stripe's rule for v1 meter events: one request at a time per customer and meter. A request
// holds the lock on its (event name, customer) while it is processed; another request for the same
// pair meanwhile is refused, and the refusal counted. Thread-safe.
#pragma once

#include <cstddef>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>

namespace stripe_emulator {

class MeterEventLocks {
 public:
  // Held while one request is processed; released when destroyed.
  class Lock {
   public:
    Lock(MeterEventLocks& locks, std::string key) : locks_(&locks), key_(std::move(key)) {}
    Lock(Lock&& other) noexcept
        : locks_(std::exchange(other.locks_, nullptr)), key_(std::move(other.key_)) {}
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;
    Lock& operator=(Lock&&) = delete;
    ~Lock();

   private:
    MeterEventLocks* locks_;
    std::string key_;
  };

  // The lock on (event_name, customer), or nothing (a counted refusal) when another request holds
  // it.
  std::optional<Lock> try_lock(const std::string& event_name, const std::string& customer);
  std::size_t refusals() const;

 private:
  mutable std::mutex mutex_;
  std::set<std::string> held_;  // event name + '\n' + customer
  std::size_t refusals_ = 0;
};

}  // namespace stripe_emulator
