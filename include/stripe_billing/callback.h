// The host-facing callback interface, shaped like LiteLLM's CustomLogger, and a registry that
// builds a callback from its name: a gateway whose config says `success_callback: ["stripe"]`
// calls CallbackRegistry::create("stripe", ...).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "stripe_billing/config.h"
#include "stripe_billing/error.h"
#include "stripe_billing/usage_event.h"

namespace spdlog {
class logger;
}

namespace stripe_billing {

class HttpTransport;

// Every method is noexcept and none may block on the network: the host calls them on its
// request path.
class CustomLogger {
 public:
  virtual ~CustomLogger() = default;
  virtual void log_success_event(const UsageEvent& event) noexcept = 0;
  virtual void log_failure_event(const UsageEvent& event) noexcept = 0;
  // Wait until everything accepted so far is handled, or the deadline. True when drained.
  virtual bool flush(std::chrono::steady_clock::time_point deadline) noexcept = 0;
  // Stop accepting, drain until the deadline, stop background threads. True when drained.
  virtual bool shutdown(std::chrono::steady_clock::time_point deadline) noexcept = 0;
};

// What a factory may use to build its callback.
struct CallbackContext {
  Config config;                             // from the environment or the YAML file
  std::shared_ptr<spdlog::logger> logger;    // null: a silent logger
  std::shared_ptr<HttpTransport> transport;  // null: libcurl
};

using CallbackFactory =
    std::function<Expected<std::unique_ptr<CustomLogger>>(const CallbackContext& context)>;

// The "stripe" callback described for a gateway's admin UI, as JSON in the shape of LiteLLM's
// CallbackOnUI ({"litellm_callback_name": "stripe", "ui_callback_name": "Stripe Billing",
// "litellm_callback_params": [variable names]}) plus "params": one object per setting with
// "name", "yaml_key", "required" (in the default mode), "required_in" (the modes that need it),
// "secret", "description" and "default" (null when there is none), so a form can be rendered.
std::string callback_ui_descriptor();

class CallbackRegistry {
 public:
  // A registry that knows "stripe".
  static CallbackRegistry with_builtin_callbacks();

  void add(const std::string& name, CallbackFactory factory);
  bool contains(const std::string& name) const;
  std::vector<std::string> names() const;
  // kInvalidConfig for an unknown name (the message lists the known ones) or a bad config.
  Expected<std::unique_ptr<CustomLogger>> create(const std::string& name,
                                                 const CallbackContext& context) const;

 private:
  std::map<std::string, CallbackFactory> factories_;
};

}  // namespace stripe_billing
