#include "charge_by.h"

namespace stripe_billing {

const std::string& charge_by_value(const UsageEvent& event, ChargeBy charge_by) noexcept {
  switch (charge_by) {
    case ChargeBy::kEndUserId:
      return event.end_user_id.empty() ? event.request_user : event.end_user_id;
    case ChargeBy::kUserId: return event.user_id;
    case ChargeBy::kTeamId: return event.team_id;
  }
  return event.end_user_id;
}

}  // namespace stripe_billing
