#include "stripe_billing/callback.h"
#include "stripe_billing/stripe_logger.h"

namespace stripe_billing {

CallbackRegistry CallbackRegistry::with_builtin_callbacks() {
  CallbackRegistry registry;
  registry.add("stripe", [](const CallbackContext& context)
                             -> Expected<std::unique_ptr<CustomLogger>> {
    auto logger = make_stripe_logger(context.config, {context.transport, context.logger, nullptr});
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
