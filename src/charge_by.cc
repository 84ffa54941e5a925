#include "charge_by.h"

#include <string>

#include "reasons.h"

namespace stripe_billing {
namespace {

constexpr std::string_view kCustomerIdPrefix = "cus_";

CustomerKey bound_to_the_key(std::string_view field) {
  if (field.empty()) return {};
  return {field, KeyOrigin::kApiKey, true, RequestUserRefusal::kNone};
}

// The request's `user`, for an event whose key has no end user.
CustomerKey from_the_request(std::string_view user, RequestUserTrust trust) {
  if (user.empty()) return {};
  switch (trust) {
    case RequestUserTrust::kOff:
      return {{}, KeyOrigin::kNone, false, RequestUserRefusal::kNotTrusted};
    case RequestUserTrust::kLookup:
      // Refused here rather than left to the resolver, which takes any cus_… value as the
      // customer: whatever it does, a caller's value can never name a customer directly.
      if (user.substr(0, kCustomerIdPrefix.size()) == kCustomerIdPrefix) {
        return {{}, KeyOrigin::kNone, false, RequestUserRefusal::kLooksLikeCustomerId};
      }
      return {user, KeyOrigin::kRequest, false, RequestUserRefusal::kNone};
    case RequestUserTrust::kCustomerId:
      return {user, KeyOrigin::kRequest, true, RequestUserRefusal::kNone};
  }
  return {};
}

}  // namespace

CustomerKey charge_by_value(const KeyFields& fields, ChargeBy charge_by,
                            RequestUserTrust trust) noexcept {
  switch (charge_by) {
    case ChargeBy::kEndUserId:
      return fields.end_user_id.empty() ? from_the_request(fields.request_user, trust)
                                        : bound_to_the_key(fields.end_user_id);
    case ChargeBy::kUserId:
      return bound_to_the_key(fields.user_id);
    case ChargeBy::kTeamId:
      return bound_to_the_key(fields.team_id);
  }
  return {};
}

CustomerKey charge_by_value(const UsageEvent& event, ChargeBy charge_by,
                            RequestUserTrust trust) noexcept {
  return charge_by_value(
      KeyFields{event.end_user_id, event.user_id, event.team_id, event.request_user}, charge_by,
      trust);
}

CustomerKey charge_by_value(const UsageEvent& event, const FinalizedConfig& config) noexcept {
  return charge_by_value(event, config.charge_by(), config.trust_request_user());
}

const char* to_string(RequestUserRefusal refusal) noexcept {
  switch (refusal) {
    case RequestUserRefusal::kNone:
      return "";
    case RequestUserRefusal::kNotTrusted:
      return to_string(Reason::kRequestUserNotTrusted);
    case RequestUserRefusal::kLooksLikeCustomerId:
      return to_string(Reason::kRequestUserIsCustomerId);
  }
  return "";
}

}  // namespace stripe_billing
