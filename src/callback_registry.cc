#include <algorithm>
#include <nlohmann/json.hpp>

#include "stripe_billing/callback.h"
#include "stripe_billing/stripe_logger.h"

namespace stripe_billing {

std::string callback_ui_descriptor() {
  nlohmann::json names = nlohmann::json::array();
  nlohmann::json params = nlohmann::json::array();
  for (const SettingInfo& setting : config_settings()) {
    const std::string variable = setting.variable;
    std::string yaml_key = variable.rfind("STRIPE_", 0) == 0 ? variable.substr(7) : variable;
    for (char& c : yaml_key) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    const std::string required_in = setting.required_in;
    nlohmann::json modes = nlohmann::json::array();
    if (required_in == "all") {
      modes = {"usage_records", "meter_events", "meter_event_stream", "dual"};
    } else {
      std::size_t start = 0;
      while (start < required_in.size()) {
        const std::size_t end = std::min(required_in.find(' ', start), required_in.size());
        modes.push_back(required_in.substr(start, end - start));
        start = end + 1;
      }
    }
    const bool required = std::find(modes.begin(), modes.end(), "usage_records") != modes.end();
    names.push_back(variable);
    params.push_back({{"name", variable},
                      {"yaml_key", yaml_key},
                      {"required", required},
                      {"required_in", modes},
                      {"secret", setting.secret},
                      {"description", setting.description},
                      {"default", *setting.default_value ? nlohmann::json(setting.default_value)
                                                         : nlohmann::json(nullptr)}});
  }
  return nlohmann::json{{"litellm_callback_name", "stripe"},
                        {"ui_callback_name", "Stripe Billing"},
                        {"litellm_callback_params", names},
                        {"params", params}}
      .dump(2);
}

CallbackRegistry CallbackRegistry::with_builtin_callbacks() {
  CallbackRegistry registry;
  registry.add(
      "stripe", [](const CallbackContext& context) -> Expected<std::unique_ptr<CustomLogger>> {
        auto logger =
            make_stripe_logger(context.config, {context.transport, context.logger, nullptr, {}});
        if (!logger) return logger.error();
        return std::unique_ptr<CustomLogger>(std::move(logger.value()));
      });
  return registry;
}

void CallbackRegistry::add(const std::string& name, CallbackFactory factory) {
  factories_[name] = std::move(factory);
}

bool CallbackRegistry::contains(const std::string& name) const {
  return factories_.count(name) != 0;
}

std::vector<std::string> CallbackRegistry::names() const {
  std::vector<std::string> names;
  for (const auto& [name, factory] : factories_) names.push_back(name);
  return names;
}

Expected<std::unique_ptr<CustomLogger>> CallbackRegistry::create(
    const std::string& name, const CallbackContext& context) const {
  auto it = factories_.find(name);
  if (it == factories_.end()) {
    std::string known;
    for (const auto& [known_name, factory] : factories_) {
      known += (known.empty() ? "" : ", ") + known_name;
    }
    return Error{ErrorCode::kInvalidConfig,
                 "unknown success callback '" + name + "' (known: " + known + ")", std::nullopt};
  }
  try {
    return it->second(context);
  } catch (const std::exception& e) {
    return Error{ErrorCode::kInternal, "callback '" + name + "' failed to start: " + e.what(),
                 std::nullopt};
  }
}

}  // namespace stripe_billing
