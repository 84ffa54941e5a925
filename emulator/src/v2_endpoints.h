// The v2 billing operations the emulator serves, JSON in and JSON out:
//   POST /v2/billing/meter_event_session  (secret key; empty body) -> a session and its token
//   POST /v2/billing/meter_event_stream   (session token) {"events":[…≤100]} -> {}
// A malformed body is a 400; the events themselves are validated asynchronously (MeterStore).
// Errors are in the v2 shape (to_v2_answer). Authentication, rate limits and faults happen
// before, in the pipeline. Thread-safe, as MeterStore and MeterSessions are.
#pragma once

#include <string_view>

#include "exchange.h"
#include "meter_sessions.h"
#include "meter_store.h"

namespace stripe_emulator {

inline constexpr std::string_view kV2Prefix = "/v2/";
inline constexpr std::string_view kMeterEventStreamPath = "/v2/billing/meter_event_stream";

Answer serve_v2(const IncomingRequest& request, MeterStore& meters, MeterSessions& sessions);

}  // namespace stripe_emulator
