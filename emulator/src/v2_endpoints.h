// The v2 billing operations the emulator serves, JSON in and JSON out:
//   POST /v2/billing/meter_event_session  (secret key; empty body) -> a session and its token
//   POST /v2/billing/meter_event_stream   (session token) {"events":[…≤100]} -> {}
//   POST /v2/billing/meter_events         (secret or restricted key, not a session token)
//        {"event_name" (≤100), "payload":{"k":"string",…}, "identifier"? (≤100),
//         "timestamp"? (RFC 3339)} -> {"object":"v2.billing.meter_event","created",
//         "event_name","identifier","livemode":false,"payload","timestamp"} (times in RFC 3339)
//   GET  /v2/core/events/{id}             (secret or restricted key) -> a thin event the emulator
//        emitted, with its data (EventLog); 404 not_found for any other id, snapshot events too
// A malformed body is a 400 (invalid_json, invalid_fields). Stream events are validated
// asynchronously; a meter event synchronously as v1 (400 timestamp_too_far_in_past,
// timestamp_in_future, payload_invalid_value, duplicate_meter_event), the rest asynchronously
// (MeterStore).
// Errors are in the v2 shape (to_v2_answer). Authentication, rate limits and faults happen
// before, in the pipeline. Thread-safe, as MeterStore and MeterSessions are.
#pragma once

#include <string_view>

#include "event_log.h"
#include "exchange.h"
#include "meter_sessions.h"
#include "meter_store.h"

namespace stripe_emulator {

inline constexpr std::string_view kV2Prefix = "/v2/";
inline constexpr std::string_view kMeterEventStreamPath = "/v2/billing/meter_event_stream";
inline constexpr std::string_view kMeterEventsPath = "/v2/billing/meter_events";
inline constexpr std::string_view kCoreEventsPrefix = "/v2/core/events/";

Answer serve_v2(const IncomingRequest& request, MeterStore& meters, MeterSessions& sessions,
                const EventLog& events);

}  // namespace stripe_emulator
