// The emulator's controls over HTTP under /_emulator/, for the stripe-emulator binary and anyone
// outside the test process. No authentication; loopback clients only (403 otherwise). JSON in,
// JSON out; errors are {"error":{"message":…}}.
//   GET    /_emulator/totals          {"items":{"si_…":N},"customers":{"cus_…":N},
//                                      "meters":{"event_name":{"cus_…":N}}}  (counted events)
//   POST   /_emulator/faults          {"kind":"status|hang|close|close_after_commit","status":500,
//                                      "count":1,"path_prefix":"","hang_ms":0,
//                                      "code":"rate_limit|lock_timeout",  (a 429's; see Fault)
//                                      "rate_limited_reason":"global-rate",  ("": no header)
//                                      "retry_after_seconds":2}  (absent: no Retry-After)
//   DELETE /_emulator/faults          clears queued faults
//   POST   /_emulator/random_faults   {"seed":0,"faults":[{<a fault as above>,"probability":0.05}]}
//                                      ([] turns them off; "count" is not used)
//   POST   /_emulator/rate_limit      {"rps":10,"retry_after_seconds":1}  (0 turns it off; the
//                                      Retry-After is optional)
//   POST   /_emulator/release_hangs
//   GET    /_emulator/requests        the request log, oldest first
//   GET    /_emulator/answers {"by_status":{"200":N},"too_many_requests":{"lock_timeout":N},
//                                      "concurrent_meter_event_refusals":N}  (see AnswerCounts)
//   GET    /_emulator/meter_dimensions?event_name=E&keys=token_type,model[&customer=cus_…]
//          {"totals":[{"customer":"cus_…","dimensions":{"token_type":"input","model":"m"},
//                      "value":N},…]}  (Emulator::meter_totals_by_dimension, ordered by customer
//                      then the values in `keys` order; keys empty: one entry per customer;
//                      400 without event_name)
//   POST   /_emulator/restricted_keys {"key":"rk_test_…","permissions":["rak_customer_read",…]}
//                                      (Emulator::add_restricted_key; 400 for unknown names)
// Credits, meter error reports and webhooks (the Emulator methods of the same names; 400 for what
// they throw std::invalid_argument for):
//   POST   /_emulator/credit_grants   {"customer":"cus_…","amount":N,"currency":"usd"} -> {"id"}
//                                      (currency optional, usd)
//   POST   /_emulator/consume_credits {"customer":"cus_…","amount":N}
//   POST   /_emulator/reject_meter_event {"identifier":"…","code":"meter_event_invalid_value"}
//   POST   /_emulator/meter_error_report {"event_name":"…"} -> {"event_id"}  ("" if nothing)
//   POST   /_emulator/no_meter_found  -> {"event_id"}  ("" if nothing)
//   POST   /_emulator/webhook_endpoints {"url":"http://127.0.0.1:PORT/path","secret":"whsec_…"}
//   POST   /_emulator/deliver         {"event_id":"evt_…","kind":"redelivery|forged|stale",
//                                      "age_seconds":N}  (age: stale only, default 600)
//   GET    /_emulator/webhook_deliveries {"deliveries":[{"event_id","type","url","kind",
//                                      "attempt","status","signature_header","body"},…]}
#pragma once

#include "exchange.h"
#include "stripe_emulator/emulator.h"

namespace stripe_emulator {

inline constexpr char kControlPrefix[] = "/_emulator/";

Answer handle_control(Emulator& emulator, const IncomingRequest& request);

}  // namespace stripe_emulator
