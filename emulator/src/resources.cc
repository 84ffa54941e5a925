#include "resources.h"

namespace stripe_emulator {
namespace {

using nlohmann::json;

json or_null(const std::string& text) { return text.empty() ? json(nullptr) : json(text); }

// Stripe's billing.credit_amount.
json monetary(const std::string& currency, std::int64_t value) {
  return {{"monetary", {{"currency", currency}, {"value", value}}}, {"type", "monetary"}};
}

}  // namespace

void to_json(json& out, const Customer& customer) {
  out = {{"id", customer.id},
         {"object", "customer"},
         {"address", nullptr},
         {"balance", 0},
         {"created", customer.created},
         {"currency", nullptr},
         {"default_source", nullptr},
         {"delinquent", false},
         {"description", nullptr},
         {"discount", nullptr},
         {"email", or_null(customer.email)},
         {"invoice_prefix", customer.id.substr(4, 8)},
         {"livemode", false},
         {"metadata", customer.metadata},
         {"name", or_null(customer.name)},
         {"phone", or_null(customer.phone)},
         {"preferred_locales", json::array()},
         {"shipping", nullptr},
         {"tax_exempt", "none"},
         {"test_clock", nullptr}};
}

void to_json(json& out, const Product& product) {
  out = {{"id", product.id},           {"object", "product"},
         {"active", product.active},   {"created", product.created},
         {"description", nullptr},     {"images", json::array()},
         {"livemode", false},          {"metadata", product.metadata},
         {"name", product.name},       {"package_dimensions", nullptr},
         {"shippable", nullptr},       {"statement_descriptor", nullptr},
         {"tax_code", nullptr},        {"unit_label", or_null(product.unit_label)},
         {"updated", product.created}, {"url", nullptr}};
}

void to_json(json& out, const Price& price) {
  json recurring = nullptr;
  if (price.recurring) {
    recurring = {{"aggregate_usage", or_null(price.recurring->aggregate_usage)},
                 {"interval", price.recurring->interval},
                 {"interval_count", price.recurring->interval_count},
                 {"meter", or_null(price.recurring->meter)},
                 {"trial_period_days", nullptr},
                 {"usage_type", price.recurring->usage_type}};
  }
  const auto unit_amount = price.unit_amount ? json(*price.unit_amount) : json(nullptr);
  out = {{"id", price.id},
         {"object", "price"},
         {"active", price.active},
         {"billing_scheme", "per_unit"},
         {"created", price.created},
         {"currency", price.currency},
         {"livemode", false},
         {"lookup_key", or_null(price.lookup_key)},
         {"metadata", price.metadata},
         {"nickname", or_null(price.nickname)},
         {"product", price.product},
         {"recurring", recurring},
         {"tax_behavior", "unspecified"},
         {"tiers_mode", nullptr},
         {"transform_quantity", nullptr},
         {"type", price.recurring ? "recurring" : "one_time"},
         {"unit_amount", unit_amount},
         {"unit_amount_decimal",
          price.unit_amount ? json(std::to_string(*price.unit_amount)) : json(nullptr)}};
}

void to_json(json& out, const SubscriptionItem& item) {
  out = {{"id", item.id},
         {"object", "subscription_item"},
         {"billing_thresholds", nullptr},
         {"created", item.created},
         {"metadata", item.metadata},
         {"price", item.price},
         {"subscription", item.subscription},
         {"tax_rates", json::array()}};
  if (item.quantity) out["quantity"] = *item.quantity;
}

void to_json(json& out, const Subscription& subscription) {
  const auto items_url = "/v1/subscription_items?subscription=" + subscription.id;
  auto items = list_object(subscription.items, false, items_url);
  items["total_count"] = subscription.items.size();
  out = {{"id", subscription.id},
         {"object", "subscription"},
         {"billing_cycle_anchor", subscription.current_period_start},
         {"cancel_at", nullptr},
         {"cancel_at_period_end", false},
         {"canceled_at", nullptr},
         {"collection_method", "charge_automatically"},
         {"created", subscription.created},
         {"current_period_end", subscription.current_period_end},
         {"current_period_start", subscription.current_period_start},
         {"customer", subscription.customer},
         {"ended_at", nullptr},
         {"items", items},
         {"latest_invoice", nullptr},
         {"livemode", false},
         {"metadata", subscription.metadata},
         {"start_date", subscription.created},
         {"status", subscription.status},
         {"test_clock", nullptr}};
}

void to_json(json& out, const UsageRecord& record) {
  out = {{"id", record.id},
         {"object", "usage_record"},
         {"livemode", false},
         {"quantity", record.quantity},
         {"subscription_item", record.subscription_item},
         {"timestamp", record.timestamp}};
}

json usage_record_summary(const SubscriptionItem& item, const Period& period,
                          std::int64_t total_usage) {
  return {{"id", item.summary_id},
          {"object", "usage_record_summary"},
          {"invoice", nullptr},
          {"livemode", false},
          {"period", {{"start", period.start}, {"end", period.end}}},
          {"subscription_item", item.id},
          {"total_usage", total_usage}};
}

void to_json(json& out, const Meter& meter) {
  out = {{"id", meter.id},
         {"object", "billing.meter"},
         {"created", meter.created},
         {"customer_mapping", {{"event_payload_key", meter.customer_key}, {"type", "by_id"}}},
         {"default_aggregation", {{"formula", meter.formula}}},
         {"display_name", meter.display_name},
         {"event_name", meter.event_name},
         {"event_time_window", nullptr},
         {"livemode", false},
         {"status", meter.status},
         {"status_transitions", {{"deactivated_at", nullptr}}},
         {"updated", meter.created},
         {"value_settings", {{"event_payload_key", meter.value_key}}}};
  // Only on meters that have dimensions, so other meters keep the shape of Stripe's public object.
  if (!meter.dimension_keys.empty()) out["dimension_payload_keys"] = meter.dimension_keys;
}

void to_json(json& out, const MeterEvent& event) {
  out = {{"object", "billing.meter_event"},
         {"created", event.created},
         {"event_name", event.record.event_name},
         {"identifier", event.record.identifier},
         {"livemode", false},
         {"payload", event.record.payload},
         {"timestamp", event.record.timestamp}};
}

void to_json(json& out, const CreditGrant& grant) {
  out = {{"id", grant.id},
         {"object", "billing.credit_grant"},
         {"amount", monetary(grant.currency, grant.amount)},
         {"applicability_config", {{"scope", {{"price_type", "metered"}}}}},
         {"category", "paid"},
         {"created", grant.created},
         {"customer", grant.customer},
         {"effective_at", grant.created},
         {"expires_at", nullptr},
         {"livemode", false},
         {"metadata", json::object()},
         {"name", nullptr},
         {"priority", 50},
         {"test_clock", nullptr},
         {"updated", grant.created},
         {"voided_at", nullptr}};
}

void to_json(json& out, const CreditBalanceTransaction& transaction) {
  out = {
      {"id", transaction.id},
      {"object", "billing.credit_balance_transaction"},
      {"created", transaction.created},
      {"credit", nullptr},
      {"credit_grant", transaction.credit_grant},
      {"debit",
       {{"amount", monetary(transaction.currency, transaction.amount)},
        {"credits_applied",
         {{"invoice", transaction.invoice}, {"invoice_line_item", transaction.invoice_line_item}}},
        {"type", "credits_applied"}}},
      {"effective_at", transaction.created},
      {"livemode", false},
      {"test_clock", nullptr},
      {"type", "debit"}};
}

json credit_balance_summary(const std::string& customer_id,
                            const std::vector<CreditGrant>& grants) {
  json balances = json::array();
  if (!grants.empty()) {
    std::int64_t remaining = 0;
    for (const auto& grant : grants) remaining += grant.remaining;
    const auto balance = monetary(grants.front().currency, remaining);
    balances.push_back({{"available_balance", balance}, {"ledger_balance", balance}});
  }
  return {{"object", "billing.credit_balance_summary"},
          {"balances", balances},
          {"customer", customer_id},
          {"livemode", false}};
}

// Stripe's summary ids are opaque; these are stable for the same meter, customer and window, so
// they can serve as pagination cursors.
json meter_event_summary(const Meter& meter, const std::string& customer_id,
                         const MeterSummary& summary) {
  return {{"id", "mtrusg_" + meter.id.substr(4) + customer_id.substr(customer_id.find('_') + 1) +
                     std::to_string(summary.start_time)},
          {"object", "billing.meter_event_summary"},
          {"aggregated_value", summary.aggregated_value},
          {"end_time", summary.end_time},
          {"livemode", false},
          {"meter", meter.id},
          {"start_time", summary.start_time}};
}

json meter_event_adjustment(const MeterEvent& cancelled) {
  return {{"object", "billing.meter_event_adjustment"},
          {"cancel", {{"identifier", cancelled.record.identifier}}},
          {"event_name", cancelled.record.event_name},
          {"livemode", false},
          {"status", "pending"},
          {"type", "cancel"}};
}

json list_object(json data, bool has_more, const std::string& url) {
  return {{"object", "list"}, {"data", std::move(data)}, {"has_more", has_more}, {"url", url}};
}

json search_result(json data, bool has_more, const std::string& next_page, const std::string& url) {
  return {{"object", "search_result"},
          {"data", std::move(data)},
          {"has_more", has_more},
          {"next_page", or_null(next_page)},
          {"url", url}};
}

}  // namespace stripe_emulator
