// What the gateway knows about one successful LLM call, and a parser for LiteLLM's
// StandardLoggingPayload JSON. A UsageEvent is plain data: copying it is the whole hand-off cost.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "stripe_billing/error.h"

namespace stripe_billing {

using TimePoint = std::chrono::system_clock::time_point;

struct UsageEvent {
  std::string call_id;      // litellm_call_id: the idempotency anchor of everything we send
  std::string response_id;  // the provider's response id (chatcmpl-…)
  std::string model;
  std::optional<std::int64_t> prompt_tokens;
  std::optional<std::int64_t> completion_tokens;
  std::optional<std::int64_t> total_tokens;
  std::optional<double> response_cost;  // USD
  std::optional<TimePoint> start_time;
  std::optional<TimePoint> end_time;
  std::string request_user;  // the request body's `user`
  std::string end_user_id;   // the end-user id bound to the API key
  std::string user_id;       // the key's user id
  std::string team_id;
  std::string org_id;
  std::string key_alias;
  std::map<std::string, std::string> metadata;  // anything else the host wants in the ledger
};

// Parses one StandardLoggingPayload object. Bad JSON, a non-object, or a known field of the wrong
// type or out of range is an Error (kInvalidEvent) whose message names the field. Unknown fields
// are ignored. Fields read: id, litellm_call_id, model, response_cost (a finite number),
// prompt_tokens, completion_tokens, total_tokens (whole numbers that fit an int64), end_user,
// startTime, endTime (epoch seconds, fractional allowed, from 0 to before 9223372036, where
// system_clock's nanoseconds end in April 2262), and in metadata: user_api_key_user_id,
// user_api_key_team_id, user_api_key_end_user_id, user_api_key_org_id, user_api_key_alias; other
// string values of metadata go to `metadata`. A parsed event never holds an infinite or NaN cost.
Expected<UsageEvent> parse_standard_logging_payload(std::string_view json);

}  // namespace stripe_billing
