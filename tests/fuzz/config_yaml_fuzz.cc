// config_from_yaml_string() then finalize_config() on a fuzzed LiteLLM config file. The input is
// the YAML text, optionally followed by a line `#%env` and `NAME=VALUE` lines (fuzz_support.h)
// that make up the environment; STRIPE_API_KEY is the fake key unless those lines say otherwise,
// so `os.environ/STRIPE_API_KEY` finds a key. Invariants: nothing throws; a refused file is one
// kInvalidConfig error with a message that does not contain a key-shaped STRIPE_API_KEY of the
// environment (the reader quotes no value); a reading that succeeds finalizes under
// config_checks.h, which checks that neither its error nor summary() contains the api_key.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "config_checks.h"
#include "fuzz_support.h"
#include "stripe_billing/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace stripe_billing;
  constexpr std::string_view kEnvMarker = "\n#%env\n";
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t marker = input.find(kEnvMarker);
  const std::string yaml(input.substr(0, marker));
  std::map<std::string, std::string> env = {{"STRIPE_API_KEY", std::string(fuzz::kFuzzApiKey)}};
  if (marker != std::string_view::npos) {
    for (auto& [name, value] : fuzz::decode_environment(input.substr(marker + kEnvMarker.size()))) {
      env[name] = std::move(value);
    }
  }
  const EnvLookup lookup = [&env](const std::string& name) -> std::optional<std::string> {
    const auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };

  fuzz::Secrets secrets;
  secrets.add_if_key(env["STRIPE_API_KEY"]);
  fuzz::must_not_throw("config_from_yaml_string", [&] {
    const Expected<YamlSettings> settings = config_from_yaml_string(yaml, lookup);
    if (!settings) {
      fuzz::check_config_error(settings.error(), secrets, "config_from_yaml_string");
      return;
    }
    // finalize_config protects the key the file resolved to; it cannot know the environment's.
    fuzz::finalize_and_check(settings->config, fuzz::Secrets());
  });
  return 0;
}
