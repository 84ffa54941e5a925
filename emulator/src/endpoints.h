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

// An operation bound to the object it works on: `object` is a Store, or a const one for reads.
template <typename Object, typename Target>
Endpoint bound(Object& object, Answer (*endpoint)(Target&, const ApiCall&)) {
  return [&object, endpoint](const ApiCall& call) { return endpoint(object, call); };
}

std::map<std::string, Endpoint> make_endpoints(Store& store);

}  // namespace stripe_emulator
