#include "stripe_billing/error.h"

namespace stripe_billing {

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidConfig:
      return "invalid_config";
    case ErrorCode::kInvalidEvent:
      return "invalid_event";
    case ErrorCode::kMissingCustomer:
      return "missing_customer";
    case ErrorCode::kCustomerNotFound:
      return "customer_not_found";
    case ErrorCode::kSubscriptionItemNotFound:
      return "subscription_item_not_found";
    case ErrorCode::kInvalidQuantity:
      return "invalid_quantity";
    case ErrorCode::kNetwork:
      return "network";
    case ErrorCode::kTimeout:
      return "timeout";
    case ErrorCode::kAborted:
      return "aborted";
    case ErrorCode::kStripe:
      return "stripe";
    case ErrorCode::kInvalidResponse:
      return "invalid_response";
    case ErrorCode::kQueueFull:
      return "queue_full";
    case ErrorCode::kShutdown:
      return "shutdown";
    case ErrorCode::kStorage:
      return "storage";
    case ErrorCode::kInternal:
      return "internal";
  }
  return "unknown";
}

std::string Error::to_string() const {
  std::string text = stripe_billing::to_string(code);
  if (stripe) {
    text += ": " + std::to_string(stripe->http_status);
    if (!stripe->type.empty()) text += " " + stripe->type;
    if (!stripe->code.empty()) text += "/" + stripe->code;
    if (!stripe->param.empty()) text += " (param " + stripe->param + ")";
    if (!stripe->request_id.empty()) text += " [" + stripe->request_id + "]";
  }
  if (!message.empty()) text += ": " + message;
  return text;
}

}  // namespace stripe_billing
