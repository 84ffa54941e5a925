// A billing meter event for one outbox row: its identifier, Stripe's v1 form
// (POST /v1/billing/meter_events) and the v2 stream's JSON, and the limits Stripe enforces on it.
// Pure functions; the dispatcher sends what they build.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "stripe_billing/config.h"
#include "stripe_billing/error.h"
#include "stripe_billing/stripe_client.h"

namespace stripe_billing {

// Stripe accepts meter event timestamps within the past 35 days (and at most 5 minutes ahead).
inline constexpr std::int64_t kMeterEventMaxAgeSeconds = 35LL * 24 * 60 * 60;
inline constexpr std::int64_t kMeterEventMaxAheadSeconds = 5 * 60;
// Stripe rejects values with more than 15 significant digits.
inline constexpr std::int64_t kMaxMeterValue = 999'999'999'999'999;
inline constexpr std::size_t kMaxStreamEvents = 100;  // per v2 stream request

struct MeterEvent {
  std::string event_name;
  std::string identifier;
  std::string customer_id;
  std::int64_t value = 0;
  std::int64_t timestamp = 0;  // unix seconds
  std::string token_type;      // "" unless split bills on one meter
  std::string model;           // sent only when STRIPE_METER_MODEL_KEY is set
};

// The same on every retry and every restart, and across gateways reporting the same call: the
// call id and the dimension, or a hash of them when that would not fit Stripe's 100 characters
// or holds characters other than [A-Za-z0-9_.:-].
std::string meter_event_identifier(std::string_view call_id, std::string_view dimension);

FormFields meter_event_form(const MeterEvent& event, const FinalizedConfig& config);
nlohmann::json meter_stream_event(const MeterEvent& event, const FinalizedConfig& config);

// Stripe's answer that the identifier is already recorded: the event is billed.
bool is_already_recorded(const Error& error);

std::string to_rfc3339(std::int64_t unix_seconds);  // 2026-12-01T08:00:00Z
// Accepts Z or a numeric offset, with optional fractional seconds; nullopt when not RFC 3339.
std::optional<std::int64_t> parse_rfc3339(std::string_view text);

}  // namespace stripe_billing
