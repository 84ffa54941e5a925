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

// `path` is the object's own path with a trailing dot ("metadata.usage_object."), "" at the top.
std::optional<Error> read_tokens(const json& object, const char* name,
                                 std::optional<std::int64_t>& out, const std::string& path = "") {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return std::nullopt;
  const std::string field = path + name;
  if (it->is_number_unsigned()) {
    // Above INT64_MAX an unsigned JSON integer would wrap to a negative int64.
    if (it->get<std::uint64_t>() > static_cast<std::uint64_t>(kMaxInt64)) {
      return invalid(field, "must be at most " + std::to_string(kMaxInt64));
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
    return invalid(field, "must be a whole number");
  }
  return invalid(field, "must be an integer");
}

// An optional nested object: null and absent are both "not given" (nullptr).
std::optional<Error> read_object(const json& object, const char* name, const std::string& path,
                                 const json*& out) {
  out = nullptr;
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_object()) return invalid(path + name, "must be an object");
  out = &*it;
  return std::nullopt;
}

// LiteLLM's Usage as a dict (litellm/types/utils.py, Usage): prompt_tokens_details.cached_tokens
// (Anthropic's cache_read_input_tokens and DeepSeek's prompt_cache_hit_tokens are copied there
// too), prompt_tokens_details.cache_creation_tokens and the top-level cache_read_input_tokens /
// cache_creation_input_tokens that Usage keeps for Anthropic-shaped providers,
// completion_tokens_details.reasoning_tokens, and the audio and image parts of both.
std::optional<Error> read_usage_object(const json& usage, const std::string& path,
                                       UsageEvent& event) {
  const json* prompt_details = nullptr;
  const json* completion_details = nullptr;
  if (auto error = read_object(usage, "prompt_tokens_details", path, prompt_details)) return error;
  if (auto error = read_object(usage, "completion_tokens_details", path, completion_details)) {
    return error;
  }
  std::optional<std::int64_t> cached_tokens;
  std::optional<std::int64_t> cache_creation_tokens;
  if (prompt_details != nullptr) {
    const std::string at = path + "prompt_tokens_details.";
    if (auto error = read_tokens(*prompt_details, "cached_tokens", cached_tokens, at)) {
      return error;
    }
    if (auto error =
            read_tokens(*prompt_details, "cache_creation_tokens", cache_creation_tokens, at)) {
      return error;
    }
    if (auto error = read_tokens(*prompt_details, "audio_tokens", event.audio_input_tokens, at)) {
      return error;
    }
    if (auto error = read_tokens(*prompt_details, "image_tokens", event.image_input_tokens, at)) {
      return error;
    }
  }
  if (completion_details != nullptr) {
    const std::string at = path + "completion_tokens_details.";
    if (auto error =
            read_tokens(*completion_details, "reasoning_tokens", event.reasoning_tokens, at)) {
      return error;
    }
    if (auto error =
            read_tokens(*completion_details, "audio_tokens", event.audio_output_tokens, at)) {
      return error;
    }
    if (auto error =
            read_tokens(*completion_details, "image_tokens", event.image_output_tokens, at)) {
      return error;
    }
  }
  std::optional<std::int64_t> cache_read_input_tokens;
  std::optional<std::int64_t> cache_creation_input_tokens;
  if (auto error = read_tokens(usage, "cache_read_input_tokens", cache_read_input_tokens, path)) {
    return error;
  }
  if (auto error =
          read_tokens(usage, "cache_creation_input_tokens", cache_creation_input_tokens, path)) {
    return error;
  }
  // cached_tokens is the field LiteLLM's cost calculator reads; the top-level copies are the
  // fallback for payloads that carry only them.
  event.cache_read_tokens = cached_tokens ? cached_tokens : cache_read_input_tokens;
  event.cache_write_tokens =
      cache_creation_input_tokens ? cache_creation_input_tokens : cache_creation_tokens;
  return std::nullopt;
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

// `have_usage`: whether metadata.usage_object was given.
std::optional<Error> read_metadata(const json& metadata, UsageEvent& event, bool& have_usage) {
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
  const json* usage = nullptr;
  if (auto error = read_object(metadata, "usage_object", prefix, usage)) return error;
  have_usage = usage != nullptr;
  if (usage != nullptr) return read_usage_object(*usage, prefix + "usage_object.", event);
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
  std::string call_id;
  std::string litellm_call_id;
  for (const auto& [field, target] :
       {std::pair{"id", &id}, std::pair{"call_id", &call_id},
        std::pair{"litellm_call_id", &litellm_call_id}, std::pair{"model", &event.model},
        std::pair{"end_user", &event.request_user},
        std::pair{"custom_llm_provider", &event.provider},
        std::pair{"call_type", &event.call_type}}) {
    if (auto error = read_string(payload, field, "", *target)) return *error;
  }
  // The idempotency anchor: the x-litellm-call-id UUID (`call_id` in some LiteLLM releases,
  // `litellm_call_id` in others), else `id`, which LiteLLM fills with the provider's response id
  // and, without one, with the call id (litellm_logging.py, get_standard_logging_object_payload).
  event.response_id = id;
  event.call_id = !call_id.empty() ? call_id : !litellm_call_id.empty() ? litellm_call_id : id;
  if (auto it = payload.find("cache_hit"); it != payload.end() && !it->is_null()) {
    if (!it->is_boolean()) return invalid("cache_hit", "must be true, false or null");
    event.cache_hit = it->get<bool>();
  }

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
  bool have_usage = false;
  if (auto it = payload.find("metadata"); it != payload.end()) {
    if (auto error = read_metadata(*it, event, have_usage)) return *error;
  }
  // hidden_params carries a copy of the usage object too: read it when metadata has none.
  const json* hidden = nullptr;
  if (auto error = read_object(payload, "hidden_params", "", hidden)) return *error;
  if (hidden != nullptr && !have_usage) {
    const json* usage = nullptr;
    if (auto error = read_object(*hidden, "usage_object", "hidden_params.", usage)) return *error;
    if (usage != nullptr) {
      if (auto error = read_usage_object(*usage, "hidden_params.usage_object.", event)) {
        return *error;
      }
    }
  }
  return event;
}

}  // namespace stripe_billing
