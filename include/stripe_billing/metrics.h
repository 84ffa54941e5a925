// The metrics of a StripeLogger, rendered from its stats() snapshot: as JSON, and as Prometheus
// text exposition (version 0.0.4), so a gateway can serve them on /metrics. Pure functions, safe
// from any thread; nothing secret is in a snapshot (label values are escaped as the format asks).
//
//   auto text = stripe_billing::to_prometheus(logger->stats());
#pragma once

#include <string>

#include "stripe_billing/stripe_logger.h"

namespace stripe_billing {

std::string to_json(const StripeLoggerStats& stats);
std::string to_prometheus(const StripeLoggerStats& stats);

}  // namespace stripe_billing
