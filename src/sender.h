// Sends one batch to Stripe and says what came of it. A Batch carries everything its request needs
// (the item, quantity, timestamp and idempotency key of a usage record; the meter events of a meter
// batch), so the sender never reads the store back, never calls the planner and never looks a
// customer up. One call is one attempt; classify() (retry_policy.h) gives the verdict.
//
//   usage record: POST /v1/subscription_items/<item>/usage_records, the batch's key
//   v1 meter event: POST /v1/billing/meter_events, the batch's key and the event's identifier
//   v2 meter event (meter_events_v2): POST /v2/billing/meter_events, one JSON event, the same
//                  key and identifier, Stripe-Version STRIPE_V2_API_VERSION
//   the v2 stream: POST the stream with the session token (MeterEventStream), up to 100 events
//
// Thread-safe: senders share one Sender.
#pragma once

#include <chrono>
#include <string>

#include "batch.h"
#include "meter_event_stream.h"
#include "retry_policy.h"
#include "stripe_billing/config.h"
#include "stripe_billing/stripe_client.h"

namespace stripe_billing {

struct SendResult {
  Classification verdict;
  std::string request_id;  // Stripe's Request-Id, when it answered
  std::string detail;      // the error, for the log and the batch's last_error; "" on success
  std::chrono::milliseconds latency{0};
};

inline constexpr const char* kV2MeterEventsPath = "/v2/billing/meter_events";

class Sender {
 public:
  Sender(const StripeClient& client, MeterEventStream& stream, const FinalizedConfig& config);

  SendResult send(const Batch& batch) const;

 private:
  Expected<StripeResponse> post_meter_event(const Batch& batch) const;

  const StripeClient& client_;
  MeterEventStream& stream_;
  const FinalizedConfig& config_;
};

}  // namespace stripe_billing
