// The structured activity lines (deliveries, retries, dead batches, refused events): the same
// fields as `key=value` text or as one JSON object, by STRIPE_LOG_FORMAT. Values that come from
// the host (customer keys, models, call ids) must be passed through log_safe() first.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "stripe_billing/config.h"

namespace stripe_billing {

using ActivityFields = std::vector<std::pair<const char*, nlohmann::json>>;

// text: "stripe_billing activity=usage_record success=true customer=alice …"
// json: {"logger":"stripe_billing","activity":"usage_record","success":true,"customer":"alice",…}
std::string activity_line(LogFormat format, const ActivityFields& fields);

}  // namespace stripe_billing
