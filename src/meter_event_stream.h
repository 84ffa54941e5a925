// Stripe's v2 meter event stream: a session minted with the secret key
// (POST /v2/billing/meter_event_session on the API base) whose token authenticates JSON batches
// of up to 100 events to /v2/billing/meter_event_stream on the stream base. The token is cached
// and renewed a minute before it expires (sessions live 15 minutes); when Stripe refuses the token
// (401: expired, or any other reason), a new session is minted and the same events are sent again
// once, with the same identifiers, so Stripe counts each once.
//
// Thread-safe: senders share one session. The token is a credential: it is never logged.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

#include "stripe_billing/config.h"
#include "stripe_billing/http_transport.h"
#include "stripe_billing/secret.h"
#include "stripe_billing/stripe_client.h"
#include "stripe_billing/stripe_logger.h"

namespace stripe_billing {

class MeterEventStream {
 public:
  MeterEventStream(HttpTransport& transport, const StripeClient& client,
                   const FinalizedConfig& config, std::shared_ptr<Clock> clock);

  struct Answer {
    Expected<StripeResponse> result;
    bool session_failed = false;  // minting the session failed: `result` is that answer
  };
  // Sends {"events": events}; success is Stripe's `{}`.
  Answer send(const nlohmann::json& events);

  std::uint64_t sessions_created() const;

 private:
  struct Session {
    Secret token;
    std::int64_t expires_at = 0;  // unix seconds
  };

  Expected<Session> session(bool renew);
  Expected<StripeResponse> post(const Session& session, const std::string& body);
  std::int64_t now_seconds() const;

  HttpTransport& transport_;
  const StripeClient& client_;
  const FinalizedConfig& config_;
  std::shared_ptr<Clock> clock_;

  mutable std::mutex mutex_;
  std::optional<Session> session_;
  std::uint64_t sessions_created_ = 0;
};

// Stripe's answer that a stream session's token has expired.
bool is_session_expired(const Error& error);
// Stripe refused a stream session's token (expired or otherwise): mint a new session.
bool is_token_refused(const Error& error);

}  // namespace stripe_billing
