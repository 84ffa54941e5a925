// Seeds an emulator from a seed file and describes what was created: the contract between the
// stripe-emulator binary and the demo that starts it.
//   seed:  {"price":{"product_name":"LLM tokens","unit_amount":1,"currency":"usd"},
//           "customers":[{"email":"a@example.com","metadata":{"litellm_customer_id":"alice"}}],
//           "meters":[{"event_name":"llm_tokens","customer_payload_key":"stripe_customer_id",
//                      "value_payload_key":"value","formula":"sum",
//                      "dimension_payload_keys":["token_type","model"]}]}
//   state: {"base_url":"http://127.0.0.1:PORT","price_id":"price_…",
//           "customers":[{"id":"cus_…","email":…,"metadata":{…},
//                         "subscription_id":"sub_…","subscription_item":"si_…"}],
//           "meters":[{"id":"mtr_…","event_name":…,"customer_payload_key":…,
//                      "value_payload_key":…,"formula":…,
//                      "dimension_payload_keys":[…] (only when the meter has some)}]}
// The seed creates the product, one legacy metered price, each customer with an active
// subscription on that price, and each billing meter (every key but event_name is optional, with
// the defaults shown but dimension_payload_keys, which defaults to none). Throws
// nlohmann::json::exception on a malformed seed and std::invalid_argument on a meter Stripe would
// refuse.
#pragma once

#include <nlohmann/json.hpp>

#include "stripe_emulator/emulator.h"

namespace stripe_emulator {

nlohmann::json apply_seed(Emulator& emulator, const nlohmann::json& seed);

}  // namespace stripe_emulator
