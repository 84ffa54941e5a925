// Every API request the emulator received, in arrival order, stamped with when it arrived and with
// the status it was answered (0 until answered, and for dropped connections), and counts of the
// answers. Thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "api_error.h"
#include "stripe_emulator/emulator.h"

namespace stripe_emulator {

class RequestLog {
 public:
  using Ticket = std::uint64_t;
  using TimePoint = std::chrono::steady_clock::time_point;

  Ticket add(RecordedRequest request);  // sets received_at
  void answered(Ticket ticket, const Answer& answer);
  void dropped(Ticket ticket);  // the connection was dropped without an answer
  std::vector<RecordedRequest> entries() const;
  AnswerCounts counts() const;
  // Requests received in [from, to) that were answered with a status in [min_status, max_status]
  // (not the dropped ones, nor those not answered yet).
  std::size_t count(int min_status, int max_status, TimePoint from, TimePoint to) const;
  void clear();

 private:
  struct Entry {
    Ticket ticket;
    RecordedRequest request;
  };

  // The entry with `ticket`, or nullptr when it was cleared.
  Entry* find(Ticket ticket);

  mutable std::mutex mutex_;
  std::vector<Entry> entries_;  // by ticket, and so by received_at
  Ticket next_ticket_ = 0;
  AnswerCounts counts_;
};

}  // namespace stripe_emulator
