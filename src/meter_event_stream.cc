#include "meter_event_stream.h"

#include "meter_event.h"
#include "stripe_billing/version.h"

namespace stripe_billing {
namespace {

constexpr std::int64_t kRenewBeforeSeconds = 60;

}  // namespace

bool is_session_expired(const Error& error) {
  return error.stripe && error.stripe->http_status == 401 &&
         error.stripe->code == "billing_meter_event_session_expired";
}

bool is_token_refused(const Error& error) {
  return error.stripe && (error.stripe->http_status == 401 || error.stripe->http_status == 403);
}

MeterEventStream::MeterEventStream(HttpTransport& transport, const StripeClient& client,
                                   const FinalizedConfig& config, std::shared_ptr<Clock> clock)
    : transport_(transport), client_(client), config_(config), clock_(std::move(clock)) {}

MeterEventStream::Answer MeterEventStream::send(const nlohmann::json& events) {
  const std::string body = nlohmann::json{{"events", events}}.dump();
  auto current = session(false);
  if (!current) return {std::move(current).error(), true};
  auto response = post(*current, body);
  if (response || !is_token_refused(response.error())) return {std::move(response), false};
  auto renewed = session(true);
  if (!renewed) return {std::move(renewed).error(), true};
  return {post(*renewed, body), false};
}

std::uint64_t MeterEventStream::sessions_created() const {
  std::lock_guard lock(mutex_);
  return sessions_created_;
}

std::int64_t MeterEventStream::now_seconds() const {
  return std::chrono::duration_cast<std::chrono::seconds>(clock_->now().time_since_epoch()).count();
}

// Minting happens under the lock, so concurrent senders wait for one new session rather than
// each minting their own.
Expected<MeterEventStream::Session> MeterEventStream::session(bool renew) {
  std::lock_guard lock(mutex_);
  if (session_ && !renew && session_->expires_at - kRenewBeforeSeconds > now_seconds()) {
    return *session_;
  }
  auto response = client_.post_json("/v2/billing/meter_event_session", nlohmann::json::object());
  if (!response) return std::move(response).error();
  const auto& body = response->body;
  const auto token = body.find("authentication_token");
  const auto expires = body.find("expires_at");
  std::optional<std::int64_t> expires_at;
  if (expires != body.end() && expires->is_string()) {
    expires_at = parse_rfc3339(expires->get<std::string>());
  }
  if (token == body.end() || !token->is_string() || token->get<std::string>().empty() ||
      !expires_at) {
    return Error{ErrorCode::kInvalidResponse,
                 "meter event session without an authentication_token and an RFC 3339 expires_at",
                 std::nullopt};
  }
  session_ = Session{Secret(token->get<std::string>()), *expires_at};
  ++sessions_created_;
  return *session_;
}

Expected<StripeResponse> MeterEventStream::post(const Session& session, const std::string& body) {
  HttpRequest request;
  request.method = "POST";
  request.url = config_.meter_stream_base() + "/v2/billing/meter_event_stream";
  request.endpoint = Endpoint::kMeterEventStream;
  request.body = body;
  request.timeout = config_.timeout();
  request.headers = {{"Authorization", "Bearer " + session.token.reveal()},
                     {"Content-Type", "application/json"},
                     {"User-Agent", kUserAgent},
                     {"Accept", "application/json"},
                     {"Stripe-Version", config_.api_version()}};
  return to_stripe_response(transport_.send(request));
}

}  // namespace stripe_billing
