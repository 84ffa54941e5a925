#include "stripe_billing/stripe_client.h"

#include <cctype>

#include "stripe_billing/version.h"

namespace stripe_billing {
namespace {

bool is_unreserved(unsigned char c) {
  return std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~';
}

std::string encode(std::string_view text, bool encode_dot) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (is_unreserved(c) && !(encode_dot && c == '.')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0x0F]);
    }
  }
  return out;
}

std::optional<int> parse_int(const std::string& text) {
  if (text.empty() || text.size() > 9) return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

}  // namespace

const char* to_string(Endpoint endpoint) noexcept {
  switch (endpoint) {
    case Endpoint::kOther:
      return "other";
    case Endpoint::kUsageRecords:
      return "usage_records";
    case Endpoint::kSummaries:
      return "summaries";
    case Endpoint::kMeterEvents:
      return "meter_events";
    case Endpoint::kMeterEventStream:
      return "meter_event_stream";
    case Endpoint::kMeterEventSession:
      return "meter_event_session";
    case Endpoint::kCustomerSearch:
      return "customer_search";
    case Endpoint::kSubscriptions:
      return "subscriptions";
    case Endpoint::kPrices:
      return "prices";
    case Endpoint::kMeters:
      return "meters";
  }
  return "other";
}

Endpoint endpoint_of(std::string_view path) noexcept {
  path = path.substr(0, path.find('?'));
  const auto ends_with = [path](std::string_view tail) {
    return path.size() >= tail.size() && path.substr(path.size() - tail.size()) == tail;
  };
  const auto starts_with = [path](std::string_view head) {
    return path.substr(0, head.size()) == head;
  };
  if (ends_with("/usage_records")) return Endpoint::kUsageRecords;
  if (ends_with("/usage_record_summaries") || ends_with("/event_summaries")) {
    return Endpoint::kSummaries;
  }
  if (path == "/v1/billing/meter_events" || path == "/v2/billing/meter_events") {
    return Endpoint::kMeterEvents;
  }
  if (path == "/v2/billing/meter_event_stream") return Endpoint::kMeterEventStream;
  if (path == "/v2/billing/meter_event_session") return Endpoint::kMeterEventSession;
  if (path == "/v1/customers/search") return Endpoint::kCustomerSearch;
  if (starts_with("/v1/subscriptions") || starts_with("/v1/subscription_items")) {
    return Endpoint::kSubscriptions;
  }
  if (starts_with("/v1/prices")) return Endpoint::kPrices;
  if (starts_with("/v1/billing/meters")) return Endpoint::kMeters;
  return Endpoint::kOther;
}

std::string percent_encode(std::string_view text) { return encode(text, false); }

std::string encode_path_segment(std::string_view segment) { return encode(segment, true); }

std::string encode_form(const FormFields& fields) {
  std::string out;
  for (const auto& [key, value] : fields) {
    if (!out.empty()) out.push_back('&');
    out += percent_encode(key);
    out.push_back('=');
    out += percent_encode(value);
  }
  return out;
}

StripeError parse_stripe_error(const HttpResponse& response) {
  StripeError error;
  error.http_status = response.status;
  error.request_id = response.header("request-id");
  error.rate_limited_reason = response.header("stripe-rate-limited-reason");
  const std::string should_retry = response.header("stripe-should-retry");
  if (should_retry == "true") error.should_retry = true;
  if (should_retry == "false") error.should_retry = false;
  error.retry_after_seconds = parse_int(response.header("retry-after"));

  auto body = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  const auto* details = body.is_object() && body.contains("error") && body["error"].is_object()
                            ? &body["error"]
                            : nullptr;
  if (details == nullptr) {
    error.message = "HTTP " + std::to_string(response.status) + " without a Stripe error body";
    return error;
  }
  auto text = [details](const char* name) {
    auto it = details->find(name);
    return it != details->end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  error.type = text("type");
  error.code = text("code");
  error.param = text("param");
  error.message = text("message");
  return error;
}

StripeClient::StripeClient(HttpTransport& transport, StripeClientOptions options)
    : transport_(transport), options_(std::move(options)) {}

Expected<StripeResponse> StripeClient::post_form(const std::string& path, const FormFields& fields,
                                                 const std::string& idempotency_key) const {
  HttpRequest request;
  request.method = "POST";
  request.url = options_.api_base + path;
  request.endpoint = endpoint_of(path);
  request.body = encode_form(fields);
  request.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  request.headers.emplace_back("Idempotency-Key", idempotency_key);
  return send(std::move(request));
}

Expected<StripeResponse> StripeClient::post_json(const std::string& path,
                                                 const nlohmann::json& body) const {
  HttpRequest request;
  request.method = "POST";
  request.url = options_.api_base + path;
  request.endpoint = endpoint_of(path);
  request.body = body.dump();
  request.headers.emplace_back("Content-Type", "application/json");
  return send(std::move(request));
}

Expected<StripeResponse> StripeClient::post_json(const std::string& path,
                                                 const nlohmann::json& body,
                                                 const std::string& idempotency_key,
                                                 const std::string& stripe_version) const {
  HttpRequest request;
  request.method = "POST";
  request.url = options_.api_base + path;
  request.endpoint = endpoint_of(path);
  request.body = body.dump();
  request.headers.emplace_back("Content-Type", "application/json");
  if (!idempotency_key.empty()) request.headers.emplace_back("Idempotency-Key", idempotency_key);
  return send(std::move(request), stripe_version);
}

Expected<StripeResponse> StripeClient::get(const std::string& path, const FormFields& query) const {
  return get(path, query, options_.api_version);
}

Expected<StripeResponse> StripeClient::get(const std::string& path, const FormFields& query,
                                           const std::string& stripe_version) const {
  HttpRequest request;
  request.method = "GET";
  request.url = options_.api_base + path;
  request.endpoint = endpoint_of(path);
  if (!query.empty()) request.url += "?" + encode_form(query);
  return send(std::move(request), stripe_version);
}

Expected<StripeResponse> StripeClient::send(HttpRequest request) const {
  return send(std::move(request), options_.api_version);
}

Expected<StripeResponse> StripeClient::send(HttpRequest request,
                                            const std::string& stripe_version) const {
  request.timeout = options_.timeout;
  request.headers.emplace_back("Authorization", "Bearer " + options_.api_key.reveal());
  request.headers.emplace_back("User-Agent", kUserAgent);
  request.headers.emplace_back("Accept", "application/json");
  if (!stripe_version.empty()) request.headers.emplace_back("Stripe-Version", stripe_version);
  return to_stripe_response(transport_.send(request));
}

Expected<StripeResponse> to_stripe_response(Expected<HttpResponse> response) {
  if (!response) return std::move(response).error();
  if (response->status >= 400) {
    StripeError stripe = parse_stripe_error(*response);
    std::string message = stripe.message;
    return Error{ErrorCode::kStripe, std::move(message), std::move(stripe)};
  }
  if (response->status < 200 || response->status >= 300) {
    return Error{ErrorCode::kInvalidResponse,
                 "HTTP " + std::to_string(response->status) +
                     " is not an answer Stripe gives (only 2xx is a success)",
                 std::nullopt};
  }
  StripeResponse result;
  result.http_status = response->status;
  result.request_id = response->header("request-id");
  result.idempotent_replayed = response->header("idempotent-replayed") == "true";
  result.body = nlohmann::json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  if (result.body.is_discarded() || !result.body.is_object()) {
    return Error{
        ErrorCode::kInvalidResponse,
        "HTTP " + std::to_string(response->status) + " with a body that is not a JSON object",
        std::nullopt};
  }
  return result;
}

}  // namespace stripe_billing
