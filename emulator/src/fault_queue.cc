#include "fault_queue.h"

namespace stripe_emulator {

void FaultQueue::push(const Fault& fault, int count) {
  if (count <= 0) return;
  std::lock_guard lock(mutex_);
  entries_.push_back(Entry{fault, count});
}

void FaultQueue::clear() {
  std::lock_guard lock(mutex_);
  entries_.clear();
}

void FaultQueue::set_random(const std::vector<std::pair<Fault, double>>& faults,
                            std::uint32_t seed) {
  std::lock_guard lock(mutex_);
  random_ = faults;
  generator_.seed(seed);
}

std::optional<Fault> FaultQueue::take(std::string_view path) {
  std::lock_guard lock(mutex_);
  for (auto entry = entries_.begin(); entry != entries_.end(); ++entry) {
    if (path.substr(0, entry->fault.path_prefix.size()) != entry->fault.path_prefix) continue;
    const auto fault = entry->fault;
    if (--entry->remaining == 0) entries_.erase(entry);
    return fault;
  }
  if (random_.empty()) return std::nullopt;
  double roll = std::uniform_real_distribution<double>(0.0, 1.0)(generator_);
  for (const auto& [fault, probability] : random_) {
    if (roll < probability) {
      if (path.substr(0, fault.path_prefix.size()) == fault.path_prefix) return fault;
      return std::nullopt;
    }
    roll -= probability;
  }
  return std::nullopt;
}

}  // namespace stripe_emulator
