// config_from_env() then finalize_config() on an environment decoded from the input: one
// `NAME=VALUE` per line (fuzz_support.h), over a base environment whose STRIPE_API_KEY is the
// fake key. Invariants: config_from_env reads every documented variable, each into its field and
// an empty value as unset; finalize_config never throws, refuses with one kInvalidConfig error,
// and neither that error nor summary() contains a key-shaped STRIPE_API_KEY (config_checks.h).
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "config_checks.h"
#include "fuzz_support.h"
#include "stripe_billing/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace stripe_billing;
  std::map<std::string, std::string> env = {{"STRIPE_API_KEY", std::string(fuzz::kFuzzApiKey)}};
  for (auto& [name, value] :
       fuzz::decode_environment(std::string_view(reinterpret_cast<const char*>(data), size))) {
    env[name] = std::move(value);
  }
  std::set<std::string> looked_up;
  const EnvLookup lookup = [&](const std::string& name) -> std::optional<std::string> {
    looked_up.insert(name);
    const auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };

  Config config;
  fuzz::must_not_throw("config_from_env", [&] { config = config_from_env(lookup); });
  const auto expect = [&env](const char* name) -> std::optional<std::string> {
    const auto it = env.find(name);
    if (it == env.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
  FUZZ_CHECK(config.api_key == expect("STRIPE_API_KEY"), "api_key");
  FUZZ_CHECK(config.billing_mode == expect("STRIPE_BILLING_MODE"), "billing_mode");
  FUZZ_CHECK(config.customer_map == expect("STRIPE_CUSTOMER_MAP"), "customer_map");
  FUZZ_CHECK(config.environment == expect("ENVIRONMENT"), "environment");
  FUZZ_CHECK(config.outbox_path == expect("STRIPE_OUTBOX_PATH"), "outbox_path");
  for (const std::string& name : config_variable_names()) {
    FUZZ_CHECK(looked_up.count(name) == 1, "config_from_env does not read " + name);
  }

  fuzz::Secrets secrets;
  secrets.add_if_key(env["STRIPE_API_KEY"]);
  fuzz::finalize_and_check(config, secrets);
  return 0;
}
