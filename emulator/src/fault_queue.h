// Faults queued by tests. Each entry applies to the next `count` API requests whose decoded path
// starts with its prefix; entries are consulted in the order they were queued. Thread-safe.
#pragma once

#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>
#include <utility>
#include <vector>

#include "stripe_emulator/emulator.h"

namespace stripe_emulator {

class FaultQueue {
 public:
  void push(const Fault& fault, int count);
  void clear();
  void set_random(const std::vector<std::pair<Fault, double>>& faults, std::uint32_t seed);
  // The fault for this request, if any; consumes one of its count.
  std::optional<Fault> take(std::string_view path);

 private:
  struct Entry {
    Fault fault;
    int remaining = 0;
  };

  std::mutex mutex_;
  std::deque<Entry> entries_;
  std::vector<std::pair<Fault, double>> random_;
  std::mt19937 generator_;
};

}  // namespace stripe_emulator
