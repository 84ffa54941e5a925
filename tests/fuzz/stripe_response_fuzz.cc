// parse_stripe_error() and to_stripe_response() on a fuzzed answer, written like HTTP: a first
// line with the status (a decimal number, possibly negative or absurd) or `ERR <code> <message>`
// for a transport failure, then `name: value` header lines, an empty line, and the body.
// Invariants: nothing throws; a status >= 400 is always Error{kStripe} carrying the parsed error
// with that status; a transport error passes through unchanged; only a 2xx answer whose body is
// a JSON object is a success, anything else below 400 is kInvalidResponse; the steering headers
// (Request-Id, Stripe-Should-Retry, Retry-After, Stripe-Rate-Limited-Reason) are read exactly as
// sent, whatever the body.
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "stripe_billing/stripe_client.h"

namespace stripe_billing::fuzz {
namespace {

using nlohmann::json;

std::string_view next_line(std::string_view& text) {
  const std::size_t end = text.find('\n');
  std::string_view line = text.substr(0, end);
  text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

// Digits with an optional '-', clamped to ±10^9; anything else is 0.
int parse_number(std::string_view text, std::size_t* used = nullptr) {
  std::size_t i = 0;
  const bool negative = !text.empty() && text[0] == '-';
  if (negative) ++i;
  long long value = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    value = std::min(value * 10 + (text[i] - '0'), 1'000'000'000LL);
  }
  if (used != nullptr) *used = i;
  return static_cast<int>(negative ? -value : value);
}

struct Answer {
  Expected<HttpResponse> response = HttpResponse{};
};

Answer decode(std::string_view input) {
  const std::string_view first = next_line(input);
  if (first.rfind("ERR ", 0) == 0) {
    std::size_t used = 0;
    const int code = parse_number(first.substr(4), &used);
    const std::string_view message = first.substr(std::min(first.size(), 4 + used + 1));
    return {Error{static_cast<ErrorCode>(code), std::string(message), std::nullopt}};
  }
  HttpResponse response;
  response.status = parse_number(first);
  while (!input.empty()) {
    const std::string_view line = next_line(input);
    if (line.empty()) break;
    const std::size_t colon = line.find(':');
    std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    response.headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
  }
  response.body = std::string(input);
  return {std::move(response)};
}

// What HttpResponse::header() must answer, computed here without it.
std::string first_header(const HttpResponse& response, std::string_view name) {
  for (const auto& [key, value] : response.headers) {
    if (key.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < key.size(); ++i) {
      const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
      same = same && lower(key[i]) == lower(name[i]);
    }
    if (same) return value;
  }
  return {};
}

void check_stripe_error(const HttpResponse& response, const StripeError& error) {
  const std::string detail = "status " + std::to_string(response.status);
  FUZZ_CHECK(error.http_status == response.status, detail);
  FUZZ_CHECK(error.request_id == first_header(response, "request-id"), error.request_id);
  FUZZ_CHECK(error.rate_limited_reason == first_header(response, "stripe-rate-limited-reason"),
             error.rate_limited_reason);

  const std::string should_retry = first_header(response, "stripe-should-retry");
  if (should_retry == "true" || should_retry == "false") {
    FUZZ_CHECK(error.should_retry == (should_retry == "true"), should_retry);
  } else {
    FUZZ_CHECK(!error.should_retry.has_value(), should_retry);
  }

  const std::string retry_after = first_header(response, "retry-after");
  bool seconds_shape = !retry_after.empty() && retry_after.size() <= 9;
  for (char c : retry_after) seconds_shape = seconds_shape && c >= '0' && c <= '9';
  if (seconds_shape) {
    FUZZ_CHECK(error.retry_after_seconds == parse_number(retry_after), retry_after);
  } else {
    FUZZ_CHECK(!error.retry_after_seconds.has_value(), retry_after);
  }

  for (const std::string* text : {&error.type, &error.code, &error.param, &error.message}) {
    FUZZ_CHECK(valid_utf8(*text), *text);
  }
  const json body = json::parse(response.body, nullptr, false);
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    const json& details = body["error"];
    const auto text = [&details](const char* name) {
      auto it = details.find(name);
      return it != details.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    FUZZ_CHECK(error.type == text("type") && error.code == text("code") &&
                   error.param == text("param") && error.message == text("message"),
               response.body);
  } else {
    FUZZ_CHECK(!error.message.empty() && error.type.empty() && error.code.empty(), response.body);
  }
}

void check_response(const Answer& answer) {
  must_not_throw("to_stripe_response", [&] {
    const Expected<StripeResponse> result = to_stripe_response(answer.response);
    if (!answer.response) {
      const Error& sent = answer.response.error();
      FUZZ_CHECK(!result && result.error().code == sent.code &&
                     result.error().message == sent.message && !result.error().stripe,
                 "a transport error did not pass through unchanged");
      (void)result.error().to_string();
      return;
    }
    const HttpResponse& response = *answer.response;
    const std::string detail =
        "status " + std::to_string(response.status) + ", body " + response.body;
    if (response.status >= 400) {
      FUZZ_CHECK(!result, detail);
      FUZZ_CHECK(result.error().code == ErrorCode::kStripe && result.error().stripe, detail);
      FUZZ_CHECK(result.error().stripe->http_status == response.status, detail);
      FUZZ_CHECK(result.error().message == result.error().stripe->message, detail);
      (void)result.error().to_string();
      return;
    }
    const bool two_hundred = response.status >= 200 && response.status < 300;
    if (!result) {
      FUZZ_CHECK(result.error().code == ErrorCode::kInvalidResponse, detail);
      FUZZ_CHECK(!result.error().message.empty() && !result.error().stripe, detail);
      const json body = json::parse(response.body, nullptr, false);
      FUZZ_CHECK(!two_hundred || body.is_discarded() || !body.is_object(), detail);
      return;
    }
    FUZZ_CHECK(two_hundred, "a success with " + detail);
    FUZZ_CHECK(result->http_status == response.status, detail);
    FUZZ_CHECK(result->body.is_object(), detail);
    FUZZ_CHECK(result->request_id == first_header(response, "request-id"), detail);
    FUZZ_CHECK(
        result->idempotent_replayed == (first_header(response, "idempotent-replayed") == "true"),
        detail);
  });
}

}  // namespace
}  // namespace stripe_billing::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace stripe_billing;
  const fuzz::Answer answer =
      fuzz::decode(std::string_view(reinterpret_cast<const char*>(data), size));
  if (answer.response) {
    const HttpResponse& response = *answer.response;
    fuzz::must_not_throw("parse_stripe_error", [&] {
      fuzz::check_stripe_error(response, parse_stripe_error(response));
      for (const char* name : {"request-id", "Request-Id", "REQUEST-ID", "retry-after"}) {
        FUZZ_CHECK(response.header(name) == fuzz::first_header(response, name), name);
      }
    });
  }
  fuzz::check_response(answer);
  return 0;
}
