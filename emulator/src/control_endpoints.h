// The emulator's controls over HTTP under /_emulator/, for the stripe-emulator binary and anyone
// outside the test process. No authentication; loopback clients only (403 otherwise). JSON in,
// JSON out; errors are {"error":{"message":…}}.
//   GET    /_emulator/totals          {"items":{"si_…":N},"customers":{"cus_…":N},
//                                      "meters":{"event_name":{"cus_…":N}}}  (counted events)
//   POST   /_emulator/faults          {"kind":"status|hang|close|close_after_commit","status":500,
//                                      "count":1,"path_prefix":"","hang_ms":0}
//   DELETE /_emulator/faults          clears queued faults
//   POST   /_emulator/rate_limit      {"rps":10}  (0 turns it off)
//   POST   /_emulator/release_hangs
//   GET    /_emulator/requests        the request log, oldest first
#pragma once

#include "exchange.h"
#include "stripe_emulator/emulator.h"

namespace stripe_emulator {

inline constexpr char kControlPrefix[] = "/_emulator/";

Answer handle_control(Emulator& emulator, const IncomingRequest& request);

}  // namespace stripe_emulator
