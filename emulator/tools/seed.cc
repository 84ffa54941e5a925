#include "seed.h"

#include <map>
#include <string>

namespace stripe_emulator {

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
  return {{"base_url", emulator.base_url()}, {"price_id", price_id}, {"customers", customers}};
}

}  // namespace stripe_emulator
