#include "request_log.h"

#include <algorithm>
#include <string>

namespace stripe_emulator {
namespace {

// "<code>" or "<code>/<Stripe-Rate-Limited-Reason>".
std::string too_many_requests_kind(const Answer& answer) {
  std::string kind;
  const auto error = answer.body.is_object() ? answer.body.find("error") : answer.body.end();
  if (error != answer.body.end() && error->is_object()) kind = error->value("code", "");
  for (const auto& [name, value] : answer.headers) {
    if (name == "Stripe-Rate-Limited-Reason") kind += '/' + value;
  }
  return kind;
}

}  // namespace

RequestLog::Ticket RequestLog::add(RecordedRequest request) {
  std::lock_guard lock(mutex_);
  request.received_at = std::chrono::steady_clock::now();
  entries_.push_back(Entry{next_ticket_, std::move(request)});
  return next_ticket_++;
}

void RequestLog::answered(Ticket ticket, const Answer& answer) {
  const auto kind = answer.status == 429 ? too_many_requests_kind(answer) : "";
  std::lock_guard lock(mutex_);
  auto* entry = find(ticket);
  if (entry == nullptr) return;
  entry->request.status = answer.status;
  ++counts_.by_status[answer.status];
  if (answer.status == 429) ++counts_.too_many_requests[kind];
}

void RequestLog::dropped(Ticket ticket) {
  std::lock_guard lock(mutex_);
  if (find(ticket) != nullptr) ++counts_.by_status[0];
}

std::vector<RecordedRequest> RequestLog::entries() const {
  std::lock_guard lock(mutex_);
  std::vector<RecordedRequest> requests;
  requests.reserve(entries_.size());
  for (const auto& entry : entries_) requests.push_back(entry.request);
  return requests;
}

AnswerCounts RequestLog::counts() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

std::size_t RequestLog::count(int min_status, int max_status, TimePoint from, TimePoint to) const {
  std::lock_guard lock(mutex_);
  auto entry = std::lower_bound(
      entries_.begin(), entries_.end(), from,
      [](const Entry& entry, TimePoint at) { return entry.request.received_at < at; });
  std::size_t counted = 0;
  for (; entry != entries_.end() && entry->request.received_at < to; ++entry) {
    const auto status = entry->request.status;
    counted += status != 0 && status >= min_status && status <= max_status;
  }
  return counted;
}

void RequestLog::clear() {
  std::lock_guard lock(mutex_);
  entries_.clear();
  counts_ = AnswerCounts{};
}

RequestLog::Entry* RequestLog::find(Ticket ticket) {
  const auto entry =
      std::lower_bound(entries_.begin(), entries_.end(), ticket,
                       [](const Entry& entry, Ticket wanted) { return entry.ticket < wanted; });
  return entry == entries_.end() || entry->ticket != ticket ? nullptr : &*entry;
}

}  // namespace stripe_emulator
