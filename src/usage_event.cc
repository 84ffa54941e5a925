#include "stripe_billing/usage_event.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

namespace stripe_billing {
namespace {

using nlohmann::json;

constexpr std::int64_t kMaxInt64 = std::numeric_limits<std::int64_t>::max();
constexpr double kYear2400 = 13'569'465'600.0;
// The first whole second past what TimePoint can hold; below it, seconds * ticks-per-second fits.
constexpr double kClockEndSeconds = static_cast<double>(
    std::chrono::duration_cast<std::chrono::seconds>(TimePoint::duration::max()).count());
constexpr double kMaxEpochSeconds = kClockEndSeconds < kYear2400 ? kClockEndSeconds : kYear2400;

Error invalid(const std::string& field, const std::string& what) {
  return Error{ErrorCode::kInvalidEvent, "field '" + field + "' " + what, std::nullopt};
}

// Reads an optional string field; null and absent are both "not given".
std::optional<Error> read_string(const json& object, const char* name, const std::string& path,
                                 std::string& out) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) return invalid(path + name, "must be a string");
  out = it->get<std::string>();
  return std::nullopt;
}

std::optional<Error> read_tokens(const json& object, const char* name,
                                 std::optional<std::int64_t>& out) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (it->is_number_unsigned()) {
    // Above INT64_MAX an unsigned JSON integer would wrap to a negative int64.
    if (it->get<std::uint64_t>() > static_cast<std::uint64_t>(kMaxInt64)) {
      return invalid(name, "must be at most " + std::to_string(kMaxInt64));
    }
    out = static_cast<std::int64_t>(it->get<std::uint64_t>());
    return std::nullopt;
  }
  if (it->is_number_integer()) {
    out = it->get<std::int64_t>();
    return std::nullopt;
  }
  if (it->is_number_float()) {
    const double value = it->get<double>();
    if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 9.0e18) {
      out = static_cast<std::int64_t>(value);
      return std::nullopt;
    }
    return invalid(name, "must be a whole number");
  }
  return invalid(name, "must be an integer");
}

std::optional<Error> read_seconds(const json& object, const char* name,
                                  std::optional<TimePoint>& out) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return invalid(name, "must be epoch seconds (a number)");
  const double seconds = it->get<double>();
  // From 1970 to the last second the clock can hold (system_clock's int64 nanoseconds end in
  // April 2262) or 2400, whichever comes first: anything else is a unit mistake (milliseconds) or
  // garbage, and converting it would overflow the clock.
  if (!std::isfinite(seconds) || seconds < 0 || seconds >= kMaxEpochSeconds) {
    return invalid(name, "is not a plausible epoch time in seconds (0 or more, less than " +
                             std::to_string(static_cast<std::int64_t>(kMaxEpochSeconds)) + ")");
  }
  out = TimePoint(
      std::chrono::duration_cast<TimePoint::duration>(std::chrono::duration<double>(seconds)));
  return std::nullopt;
}

std::optional<Error> read_metadata(const json& metadata, UsageEvent& event) {
  if (metadata.is_null()) return std::nullopt;
  if (!metadata.is_object()) return invalid("metadata", "must be an object");
  const std::string prefix = "metadata.";
  for (const auto& [field, target] : {std::pair{"user_api_key_user_id", &event.user_id},
                                      std::pair{"user_api_key_team_id", &event.team_id},
                                      std::pair{"user_api_key_end_user_id", &event.end_user_id},
                                      std::pair{"user_api_key_org_id", &event.org_id},
                                      std::pair{"user_api_key_alias", &event.key_alias}}) {
    if (auto error = read_string(metadata, field, prefix, *target)) return error;
  }
  for (const auto& [key, value] : metadata.items()) {
    if (value.is_string() && key.rfind("user_api_key_", 0) != 0) {
      event.metadata.emplace(key, value.get<std::string>());
    }
  }
  return std::nullopt;
}

}  // namespace

Expected<UsageEvent> parse_standard_logging_payload(std::string_view text) {
  json payload = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (payload.is_discarded()) {
    return Error{ErrorCode::kInvalidEvent, "payload is not valid JSON", std::nullopt};
  }
  if (!payload.is_object()) {
    return Error{ErrorCode::kInvalidEvent, "payload must be a JSON object", std::nullopt};
  }
  UsageEvent event;
  std::string id;
  for (const auto& [field, target] :
       {std::pair{"id", &id}, std::pair{"litellm_call_id", &event.call_id},
        std::pair{"model", &event.model}, std::pair{"end_user", &event.request_user}}) {
    if (auto error = read_string(payload, field, "", *target)) return *error;
  }
  event.response_id = id;
  if (event.call_id.empty()) event.call_id = id;

  for (const auto& [field, target] : {std::pair{"prompt_tokens", &event.prompt_tokens},
                                      std::pair{"completion_tokens", &event.completion_tokens},
                                      std::pair{"total_tokens", &event.total_tokens}}) {
    if (auto error = read_tokens(payload, field, *target)) return *error;
  }
  if (auto it = payload.find("response_cost"); it != payload.end() && !it->is_null()) {
    if (!it->is_number()) return invalid("response_cost", "must be a number");
    const double cost = it->get<double>();
    // nlohmann refuses numbers that overflow a double, but a cost of inf would bill nonsense, so
    // the parser does not rely on that.
    if (!std::isfinite(cost)) return invalid("response_cost", "must be a finite number");
    event.response_cost = cost;
  }
  if (auto error = read_seconds(payload, "startTime", event.start_time)) return *error;
  if (auto error = read_seconds(payload, "endTime", event.end_time)) return *error;
  if (auto it = payload.find("metadata"); it != payload.end()) {
    if (auto error = read_metadata(*it, event)) return *error;
  }
  return event;
}

}  // namespace stripe_billing
