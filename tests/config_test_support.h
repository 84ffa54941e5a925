// Shared by the configuration tests: sample keys and an injected environment.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "stripe_billing/config.h"

namespace stripe_billing::testing {

inline constexpr const char* kTestKey = "sk_test_51NzQvRkLmYb_De7Fh3Jx9PaTuWc_GsHiKoAbCdEfGhwxyz";

using Env = std::map<std::string, std::string>;

inline EnvLookup lookup_in(Env env) {
  return [env = std::move(env)](const std::string& name) -> std::optional<std::string> {
    const auto found = env.find(name);
    if (found == env.end()) return std::nullopt;
    return found->second;
  };
}

}  // namespace stripe_billing::testing
