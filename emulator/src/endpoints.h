// The Stripe operations the emulator serves, by the operationId Stripe's spec gives them. Each
// receives parameters that already passed the operation's schema, turns them into Store calls and
// answers Stripe's JSON or Stripe's error. Semantic errors never start with the schema validator's
// words ("Received unknown parameter", "Invalid ", "Missing required param") unless Stripe's do.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "api_error.h"
#include "store.h"

namespace stripe_emulator {

struct ApiCall {
  const std::map<std::string, std::string>& path_params;
  const nlohmann::json& params;
};

using Endpoint = std::function<Answer(const ApiCall&)>;

std::map<std::string, Endpoint> make_endpoints(Store& store);

}  // namespace stripe_emulator
