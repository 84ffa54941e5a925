// The data of Stripe's meter error report events (v1.billing.meter.error_report_triggered,
// v1.billing.meter.no_meter_found), as GET /v2/core/events/{id} answers it:
//   {"developer_message_summary":"There are 3 invalid events",
//    "reason":{"error_count":3,"error_types":[{"code":"meter_event_customer_not_found",
//      "error_count":3,"sample_errors":[{"error_message":"…","request":{"identifier":"…"}}]}]},
//    "validation_start":"<RFC 3339>","validation_end":"<RFC 3339>"}
// Stripe samples: at most `samples_per_code` sample_errors per code, while each error_count is
// the true count. Codes in the order they first failed; the window runs from the earliest
// failed event's arrival to `now`. The messages are the emulator's wording.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "meter_store.h"

namespace stripe_emulator {

nlohmann::json error_report_data(const std::vector<MeterEvent>& failed,
                                 std::size_t samples_per_code, std::int64_t now);

}  // namespace stripe_emulator
