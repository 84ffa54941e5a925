// Seeds an emulator from a seed file and describes what was created: the contract between the
// stripe-emulator binary and the demo that starts it.
//   seed:  {"price":{"product_name":"LLM tokens","unit_amount":1,"currency":"usd"},
//           "customers":[{"email":"a@example.com","metadata":{"litellm_customer_id":"alice"}}]}
//   state: {"base_url":"http://127.0.0.1:PORT","price_id":"price_…",
//           "customers":[{"id":"cus_…","email":…,"metadata":{…},
//                         "subscription_id":"sub_…","subscription_item":"si_…"}]}
// The seed creates the product, one legacy metered price, and each customer with an active
// subscription on that price. Throws nlohmann::json::exception on a malformed seed.
#pragma once

#include <nlohmann/json.hpp>

#include "stripe_emulator/emulator.h"

namespace stripe_emulator {

nlohmann::json apply_seed(Emulator& emulator, const nlohmann::json& seed);

}  // namespace stripe_emulator
