#include "api_error.h"

#include <algorithm>

namespace stripe_emulator {

namespace {

nlohmann::json error_body(const ApiError& error) {
  nlohmann::json body = {{"type", error.type}, {"message", error.message}};
  if (!error.code.empty()) {
    body["code"] = error.code;
    std::string slug = error.code;
    std::replace(slug.begin(), slug.end(), '_', '-');
    body["doc_url"] = "https://stripe.com/docs/error-codes/" + slug;
  }
  return body;
}

}  // namespace

Answer to_answer(const ApiError& error) {
  auto body = error_body(error);
  if (!error.param.empty()) body["param"] = error.param;
  return Answer{error.status, {{"error", body}}, error.headers};
}

Answer to_v2_answer(const ApiError& error) {
  return Answer{error.status, {{"error", error_body(error)}}, error.headers};
}

std::string dump(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace errors {
namespace {

// Stripe shows the key's prefix and its last four characters, never the whole key.
std::string masked(const std::string& key) {
  const auto secret_start = key.rfind('_', std::min<std::size_t>(key.size(), 8));
  const auto prefix = secret_start == std::string::npos ? "" : key.substr(0, secret_start + 1);
  const auto secret_length = key.size() - prefix.size();
  return prefix + "****" + (secret_length >= 8 ? key.substr(key.size() - 4) : "");
}

// Stripe's mask in permission errors: 'rk_test_' then one asterisk per hidden character and the
// last six; a key too short to hide anything behind six shown characters is all asterisks.
std::string masked_restricted(const std::string& key) {
  const auto secret_start = key.rfind('_', std::min<std::size_t>(key.size(), 8));
  const auto prefix_length = secret_start == std::string::npos ? 0 : secret_start + 1;
  const auto secret_length = key.size() - prefix_length;
  const std::size_t shown = secret_length >= 12 ? 6 : 0;
  return key.substr(0, prefix_length) + std::string(secret_length - shown, '*') +
         key.substr(key.size() - shown);
}

// Stripe's body for the fault's status, without its Retry-After.
ApiError injected_status(const Fault& fault) {
  switch (fault.status) {
    case 401:
      return invalid_api_key("sk_test_injected_fault");
    case 404:
      return ApiError{404, "invalid_request_error", "Unrecognized request URL.", "", "", {}};
    case 409:
      return lock_timeout(409);
    case 429:
      return fault.code == TooManyRequestsCode::kLockTimeout
                 ? lock_timeout(429)
                 : rate_limited(fault.rate_limited_reason);
    default:
      if (fault.status >= 500) {
        return ApiError{
            fault.status, "api_error", "An unknown error occurred. Please try again later.",
            "",           "",          {}};
      }
      return ApiError{
          fault.status, "invalid_request_error", "The request could not be processed.", "", "", {}};
  }
}

}  // namespace

ApiError invalid_request(std::string message, std::string param) {
  return ApiError{400, "invalid_request_error", std::move(message), std::move(param), "", {}};
}

ApiError parameter_missing(const std::string& param) {
  auto error = invalid_request("Missing required param: " + param + ".", param);
  error.code = "parameter_missing";
  return error;
}

ApiError resource_missing(const std::string& object, const std::string& id, std::string param) {
  return ApiError{404,
                  "invalid_request_error",
                  "No such " + object + ": '" + id + "'",
                  std::move(param),
                  "resource_missing",
                  {}};
}

ApiError unrecognized_url(const std::string& method, const std::string& path) {
  return ApiError{404,
                  "invalid_request_error",
                  "Unrecognized request URL (" + method + ": " + path +
                      "). Please see https://stripe.com/docs or we can help at "
                      "https://support.stripe.com/.",
                  "",
                  "",
                  {}};
}

ApiError missing_api_key() {
  return ApiError{401,
                  "invalid_request_error",
                  "You did not provide an API key. You need to provide your API key in the "
                  "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                  "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, "
                  "or we can help at https://support.stripe.com/.",
                  "",
                  "",
                  {}};
}

ApiError invalid_api_key(const std::string& key) {
  return ApiError{401, "invalid_request_error", "Invalid API Key provided: " + masked(key), "", "",
                  {}};
}

ApiError publishable_api_key() {
  return ApiError{401,
                  "invalid_request_error",
                  "This API call cannot be made with a publishable API key. Please use a secret "
                  "API key. You can find a list of your API keys at "
                  "https://dashboard.stripe.com/account/apikeys.",
                  "",
                  "",
                  {}};
}

ApiError missing_permission(const std::string& key, const std::string& permission) {
  return ApiError{403,
                  "invalid_request_error",
                  "The provided key '" + masked_restricted(key) +
                      "' does not have the required permissions for this endpoint on account "
                      "'acct_emulator'. Having the '" +
                      permission + "' permission would allow this request to continue.",
                  "",
                  "",
                  {}};
}

ApiError rate_limited(const std::string& reason) {
  ApiError error{429,
                 "invalid_request_error",
                 "Request rate limit exceeded. Learn more about rate limits here "
                 "https://stripe.com/docs/rate-limits.",
                 "",
                 "rate_limit",
                 {}};
  if (!reason.empty()) error.headers.emplace_back("Stripe-Rate-Limited-Reason", reason);
  return error;
}

ApiError lock_timeout(int status) {
  return ApiError{status,
                  "invalid_request_error",
                  "This object cannot be accessed right now because another API request or "
                  "Stripe process is currently accessing it. If you see this error "
                  "intermittently, retry the request.",
                  "",
                  "lock_timeout",
                  {}};
}

// The emulator's wording: Stripe documents the rule, not its message.
ApiError concurrent_meter_event() {
  return ApiError{429,
                  "invalid_request_error",
                  "Concurrent requests for the same customer and meter are not allowed: another "
                  "meter event for this customer and meter is still being processed. Retry the "
                  "request once it has completed.",
                  "",
                  "rate_limit",
                  {{"Stripe-Rate-Limited-Reason", "resource-specific"}}};
}

ApiError idempotency_key_too_long() {
  return invalid_request("Invalid idempotency key: must be at most 255 characters long.");
}

ApiError idempotency_key_reused(const std::string& key) {
  return ApiError{400,
                  "idempotency_error",
                  "Keys for idempotent requests can only be used with the same parameters they "
                  "were first used with. Try using a key other than '" +
                      key + "' if you meant to execute a different request.",
                  "",
                  "",
                  {}};
}

ApiError idempotency_key_in_use(const std::string& key) {
  return ApiError{409,
                  "idempotency_error",
                  "There is currently another in-progress request using this Idempotency-Key "
                  "(that probably means you submitted twice, and the other is still going "
                  "through): " +
                      key + ". Please try again later.",
                  "",
                  "idempotency_key_in_use",
                  {}};
}

ApiError injected(const Fault& fault) {
  return with_retry_after(injected_status(fault), fault.retry_after);
}

ApiError with_retry_after(ApiError error, std::optional<std::chrono::seconds> seconds) {
  if (seconds) error.headers.emplace_back("Retry-After", std::to_string(seconds->count()));
  return error;
}

}  // namespace errors
}  // namespace stripe_emulator
