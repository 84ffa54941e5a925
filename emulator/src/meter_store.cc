#include "meter_store.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "ids.h"

namespace stripe_emulator {
namespace {

constexpr std::int64_t kDay = 86'400;
constexpr std::int64_t kOldestAge = 35 * kDay;
constexpr std::int64_t kFurthestAhead = 5 * 60;
constexpr std::int64_t kIdentifierWindow = kDay;
constexpr std::int64_t kCancelWindow = kDay;
constexpr std::size_t kMaxSignificantDigits = 15;

// A decimal number: an optional minus, digits, optionally a point and more digits.
bool is_number(const std::string& value) {
  std::size_t at = value.size() > 0 && value[0] == '-' ? 1 : 0;
  const auto digits_from = [&](std::size_t from) {
    std::size_t end = from;
    while (end < value.size() && std::isdigit(static_cast<unsigned char>(value[end]))) ++end;
    return end;
  };
  const auto integer_end = digits_from(at);
  if (integer_end == at) return false;
  if (integer_end == value.size()) return true;
  if (value[integer_end] != '.') return false;
  const auto fraction_end = digits_from(integer_end + 1);
  return fraction_end > integer_end + 1 && fraction_end == value.size();
}

// The digits from the first non-zero one to the last non-zero one: 0.00120 has 2, 1200 has 2.
std::size_t significant_digits(const std::string& number) {
  std::string digits;
  for (const char c : number) {
    if (std::isdigit(static_cast<unsigned char>(c))) digits += c;
  }
  const auto first = digits.find_first_not_of('0');
  if (first == std::string::npos) return 0;
  return digits.find_last_not_of('0') - first + 1;
}

bool is_meter_value(const std::string& value) {
  return is_number(value) && significant_digits(value) <= kMaxSignificantDigits;
}

double value_of(const MeterEvent& event, const Meter& meter) {
  const auto found = event.record.payload.find(meter.value_key);
  return found == event.record.payload.end() ? 0 : std::strtod(found->second.c_str(), nullptr);
}

// `events` in arrival order.
double aggregate(const Meter& meter, const std::vector<const MeterEvent*>& events) {
  if (meter.formula == "count") return static_cast<double>(events.size());
  if (meter.formula == "last") {
    const MeterEvent* last = nullptr;
    for (const auto* event : events) {
      if (last == nullptr || event->record.timestamp >= last->record.timestamp) last = event;
    }
    return last == nullptr ? 0 : value_of(*last, meter);
  }
  double sum = 0;
  for (const auto* event : events) sum += value_of(*event, meter);
  return sum;
}

// The first half of the sentence is the v1 refusal's, which clients match on.
ApiError duplicate_identifier(const std::string& identifier, const std::string& code) {
  auto error = errors::invalid_request(
      "An event already exists with identifier " + identifier + "." +
      (code.empty() ? ""
                    : " A meter event with a duplicate identifier has already been submitted "
                      "within the past 24 hours."));
  error.code = code;
  error.headers.emplace_back("Stripe-Should-Retry", "false");
  return error;
}

ApiError timestamp_refusal(const std::string& why, const std::string& v2_code, bool v2) {
  auto error = errors::invalid_request(
      "The timestamp must be within the past 35 calendar days and at most 5 minutes in the "
      "future; it is " +
          why + ".",
      v2 ? "" : "timestamp");
  if (v2) error.code = v2_code;
  return error;
}

}  // namespace

MeterStore::MeterStore(const Store& store) : store_(store) {}

Expected<Meter> MeterStore::add_meter(Meter meter) {
  meter.id = new_id("mtr_", 24);
  meter.created = store_.now();
  std::lock_guard lock(mutex_);
  if (active_meter(meter.event_name) != nullptr) {
    return errors::invalid_request(
        "An active meter with event_name `" + meter.event_name + "` already exists.", "event_name");
  }
  meter_order_.push_back(meter.id);
  return meters_[meter.id] = std::move(meter);
}

std::optional<Meter> MeterStore::meter(const std::string& id) const {
  std::lock_guard lock(mutex_);
  const auto found = meters_.find(id);
  if (found == meters_.end()) return std::nullopt;
  return found->second;
}

std::vector<Meter> MeterStore::meters() const {
  std::lock_guard lock(mutex_);
  std::vector<Meter> newest_first;
  for (auto id = meter_order_.rbegin(); id != meter_order_.rend(); ++id) {
    newest_first.push_back(meters_.at(*id));
  }
  return newest_first;
}

std::string MeterStore::customer_key(const std::string& event_name) const {
  std::lock_guard lock(mutex_);
  const auto* meter = active_meter(event_name);
  return meter == nullptr ? Meter{}.customer_key : meter->customer_key;
}

Expected<MeterEvent> MeterStore::record_v1(NewMeterEvent event) {
  const auto now = store_.now();
  std::lock_guard lock(mutex_);
  if (auto error = synchronous_error(event, now, Api::kV1)) return *error;
  return keep(std::move(event), "v1", now);
}

Expected<MeterEvent> MeterStore::record_v2_event(NewMeterEvent event) {
  const auto now = store_.now();
  std::lock_guard lock(mutex_);
  if (auto error = synchronous_error(event, now, Api::kV2)) return *error;
  return keep(std::move(event), "v2_event", now);
}

std::optional<ApiError> MeterStore::synchronous_error(const NewMeterEvent& event, std::int64_t now,
                                                      Api api) const {
  const bool v2 = api == Api::kV2;
  const auto timestamp = event.timestamp.value_or(now);
  if (timestamp < now - kOldestAge) {
    return timestamp_refusal("more than 35 days old", "timestamp_too_far_in_past", v2);
  }
  if (timestamp > now + kFurthestAhead) {
    return timestamp_refusal("more than 5 minutes in the future", "timestamp_in_future", v2);
  }
  if (const auto* meter = active_meter(event.event_name)) {
    const auto value = event.payload.find(meter->value_key);
    if (value != event.payload.end() && !is_meter_value(value->second)) {
      auto error = errors::invalid_request(
          "The meter event value must be a number with at most 15 significant digits.",
          v2 ? "" : "payload[" + meter->value_key + "]");
      if (v2) error.code = "payload_invalid_value";
      return error;
    }
  }
  if (!event.identifier.empty() && seen_recently(event.identifier, now)) {
    return duplicate_identifier(event.identifier, v2 ? "duplicate_meter_event" : "");
  }
  return std::nullopt;
}

void MeterStore::record_v2(NewMeterEvent event) {
  const auto now = store_.now();
  std::lock_guard lock(mutex_);
  if (!event.identifier.empty() && seen_recently(event.identifier, now)) return;
  keep(std::move(event), "v2", now);
}

Expected<MeterEvent> MeterStore::cancel(const std::string& event_name,
                                        const std::string& identifier) {
  const auto now = store_.now();
  std::lock_guard lock(mutex_);
  const auto found = std::find_if(events_.rbegin(), events_.rend(), [&](const MeterEvent& event) {
    return event.record.identifier == identifier && event.record.event_name == event_name;
  });
  if (found == events_.rend()) {
    return errors::invalid_request("No meter event with identifier `" + identifier +
                                       "` exists for event_name `" + event_name + "`.",
                                   "cancel[identifier]");
  }
  if (found->created <= now - kCancelWindow) {
    return errors::invalid_request(
        "A meter event can only be cancelled within 24 hours of being received.",
        "cancel[identifier]");
  }
  found->record.cancelled = true;
  return *found;
}

std::vector<MeterSummary> MeterStore::summaries(const Meter& meter, const std::string& customer_id,
                                                std::int64_t start_time, std::int64_t end_time,
                                                std::optional<std::int64_t> window) const {
  std::lock_guard lock(mutex_);
  std::map<std::int64_t, std::vector<const MeterEvent*>> by_window;
  for (const auto* event : counted(meter, customer_id)) {
    const auto at = event->record.timestamp;
    if (at < start_time || at >= end_time) continue;
    by_window[window ? start_time + (at - start_time) / *window * *window : start_time].push_back(
        event);
  }
  std::vector<MeterSummary> newest_first;
  if (!window) {
    newest_first.push_back(
        MeterSummary{start_time, end_time, aggregate(meter, by_window[start_time])});
    return newest_first;
  }
  for (auto group = by_window.rbegin(); group != by_window.rend(); ++group) {
    newest_first.push_back(MeterSummary{group->first, std::min(group->first + *window, end_time),
                                        aggregate(meter, group->second)});
  }
  return newest_first;
}

bool MeterStore::reject(const std::string& identifier, const std::string& code) {
  std::lock_guard lock(mutex_);
  for (auto event = events_.rbegin(); event != events_.rend(); ++event) {
    auto& record = event->record;
    if (record.identifier != identifier || record.cancelled || !record.error_code.empty()) {
      continue;
    }
    record.error_code = code;
    return true;
  }
  return false;
}

std::vector<MeterEvent> MeterStore::take_unreported(
    const std::function<bool(const MeterEventRecord&)>& wanted) {
  std::lock_guard lock(mutex_);
  std::vector<MeterEvent> taken;
  for (auto& event : events_) {
    if (event.reported || event.record.error_code.empty() || !wanted(event.record)) continue;
    event.reported = true;
    taken.push_back(event);
  }
  return taken;
}

std::vector<MeterEventRecord> MeterStore::events() const {
  std::lock_guard lock(mutex_);
  std::vector<MeterEventRecord> records;
  records.reserve(events_.size());
  for (const auto& event : events_) records.push_back(event.record);
  return records;
}

std::map<std::string, double> MeterStore::totals_by_customer(const std::string& event_name,
                                                             const std::string& group_key,
                                                             const std::string& group_value) const {
  std::lock_guard lock(mutex_);
  std::map<std::string, double> totals;
  const auto* meter = active_meter(event_name);
  if (meter == nullptr) return totals;
  std::map<std::string, std::vector<const MeterEvent*>> by_customer;
  for (const auto* event : counted(*meter, "")) {
    const auto& payload = event->record.payload;
    const auto group = payload.find(group_key);
    if (!group_key.empty() && (group == payload.end() || group->second != group_value)) continue;
    by_customer[payload.at(meter->customer_key)].push_back(event);
  }
  for (const auto& [customer, events] : by_customer) totals[customer] = aggregate(*meter, events);
  return totals;
}

std::map<std::vector<std::string>, double> MeterStore::totals_by_dimension(
    const std::string& event_name, const std::string& customer_id,
    const std::vector<std::string>& keys) const {
  std::lock_guard lock(mutex_);
  std::map<std::vector<std::string>, double> totals;
  const auto* meter = active_meter(event_name);
  if (meter == nullptr) return totals;
  std::map<std::vector<std::string>, std::vector<const MeterEvent*>> groups;
  for (const auto* event : counted(*meter, customer_id)) {
    const auto& payload = event->record.payload;
    std::vector<std::string> group = {payload.at(meter->customer_key)};
    for (const auto& key : keys) {
      const auto found = payload.find(key);
      group.push_back(found == payload.end() ? "" : found->second);
    }
    groups[std::move(group)].push_back(event);
  }
  for (const auto& [group, events] : groups) totals[group] = aggregate(*meter, events);
  return totals;
}

const Meter* MeterStore::active_meter(const std::string& event_name) const {
  for (const auto& [id, meter] : meters_) {
    if (meter.event_name == event_name && meter.status == "active") return &meter;
  }
  return nullptr;
}

bool MeterStore::seen_recently(const std::string& identifier, std::int64_t now) const {
  const auto it = last_seen_.find(identifier);
  return it != last_seen_.end() && it->second > now - kIdentifierWindow;
}

MeterEvent& MeterStore::keep(NewMeterEvent event, const std::string& source, std::int64_t now) {
  MeterEvent kept;
  kept.created = now;
  kept.record.event_name = std::move(event.event_name);
  kept.record.identifier = event.identifier.empty() ? new_id("", 32) : std::move(event.identifier);
  kept.record.payload = std::move(event.payload);
  kept.record.timestamp = event.timestamp.value_or(now);
  kept.record.source = source;
  kept.record.error_code = error_report_code(kept.record, now);
  last_seen_[kept.record.identifier] = now;
  return events_.emplace_back(std::move(kept));
}

// The codes of Stripe's v1.billing.meter.error_report_triggered reasons.
std::string MeterStore::error_report_code(const MeterEventRecord& record, std::int64_t now) const {
  if (record.timestamp < now - kOldestAge) return "timestamp_too_far_in_past";
  if (record.timestamp > now + kFurthestAhead) return "timestamp_in_future";
  const auto* meter = active_meter(record.event_name);
  if (meter == nullptr) return "no_meter";
  const auto customer = record.payload.find(meter->customer_key);
  if (customer == record.payload.end()) return "meter_event_no_customer_defined";
  if (!store_.customer(customer->second)) return "meter_event_customer_not_found";
  const auto value = record.payload.find(meter->value_key);
  if (meter->formula != "count" &&
      (value == record.payload.end() || !is_meter_value(value->second))) {
    return "meter_event_invalid_value";
  }
  for (const auto& key : meter->dimension_keys) {
    if (record.payload.count(key) == 0) return "missing_dimension_payload_keys";
  }
  return "";
}

// The meter's counted events, of one customer unless `customer_id` is empty, in arrival order.
std::vector<const MeterEvent*> MeterStore::counted(const Meter& meter,
                                                   const std::string& customer_id) const {
  std::vector<const MeterEvent*> counted;
  for (const auto& event : events_) {
    const auto& record = event.record;
    if (record.event_name != meter.event_name || record.cancelled || !record.error_code.empty()) {
      continue;
    }
    if (!customer_id.empty() && record.payload.at(meter.customer_key) != customer_id) continue;
    counted.push_back(&event);
  }
  return counted;
}

}  // namespace stripe_emulator
