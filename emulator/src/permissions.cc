#include "permissions.h"

#include <algorithm>
#include <stdexcept>

namespace stripe_emulator {
namespace {

constexpr char kPrefix[] = "rak_";
constexpr char kRead[] = "_read";
constexpr char kWrite[] = "_write";

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const std::map<std::string, std::string>& operation_permissions() {
  static const std::map<std::string, std::string> permissions = {
      {"GetCustomers", "rak_customer_read"},
      {"GetCustomersCustomer", "rak_customer_read"},
      {"GetCustomersSearch", "rak_customer_read"},
      {"PostCustomers", "rak_customer_write"},
      {"GetProductsId", "rak_product_read"},
      {"PostProducts", "rak_product_write"},
      {"GetPrices", "rak_price_read"},
      {"GetPricesPrice", "rak_price_read"},
      {"PostPrices", "rak_price_write"},
      {"GetSubscriptions", "rak_subscription_read"},
      {"PostSubscriptions", "rak_subscription_write"},
      {"GetSubscriptionItems", "rak_subscription_read"},
      {"GetSubscriptionItemsSubscriptionItemUsageRecordSummaries", "rak_usage_record_read"},
      {"PostSubscriptionItemsSubscriptionItemUsageRecords", "rak_usage_record_write"},
      {"GetBillingMeters", "rak_billing_meter_read"},
      {"GetBillingMetersId", "rak_billing_meter_read"},
      {"GetBillingMetersIdEventSummaries", "rak_billing_meter_read"},
      {"PostBillingMeters", "rak_billing_meter_write"},
      {"PostBillingMeterEvents", "rak_billing_meter_event_write"},
      {"PostBillingMeterEventAdjustments", "rak_billing_meter_event_adjustment_write"},
      {"GetBillingCreditBalanceSummary", "rak_billing_credit_read"},
      {"GetBillingCreditGrantsId", "rak_billing_credit_read"},
  };
  return permissions;
}

}  // namespace

const std::vector<std::string>& permission_names() {
  static const std::vector<std::string> names = [] {
    std::set<std::string> unique;
    for (const auto& [operation, permission] : operation_permissions()) {
      unique.insert(permission);
      if (ends_with(permission, kWrite)) {
        unique.insert(permission.substr(0, permission.size() - 6) + kRead);
      }
    }
    unique.insert("rak_billing_meter_event_session_write");
    unique.insert("rak_billing_credit_write");  // the credit grants' writes are test controls
    unique.insert("rak_event_read");
    // A write permission implies its read one, but Stripe's event resources have no reads here.
    unique.erase("rak_billing_meter_event_read");
    unique.erase("rak_billing_meter_event_adjustment_read");
    unique.erase("rak_billing_meter_event_session_read");
    return std::vector<std::string>(unique.begin(), unique.end());
  }();
  return names;
}

std::optional<std::string> permission_named(const std::string& name) {
  const auto full = name.rfind(kPrefix, 0) == 0 ? name : kPrefix + name;
  const auto& names = permission_names();
  if (std::find(names.begin(), names.end(), full) == names.end()) return std::nullopt;
  return full;
}

std::string required_permission_for_operation(const std::string& operation_id) {
  const auto found = operation_permissions().find(operation_id);
  return found == operation_permissions().end() ? "" : found->second;
}

std::string required_permission_for_v2_path(const std::string& method, const std::string& path) {
  if (method == "GET" && path.rfind("/v2/core/events/", 0) == 0) return "rak_event_read";
  if (method != "POST") return "";
  if (path == "/v2/billing/meter_events") return "rak_billing_meter_event_write";
  if (path == "/v2/billing/meter_event_session") return "rak_billing_meter_event_session_write";
  return "";
}

RestrictedKeys::RestrictedKeys(const std::map<std::string, std::set<std::string>>& keys) {
  for (const auto& [key, permissions] : keys) add(key, permissions);
}

void RestrictedKeys::add(const std::string& key, const std::set<std::string>& permissions) {
  if (key.rfind("rk_", 0) != 0) {
    throw std::invalid_argument("A restricted key starts with rk_ (rk_test_…)");
  }
  std::set<std::string> known;
  for (const auto& permission : permissions) {
    const auto named = permission_named(permission);
    if (!named) throw std::invalid_argument("Unknown restricted key permission " + permission);
    known.insert(*named);
  }
  std::lock_guard lock(mutex_);
  keys_[key] = std::move(known);
}

bool RestrictedKeys::contains(const std::string& key) const {
  std::lock_guard lock(mutex_);
  return keys_.count(key) != 0;
}

bool RestrictedKeys::allows(const std::string& key, const std::string& permission) const {
  std::lock_guard lock(mutex_);
  const auto found = keys_.find(key);
  if (found == keys_.end() || permission.empty()) return true;
  const auto& granted = found->second;
  if (granted.count(permission) != 0) return true;
  return ends_with(permission, kRead) &&
         granted.count(permission.substr(0, permission.size() - 5) + kWrite) != 0;
}

}  // namespace stripe_emulator
