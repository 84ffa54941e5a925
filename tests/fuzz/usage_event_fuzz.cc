// parse_standard_logging_payload() on arbitrary bytes. Beyond "no crash, no exception": a refused
// payload is kInvalidEvent with a message; an accepted one is a JSON object whose strings are
// valid UTF-8 and whose numbers are exactly what the payload says (a token count the parser
// cannot represent must be refused, not wrapped), with a finite cost and times from 1970 to what
// system_clock can hold (2262).
// Negative counts are accepted on purpose: the intake rejects them later as negative_quantity.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "stripe_billing/usage_event.h"

namespace stripe_billing::fuzz {
namespace {

using nlohmann::json;

// system_clock counts nanoseconds in an int64: its last second is in April 2262.
constexpr double kLatestSecond = 9'223'372'036.854775807;

std::string string_field(const json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

void check_tokens(const json& payload, const char* name,
                  const std::optional<std::int64_t>& parsed) {
  auto it = payload.find(name);
  if (it == payload.end() || it->is_null()) {
    FUZZ_CHECK(!parsed, name);
    return;
  }
  FUZZ_CHECK(parsed.has_value(), name);
  const std::string detail =
      std::string(name) + " = " + it->dump() + ", parsed as " + std::to_string(*parsed);
  if (it->is_number_unsigned()) {
    const auto value = it->get<std::uint64_t>();
    FUZZ_CHECK(value <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) &&
                   static_cast<std::int64_t>(value) == *parsed,
               detail);
  } else if (it->is_number_integer()) {
    FUZZ_CHECK(it->get<std::int64_t>() == *parsed, detail);
  } else {
    FUZZ_CHECK(it->is_number_float(), detail);
    FUZZ_CHECK(static_cast<double>(*parsed) == it->get<double>(), detail);
  }
}

void check_time(const json& payload, const char* name, const std::optional<TimePoint>& parsed) {
  auto it = payload.find(name);
  if (it == payload.end() || it->is_null()) {
    FUZZ_CHECK(!parsed, name);
    return;
  }
  FUZZ_CHECK(parsed.has_value() && it->is_number(), name);
  const double seconds = it->get<double>();
  const double got = std::chrono::duration<double>(parsed->time_since_epoch()).count();
  const std::string detail =
      std::string(name) + " = " + it->dump() + ", parsed as " + std::to_string(got) + " s";
  FUZZ_CHECK(std::isfinite(seconds) && seconds >= 0 && seconds < kLatestSecond, detail);
  FUZZ_CHECK(std::fabs(got - seconds) <= 1e-6 * std::max(1.0, seconds), detail);
}

void check_accepted(std::string_view input, const UsageEvent& event) {
  const json payload = json::parse(input.begin(), input.end(), nullptr, false);
  FUZZ_CHECK(!payload.is_discarded() && payload.is_object(), "accepted a non-object");

  for (const std::string* text :
       {&event.call_id, &event.response_id, &event.model, &event.request_user, &event.end_user_id,
        &event.user_id, &event.team_id, &event.org_id, &event.key_alias}) {
    FUZZ_CHECK(valid_utf8(*text), *text);
  }
  FUZZ_CHECK(event.response_id == string_field(payload, "id"), event.response_id);
  // The anchor's order: call_id (x-litellm-call-id), then litellm_call_id, then id.
  const std::string call_id = string_field(payload, "call_id");
  const std::string litellm_call_id = string_field(payload, "litellm_call_id");
  const std::string expected_id = !call_id.empty()           ? call_id
                                  : !litellm_call_id.empty() ? litellm_call_id
                                                             : event.response_id;
  FUZZ_CHECK(event.call_id == expected_id, event.call_id);
  FUZZ_CHECK(event.model == string_field(payload, "model"), event.model);
  FUZZ_CHECK(event.request_user == string_field(payload, "end_user"), event.request_user);

  check_tokens(payload, "prompt_tokens", event.prompt_tokens);
  check_tokens(payload, "completion_tokens", event.completion_tokens);
  check_tokens(payload, "total_tokens", event.total_tokens);

  if (event.response_cost) {
    FUZZ_CHECK(std::isfinite(*event.response_cost),
               "response_cost = " + payload["response_cost"].dump() + ", parsed as " +
                   std::to_string(*event.response_cost));
  }
  check_time(payload, "startTime", event.start_time);
  check_time(payload, "endTime", event.end_time);

  const json metadata = payload.value("metadata", json());
  for (const auto& [field, value] : {std::pair{"user_api_key_user_id", &event.user_id},
                                     std::pair{"user_api_key_team_id", &event.team_id},
                                     std::pair{"user_api_key_end_user_id", &event.end_user_id},
                                     std::pair{"user_api_key_org_id", &event.org_id},
                                     std::pair{"user_api_key_alias", &event.key_alias}}) {
    FUZZ_CHECK(*value == (metadata.is_object() ? string_field(metadata, field) : ""), field);
  }
  for (const auto& [key, value] : event.metadata) {
    FUZZ_CHECK(valid_utf8(key) && valid_utf8(value), key + "=" + value);
    FUZZ_CHECK(key.rfind("user_api_key_", 0) != 0, key);
    FUZZ_CHECK(metadata.is_object() && metadata.contains(key) && metadata[key].is_string() &&
                   metadata[key].get<std::string>() == value,
               key);
  }
}

}  // namespace
}  // namespace stripe_billing::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace stripe_billing;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  fuzz::must_not_throw("parse_standard_logging_payload", [&] {
    const Expected<UsageEvent> event = parse_standard_logging_payload(input);
    if (!event) {
      FUZZ_CHECK(event.error().code == ErrorCode::kInvalidEvent, event.error().to_string());
      FUZZ_CHECK(!event.error().message.empty(), "an error without a message");
      FUZZ_CHECK(fuzz::valid_utf8(event.error().message), event.error().message);
      return;
    }
    fuzz::check_accepted(input, *event);
  });
  return 0;
}
