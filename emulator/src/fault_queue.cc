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

std::optional<Fault> FaultQueue::take(std::string_view path) {
  std::lock_guard lock(mutex_);
  for (auto entry = entries_.begin(); entry != entries_.end(); ++entry) {
    if (path.substr(0, entry->fault.path_prefix.size()) != entry->fault.path_prefix) continue;
    const auto fault = entry->fault;
    if (--entry->remaining == 0) entries_.erase(entry);
    return fault;
  }
  return std::nullopt;
}

}  // namespace stripe_emulator
