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
  std::string call_id;      // the idempotency anchor of everything we send (see the parser)
  std::string response_id;  // the provider's response id (chatcmpl-…)
  std::string model;
  // The provider, when the host knows it (LiteLLM's custom_llm_provider: "openai", "anthropic",
  // "vertex_ai", "bedrock", ...). Empty: taken from the model string (token_types.h).
  std::string provider;
  std::optional<std::int64_t> prompt_tokens;
  std::optional<std::int64_t> completion_tokens;
  std::optional<std::int64_t> total_tokens;
  // Token details, as the provider reports them; which count contains which depends on the
  // provider family (docs/token-types.md). All optional.
  std::optional<std::int64_t> cache_read_tokens;    // cached input read (OpenAI cached_tokens)
  std::optional<std::int64_t> cache_write_tokens;   // input written to the cache (Anthropic)
  std::optional<std::int64_t> reasoning_tokens;     // inside completion_tokens
  std::optional<std::int64_t> audio_input_tokens;   // inside prompt_tokens
  std::optional<std::int64_t> audio_output_tokens;  // inside completion_tokens
  std::optional<std::int64_t> image_input_tokens;   // inside prompt_tokens
  std::optional<std::int64_t> image_output_tokens;  // inside completion_tokens
  bool cache_hit = false;               // served from the gateway's own cache, not by the provider
  std::string call_type;                // LiteLLM's call_type: acompletion, aretrieve_batch, ...
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
// type or out of range is an Error (kInvalidEvent) whose message names the field by its path
// (`metadata.usage_object.prompt_tokens_details.cached_tokens`). Unknown fields are ignored; null
// is "not given". Fields read:
//   call_id, litellm_call_id, id: call_id is the first non-empty of them (LiteLLM names the
//     x-litellm-call-id UUID `call_id` in some releases, `litellm_call_id` in others; `id` is the
//     provider's response id, or the call id when there is none); response_id is `id`.
//   model, custom_llm_provider (-> provider), call_type, end_user (-> request_user): strings.
//   cache_hit: true, false or null.
//   response_cost (a finite number); prompt_tokens, completion_tokens, total_tokens (whole
//     numbers that fit an int64); startTime, endTime (epoch seconds, fractional allowed, from 0 to
//     before 9223372036, where system_clock's nanoseconds end in April 2262).
//   metadata: user_api_key_user_id, user_api_key_team_id, user_api_key_end_user_id,
//     user_api_key_org_id, user_api_key_alias; other string values go to `metadata`.
//   metadata.usage_object (else hidden_params.usage_object), LiteLLM's Usage as a dict:
//     prompt_tokens_details.cached_tokens (else cache_read_input_tokens) -> cache_read_tokens;
//     cache_creation_input_tokens (else prompt_tokens_details.cache_creation_tokens) ->
//     cache_write_tokens; completion_tokens_details.reasoning_tokens -> reasoning_tokens;
//     prompt_tokens_details.audio_tokens / image_tokens -> audio/image_input_tokens;
//     completion_tokens_details.audio_tokens / image_tokens -> audio/image_output_tokens.
//     Counts are whole numbers that fit an int64, like prompt_tokens.
// A parsed event never holds an infinite or NaN cost. docs/token-types.md has the shapes.
Expected<UsageEvent> parse_standard_logging_payload(std::string_view json);

}  // namespace stripe_billing
