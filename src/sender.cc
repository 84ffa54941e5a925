#include "sender.h"

#include "usage_record.h"

namespace stripe_billing {

Sender::Sender(const StripeClient& client, MeterEventStream& stream, const FinalizedConfig& config)
    : client_(client), stream_(stream), config_(config) {}

Expected<StripeResponse> Sender::post_meter_event(const Batch& batch) const {
  if (batch.meter_events.size() != 1) {
    return Error{ErrorCode::kInvalidConfig, "a meter event batch must hold exactly one event",
                 std::nullopt};
  }
  if (config_.billing_mode() == BillingMode::kMeterEventsV2) {
    return client_.post_json(kV2MeterEventsPath,
                             meter_stream_event(batch.meter_events.front(), config_),
                             batch.idempotency_key, config_.v2_api_version());
  }
  return client_.post_form("/v1/billing/meter_events",
                           meter_event_form(batch.meter_events.front(), config_),
                           batch.idempotency_key);
}

SendResult Sender::send(const Batch& batch) const {
  const auto started = std::chrono::steady_clock::now();
  RequestKind kind = request_kind(batch.kind);
  Expected<StripeResponse> response = Error{ErrorCode::kInternal, "not sent", std::nullopt};
  switch (batch.kind) {
    case BatchKind::kUsageRecord:
      response = client_.post_form(usage_record_path(batch.target),
                                   usage_record_fields(batch.quantity, batch.timestamp),
                                   batch.idempotency_key);
      break;
    case BatchKind::kMeterEvent:
      response = post_meter_event(batch);
      break;
    case BatchKind::kMeterStream: {
      nlohmann::json body = nlohmann::json::array();
      for (const MeterEvent& event : batch.meter_events) {
        body.push_back(meter_stream_event(event, config_));
      }
      auto answer = stream_.send(body);
      if (answer.session_failed) kind = RequestKind::kStreamSession;
      response = std::move(answer.result);
      break;
    }
  }
  SendResult result;
  result.latency = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  result.verdict = classify(kind, response);
  if (response) {
    result.request_id = response->request_id;
  } else {
    if (response.error().stripe) result.request_id = response.error().stripe->request_id;
    result.detail = response.error().to_string();
  }
  return result;
}

}  // namespace stripe_billing
