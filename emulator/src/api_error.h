// What the emulator answers, and Stripe's error answers in Stripe's words: the status, the body
// {"error":{"type","code","message","param","doc_url"}} and the headers Stripe adds to them.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "stripe_emulator/emulator.h"

namespace stripe_emulator {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Answer {
  int status = 200;
  nlohmann::json body;
  Headers headers;
};

struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;
  std::string code;
  Headers headers;
};

template <typename T>
using Expected = std::variant<T, ApiError>;

Answer to_answer(const ApiError& error);
// The same error in the v2 API's shape: {"error":{"type","code","message"}} (and "doc_url" with a
// code); v2 errors carry no "param".
Answer to_v2_answer(const ApiError& error);

inline Answer ok(nlohmann::json body) { return Answer{200, std::move(body), {}}; }

// A success as JSON (T converts with to_json), or the error.
template <typename T>
Answer answer(const Expected<T>& result) {
  if (const auto* error = std::get_if<ApiError>(&result)) return to_answer(*error);
  return ok(std::get<T>(result));
}

// The same serialization everywhere: values may hold bytes that are not UTF-8 (they came in
// percent-encoded); those are answered as U+FFFD rather than failing the request.
std::string dump(const nlohmann::json& value);

namespace errors {

ApiError invalid_request(std::string message, std::string param = "");
// "Missing required param: <param>.", code parameter_missing, as Stripe answers it.
ApiError parameter_missing(const std::string& param);
ApiError resource_missing(const std::string& object, const std::string& id, std::string param);
ApiError unrecognized_url(const std::string& method, const std::string& path);
ApiError missing_api_key();
ApiError invalid_api_key(const std::string& key);
ApiError publishable_api_key();
// A restricted key without the permission the operation needs: Stripe's 403, naming the
// permission, the key masked as Stripe masks it (prefix, asterisks, its last six characters) and
// the emulator's account, acct_emulator.
ApiError missing_permission(const std::string& key, const std::string& permission);
// Throttling: 429 rate_limit with Stripe-Rate-Limited-Reason: `reason` (none when empty).
ApiError rate_limited(const std::string& reason = "global-rate");
// Another request or Stripe process holds the object: lock_timeout, no reason header.
ApiError lock_timeout(int status);
// A v1 meter event while another for the same customer and meter is being processed.
ApiError concurrent_meter_event();
ApiError idempotency_key_too_long();
ApiError idempotency_key_reused(const std::string& key);
ApiError idempotency_key_in_use(const std::string& key);
// What an injected kStatus fault answers: Stripe's body for its status (a 429 as its code and
// reason say), with its Retry-After.
ApiError injected(const Fault& fault);
// `error` with a Retry-After header of `seconds`, if any.
ApiError with_retry_after(ApiError error, std::optional<std::chrono::seconds> seconds);

}  // namespace errors
}  // namespace stripe_emulator
