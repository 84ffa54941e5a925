// Picks the customer key of an event by the configured charge-by strategy.
#pragma once

#include <optional>
#include <string>

#include "stripe_billing/config.h"
#include "stripe_billing/usage_event.h"

namespace stripe_billing {

// end_user_id: the key-bound end-user id, else the request body's `user`; user_id and team_id:
// the key's metadata. The chosen field itself (no copy), empty when the event has none.
const std::string& charge_by_value(const UsageEvent& event, ChargeBy charge_by) noexcept;

}  // namespace stripe_billing
