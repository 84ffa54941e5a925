#include "seed.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace stripe_emulator {
namespace {

nlohmann::json seed_meters(Emulator& emulator, const nlohmann::json& seed) {
  auto meters = nlohmann::json::array();
  for (const auto& meter : seed.value("meters", nlohmann::json::array())) {
    const auto event_name = meter.at("event_name").get<std::string>();
    const auto customer_key = meter.value("customer_payload_key", "stripe_customer_id");
    const auto value_key = meter.value("value_payload_key", "value");
    const auto formula = meter.value("formula", "sum");
    const auto dimension_keys = meter.value("dimension_payload_keys", std::vector<std::string>{});
    nlohmann::json created = {
        {"id", emulator.create_meter(event_name, customer_key, value_key, formula, dimension_keys)},
        {"event_name", event_name},
        {"customer_payload_key", customer_key},
        {"value_payload_key", value_key},
        {"formula", formula}};
    if (!dimension_keys.empty()) created["dimension_payload_keys"] = dimension_keys;
    meters.push_back(std::move(created));
  }
  return meters;
}

}  // namespace

nlohmann::json apply_seed(Emulator& emulator, const nlohmann::json& seed) {
  const auto price = seed.value("price", nlohmann::json::object());
  const auto product_id = emulator.create_product(price.value("product_name", "LLM tokens"));
  const auto price_id = emulator.create_metered_price(
      product_id, price.value("unit_amount", std::int64_t{1}), price.value("currency", "usd"));

  auto customers = nlohmann::json::array();
  for (const auto& customer : seed.value("customers", nlohmann::json::array())) {
    const auto email = customer.value("email", "");
    const auto metadata = customer.value("metadata", nlohmann::json::object())
                              .get<std::map<std::string, std::string>>();
    const auto id = emulator.create_customer(metadata, email);
    const auto subscription = emulator.create_subscription(id, price_id);
    customers.push_back({{"id", id},
                         {"email", email},
                         {"metadata", metadata},
                         {"subscription_id", subscription.subscription_id},
                         {"subscription_item", subscription.item_id}});
  }
  return {{"base_url", emulator.base_url()},
          {"price_id", price_id},
          {"customers", customers},
          {"meters", seed_meters(emulator, seed)}};
}

}  // namespace stripe_emulator
