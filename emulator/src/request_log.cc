#include "request_log.h"

#include <algorithm>

namespace stripe_emulator {

RequestLog::Ticket RequestLog::add(RecordedRequest request) {
  std::lock_guard lock(mutex_);
  entries_.push_back(Entry{next_ticket_, std::move(request)});
  return next_ticket_++;
}

void RequestLog::answered(Ticket ticket, int status) {
  std::lock_guard lock(mutex_);
  const auto entry = std::find_if(entries_.rbegin(), entries_.rend(),
                                  [&](const Entry& e) { return e.ticket == ticket; });
  if (entry != entries_.rend()) entry->request.status = status;
}

std::vector<RecordedRequest> RequestLog::entries() const {
  std::lock_guard lock(mutex_);
  std::vector<RecordedRequest> requests;
  requests.reserve(entries_.size());
  for (const auto& entry : entries_) requests.push_back(entry.request);
  return requests;
}

void RequestLog::clear() {
  std::lock_guard lock(mutex_);
  entries_.clear();
}

}  // namespace stripe_emulator
