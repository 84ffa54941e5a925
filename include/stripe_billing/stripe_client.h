// Speaks Stripe's v1 API over an HttpTransport: form encoding, Bearer auth, Stripe-Version,
// Idempotency-Key on every POST, User-Agent, and Stripe's error JSON parsed into StripeError.
// Stateless apart from its options: safe to share between threads.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "stripe_billing/error.h"
#include "stripe_billing/http_transport.h"
#include "stripe_billing/secret.h"

namespace stripe_billing {

// Ordered form fields; a key is already in bracket form (`payload[value]`, `expand[0]`).
using FormFields = std::vector<std::pair<std::string, std::string>>;

// application/x-www-form-urlencoded: every byte except A-Z a-z 0-9 - . _ ~ is percent-encoded
// (brackets included, as Stripe's own SDKs do), so no value can add a field or end one early.
std::string encode_form(const FormFields& fields);
std::string percent_encode(std::string_view text);
// One path segment: like percent_encode, and `.` too, so `..` can never climb a level.
std::string encode_path_segment(std::string_view segment);

struct StripeClientOptions {
  std::string api_base;  // https://api.stripe.com
  Secret api_key;
  std::string api_version;  // sent as Stripe-Version unless empty
  std::chrono::milliseconds timeout{30'000};
};

struct StripeResponse {
  int http_status = 0;
  std::string request_id;
  bool idempotent_replayed = false;
  nlohmann::json body;
};

class StripeClient {
 public:
  StripeClient(HttpTransport& transport, StripeClientOptions options);

  // POST a form. `idempotency_key` must be derived from something that survives retries.
  // An HTTP status >= 400 becomes Error{kStripe, ..., stripe = parsed error}.
  Expected<StripeResponse> post_form(const std::string& path, const FormFields& fields,
                                     const std::string& idempotency_key) const;
  // POST a JSON body (the v2 API) with the secret key; no Idempotency-Key.
  Expected<StripeResponse> post_json(const std::string& path, const nlohmann::json& body) const;
  // POST a JSON body to a v2 endpoint with the secret key, an Idempotency-Key and its own
  // Stripe-Version (v2 endpoints take preview versions the v1 calls must not).
  Expected<StripeResponse> post_json(const std::string& path, const nlohmann::json& body,
                                     const std::string& idempotency_key,
                                     const std::string& stripe_version) const;
  // GET with query fields (encoded like a form).
  Expected<StripeResponse> get(const std::string& path, const FormFields& query = {}) const;
  // The same with its own Stripe-Version (a v2 endpoint: GET /v2/core/events/{id}).
  Expected<StripeResponse> get(const std::string& path, const FormFields& query,
                               const std::string& stripe_version) const;

  const StripeClientOptions& options() const noexcept { return options_; }

 private:
  Expected<StripeResponse> send(HttpRequest request) const;
  Expected<StripeResponse> send(HttpRequest request, const std::string& stripe_version) const;

  HttpTransport& transport_;
  StripeClientOptions options_;
};

// The endpoint of a Stripe API path (no scheme, host or query): what StripeClient puts in each
// request's HttpRequest::endpoint.
Endpoint endpoint_of(std::string_view api_path) noexcept;

// Parses an error answer (status, headers, body) into a StripeError; tolerant of non-JSON bodies.
StripeError parse_stripe_error(const HttpResponse& response);

// A transport answer as a StripeResponse: status >= 400 becomes Error{kStripe} with the parsed
// error; any other status outside 2xx (a redirect from a proxy, say: Stripe never redirects) and a
// body that is not a JSON object become kInvalidResponse. Only a 2xx answer is ever a success.
Expected<StripeResponse> to_stripe_response(Expected<HttpResponse> response);

}  // namespace stripe_billing
