#include "gateway/gateway_config.h"

#include <stripe_billing/http_transport.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

namespace gateway {
namespace {

using stripe_billing::Error;
using stripe_billing::ErrorCode;

Error invalid(const std::string& message) { return Error{ErrorCode::kInvalidConfig, message, {}}; }

// node[key], or a null node when node is not a map: yaml-cpp throws on lookups in missing nodes.
YAML::Node field(const YAML::Node& node, const char* key) {
  return node.IsDefined() && node.IsMap() && node[key] ? node[key] : YAML::Node();
}

std::string text(const YAML::Node& node, const char* key) {
  const YAML::Node value = field(node, key);
  return value.IsScalar() ? value.Scalar() : std::string();
}

stripe_billing::Expected<ModelRoute> parse_route(const std::string& name, const YAML::Node& params,
                                                 const stripe_billing::EnvLookup& env) {
  ModelRoute route{text(params, "upstream"), text(params, "model"), text(params, "api_key"),
                   text(params, "custom_llm_provider")};
  const std::string from_env = "os.environ/";
  if (route.upstream_api_key.rfind(from_env, 0) == 0) {
    const std::string variable = route.upstream_api_key.substr(from_env.size());
    const auto value = env(variable);
    if (!value) return invalid("model_list " + name + ": api_key: " + variable + " is not set");
    route.upstream_api_key = *value;
  }
  if (route.upstream.empty()) {
    if (route.upstream_model != "echo") {
      return invalid("model_list " + name +
                     ": litellm_params.model must be `echo` unless "
                     "litellm_params.upstream is set");
    }
    return route;
  }
  if (route.upstream.rfind("http://", 0) != 0 || !stripe_billing::is_loopback_url(route.upstream)) {
    return invalid("model_list " + name + ": upstream must be http:// on a loopback host");
  }
  return route;
}

stripe_billing::Expected<GatewayConfig> parse_gateway_sections(
    const YAML::Node& root, const stripe_billing::EnvLookup& env) {
  GatewayConfig config;
  for (const YAML::Node& entry : field(root, "model_list")) {
    const std::string name = text(entry, "model_name");
    if (name.empty()) return invalid("model_list: an entry has no model_name");
    auto route = parse_route(name, field(entry, "litellm_params"), env);
    if (!route) return route.error();
    config.models[name] = *route;
  }
  if (config.models.empty()) return invalid("model_list: no models");
  for (const auto& key : field(field(root, "general_settings"), "api_keys")) {
    const YAML::Node& identity = key.second;
    config.api_keys[key.first.as<std::string>()] = KeyIdentity{
        text(identity, "user_id"), text(identity, "team_id"), text(identity, "end_user_id"),
        text(identity, "key_alias"), text(identity, "plan")};
  }
  if (config.api_keys.empty()) return invalid("general_settings.api_keys: no keys");
  const std::string webhook_path = text(field(root, "general_settings"), "stripe_webhook_path");
  if (!webhook_path.empty()) {
    if (webhook_path.front() != '/' || webhook_path == "/v1/chat/completions" ||
        webhook_path == "/health" || webhook_path == "/metrics") {
      return invalid(
          "general_settings.stripe_webhook_path must be a path of its own, starting with /");
    }
    config.webhook_path = webhook_path;
  }
  return config;
}

}  // namespace

stripe_billing::Expected<GatewayConfig> load_gateway_config(const std::string& path,
                                                            const stripe_billing::EnvLookup& env) {
  std::ifstream file(path);
  if (!file) return invalid(path + ": cannot read");
  std::ostringstream yaml;
  yaml << file.rdbuf();
  auto config = parse_gateway_config(yaml.str(), env);
  if (!config) return invalid(path + ": " + config.error().message);
  return config;
}

stripe_billing::Expected<GatewayConfig> parse_gateway_config(const std::string& yaml,
                                                             const stripe_billing::EnvLookup& env) {
  try {
    auto config = parse_gateway_sections(YAML::Load(yaml), env);
    if (!config) return config;
    auto billing = stripe_billing::config_from_yaml_string(yaml, env);
    if (!billing) return billing.error();
    config->billing = std::move(*billing);
    return config;
  } catch (const YAML::Exception& e) {
    return invalid(e.what());
  }
}

}  // namespace gateway
