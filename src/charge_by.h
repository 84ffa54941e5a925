// Picks an event's customer key by the configured charge-by strategy, and says whether whoever
// called the gateway could have chosen it.
//
// Trust model (docs/configuration.md, "Who chooses the customer"): end_user_id, user_id and
// team_id come from the API key's metadata, which the gateway binds to the key; they are trusted,
// and a `cus_…` value among them names the Stripe customer as it is. The request body's `user`
// (UsageEvent::request_user) is written by the caller: it is used only with charge_by=end_user_id,
// only when the key has no end user, and only as STRIPE_TRUST_REQUEST_USER allows.
#pragma once

#include <string_view>

#include "stripe_billing/config.h"
#include "stripe_billing/usage_event.h"

namespace stripe_billing {

// Who chose a customer key.
enum class KeyOrigin {
  kNone,     // the event names no customer
  kApiKey,   // end_user_id, user_id or team_id: bound to the API key by the gateway
  kRequest,  // the request body's `user`: whatever the caller wrote
};

// Why the request's `user` was not used although the key had no end user and the request named
// one (charge_by=end_user_id only).
enum class RequestUserRefusal {
  kNone,
  kNotTrusted,           // STRIPE_TRUST_REQUEST_USER=off
  kLooksLikeCustomerId,  // lookup, and the value starts with "cus_"
};

struct CustomerKey {
  std::string_view value;  // the event's own field, no copy; "" when origin is kNone
  KeyOrigin origin = KeyOrigin::kNone;
  // True: a `cus_…` value may be taken as the Stripe customer as it is. False: the value may name
  // a customer only through STRIPE_CUSTOMER_MAP or the customer metadata search, never directly.
  bool trusted = false;
  RequestUserRefusal refused = RequestUserRefusal::kNone;
};

// The fields a customer key is picked from, as views (admit() has no UsageEvent).
struct KeyFields {
  std::string_view end_user_id;
  std::string_view user_id;
  std::string_view team_id;
  std::string_view request_user;
};
CustomerKey charge_by_value(const KeyFields& fields, ChargeBy charge_by,
                            RequestUserTrust trust) noexcept;

// off: the request's user is never used. lookup: it is used untrusted, and one that starts with
// "cus_" is refused outright (so no resolver can take it as an id). customer_id: it is used
// trusted, as before this setting existed.
CustomerKey charge_by_value(const UsageEvent& event, ChargeBy charge_by,
                            RequestUserTrust trust) noexcept;

// The same, with the configuration's STRIPE_CHARGE_BY and STRIPE_TRUST_REQUEST_USER.
CustomerKey charge_by_value(const UsageEvent& event, const FinalizedConfig& config) noexcept;
// The value points into the event: a temporary one would leave it dangling.
CustomerKey charge_by_value(UsageEvent&& event, ChargeBy, RequestUserTrust) = delete;
CustomerKey charge_by_value(UsageEvent&& event, const FinalizedConfig&) = delete;

// "" for kNone; "request_user_not_trusted", "request_user_is_customer_id": stable, for logs and
// metrics.
const char* to_string(RequestUserRefusal refusal) noexcept;

}  // namespace stripe_billing
