// Every API request the emulator received, in arrival order, with the status it was answered
// (0 until answered, and for dropped connections). Thread-safe.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "stripe_emulator/emulator.h"

namespace stripe_emulator {

class RequestLog {
 public:
  using Ticket = std::uint64_t;

  Ticket add(RecordedRequest request);
  void answered(Ticket ticket, int status);
  std::vector<RecordedRequest> entries() const;
  void clear();

 private:
  struct Entry {
    Ticket ticket;
    RecordedRequest request;
  };

  mutable std::mutex mutex_;
  std::vector<Entry> entries_;
  Ticket next_ticket_ = 0;
};

}  // namespace stripe_emulator
