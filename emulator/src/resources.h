// The JSON shapes Stripe answers for the emulator's objects (API version 2020-08-27 era, the
// version of the request schemas; billing meters and credits as Stripe answers them today), and
// Stripe's list and search_result envelopes.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "credit_store.h"
#include "meter_store.h"
#include "store.h"

namespace stripe_emulator {

void to_json(nlohmann::json& out, const Customer& customer);
void to_json(nlohmann::json& out, const Product& product);
void to_json(nlohmann::json& out, const Price& price);
void to_json(nlohmann::json& out, const SubscriptionItem& item);
void to_json(nlohmann::json& out, const Subscription& subscription);
void to_json(nlohmann::json& out, const UsageRecord& record);
void to_json(nlohmann::json& out, const Meter& meter);
void to_json(nlohmann::json& out, const MeterEvent& event);
void to_json(nlohmann::json& out, const CreditGrant& grant);
// Stripe's object has no customer: a consumer learns it from the grant (credit_grant).
void to_json(nlohmann::json& out, const CreditBalanceTransaction& transaction);

// The balance over `grants` (all of one currency; none: "balances" is empty).
nlohmann::json credit_balance_summary(const std::string& customer_id,
                                      const std::vector<CreditGrant>& grants);

nlohmann::json usage_record_summary(const SubscriptionItem& item, const Period& period,
                                    std::int64_t total_usage);

nlohmann::json meter_event_summary(const Meter& meter, const std::string& customer_id,
                                   const MeterSummary& summary);
nlohmann::json meter_event_adjustment(const MeterEvent& cancelled);

nlohmann::json list_object(nlohmann::json data, bool has_more, const std::string& url);
nlohmann::json search_result(nlohmann::json data, bool has_more, const std::string& next_page,
                             const std::string& url);

}  // namespace stripe_emulator
