// Restricted API keys (rk_test_…) and the permission each operation needs, modelled on Stripe's
// restricted keys: a permission is named rak_<resource>_read or rak_<resource>_write (Stripe's
// own names have that form, e.g. rak_customer_read, rak_subscription_read), and a write
// permission also grants the read one, as Stripe documents. A restricted key without the
// permission an operation needs gets Stripe's 403 (errors::missing_permission).
//   rak_customer_read / _write                      /v1/customers…
//   rak_product_read / _write                       /v1/products…
//   rak_price_read / _write                         /v1/prices…
//   rak_subscription_read / _write                  /v1/subscriptions, /v1/subscription_items
//   rak_usage_record_read / _write                  usage record summaries / usage records
//   rak_billing_meter_read / _write                 /v1/billing/meters… (event summaries: read)
//   rak_billing_meter_event_write                   POST /v1/billing/meter_events and
//                                                   POST /v2/billing/meter_events
//   rak_billing_meter_event_adjustment_write        POST /v1/billing/meter_event_adjustments
//   rak_billing_meter_event_session_write           POST /v2/billing/meter_event_session
//   rak_billing_credit_read / _write                GET /v1/billing/credit_balance_summary,
//                                                   GET /v1/billing/credit_grants/{id} (no
//                                                   operation needs the write one yet)
//   rak_event_read                                  GET /v2/core/events/{id}
// The stream (/v2/billing/meter_event_stream) takes a session token, never a key: no permission.
// Thread-safe: keys may be added while requests are served.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace stripe_emulator {

// Every permission name above, sorted.
const std::vector<std::string>& permission_names();
// `name` as a known permission: given with or without the rak_ prefix. Nothing when unknown.
std::optional<std::string> permission_named(const std::string& name);

// The permission the v1 operation (by Stripe's operationId) or the v2 path needs; empty: none.
std::string required_permission_for_operation(const std::string& operation_id);
std::string required_permission_for_v2_path(const std::string& method, const std::string& path);

class RestrictedKeys {
 public:
  // Throws std::invalid_argument for a key that does not start with rk_ or an unknown permission.
  explicit RestrictedKeys(const std::map<std::string, std::set<std::string>>& keys = {});
  // Adds or replaces the key's permissions; throws as the constructor does.
  void add(const std::string& key, const std::set<std::string>& permissions);
  bool contains(const std::string& key) const;
  // Whether the key may use `permission` (its own, or the write one that implies it). A key that
  // is not restricted may do everything.
  bool allows(const std::string& key, const std::string& permission) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::set<std::string>> keys_;
};

}  // namespace stripe_emulator
