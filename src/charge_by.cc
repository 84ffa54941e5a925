#include "charge_by.h"

namespace stripe_billing {

std::optional<std::string> customer_key(const UsageEvent& event, ChargeBy charge_by) {
  const std::string* value = nullptr;
  switch (charge_by) {
    case ChargeBy::kEndUserId:
      value = event.end_user_id.empty() ? &event.request_user : &event.end_user_id;
      break;
    case ChargeBy::kUserId:
      value = &event.user_id;
      break;
    case ChargeBy::kTeamId:
      value = &event.team_id;
      break;
  }
  if (value == nullptr || value->empty()) return std::nullopt;
  return *value;
}

}  // namespace stripe_billing
