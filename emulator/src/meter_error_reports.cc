#include "meter_error_reports.h"

#include <algorithm>
#include <map>
#include <string>

#include "rfc3339.h"

namespace stripe_emulator {
namespace {

using nlohmann::json;

std::string error_message(const MeterEventRecord& record) {
  const auto& code = record.error_code;
  if (code == "no_meter")
    return "No active meter was found for event_name " + record.event_name + ".";
  if (code == "meter_event_no_customer_defined") {
    return "The event payload names no customer under the meter's customer key.";
  }
  if (code == "meter_event_customer_not_found") {
    return "The customer the event payload names was not found.";
  }
  if (code == "meter_event_invalid_value") {
    return "The event payload's value is missing or is not a number.";
  }
  if (code == "missing_dimension_payload_keys") {
    return "The event payload lacks one of the meter's dimension payload keys.";
  }
  if (code == "timestamp_too_far_in_past") return "The event's timestamp is more than 35 days old.";
  if (code == "timestamp_in_future") {
    return "The event's timestamp is more than 5 minutes in the future.";
  }
  return "The meter event failed validation: " + code + ".";
}

}  // namespace

json error_report_data(const std::vector<MeterEvent>& failed, std::size_t samples_per_code,
                       std::int64_t now) {
  std::vector<std::string> codes;  // in the order they first failed
  std::map<std::string, json> types;
  std::int64_t start = now;
  for (const auto& event : failed) {
    const auto& code = event.record.error_code;
    start = std::min(start, event.created);
    auto& type = types[code];
    if (type.is_null()) {
      codes.push_back(code);
      type = {{"code", code}, {"error_count", 0}, {"sample_errors", json::array()}};
    }
    type["error_count"] = type["error_count"].get<std::size_t>() + 1;
    if (type["sample_errors"].size() < samples_per_code) {
      type["sample_errors"].push_back({{"error_message", error_message(event.record)},
                                       {"request", {{"identifier", event.record.identifier}}}});
    }
  }
  json error_types = json::array();
  for (const auto& code : codes) error_types.push_back(types[code]);
  const auto count = failed.size();
  return {{"developer_message_summary",
           count == 1 ? "There is 1 invalid event"
                      : "There are " + std::to_string(count) + " invalid events"},
          {"reason", {{"error_count", count}, {"error_types", error_types}}},
          {"validation_start", to_rfc3339(start)},
          {"validation_end", to_rfc3339(now)}};
}

}  // namespace stripe_emulator
