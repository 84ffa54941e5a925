// The example gateway's configuration: the parts of a LiteLLM-style YAML file the gateway itself
// reads (model_list, general_settings.api_keys) plus what stripe_billing reads from the same file
// (litellm_settings.success_callback and the `stripe_billing` section).
#pragma once

#include <stripe_billing/config.h>
#include <stripe_billing/error.h>

#include <map>
#include <string>

namespace gateway {

// Who a bearer key belongs to; copied into every UsageEvent the key's calls produce (and into the
// AdmissionRequest before the call).
struct KeyIdentity {
  std::string user_id;
  std::string team_id;
  std::string end_user_id;
  std::string key_alias;
  std::string plan;  // the customer's plan for static budgets (STRIPE_BUDGETS); "" none
};

// One `model_list` entry. An empty `upstream` means the built-in echo model answers.
struct ModelRoute {
  std::string upstream;          // http://127.0.0.1:PORT, loopback only
  std::string upstream_model;    // the model name sent upstream (litellm_params.model)
  std::string upstream_api_key;  // sent upstream as a bearer token when set
  // The upstream's provider for billing (litellm_params.custom_llm_provider: openai, anthropic,
  // ...). Empty: stripe_billing guesses it from the model name. Echo routes ignore it.
  std::string provider;
};

struct GatewayConfig {
  std::map<std::string, ModelRoute> models;     // by model_name
  std::map<std::string, KeyIdentity> api_keys;  // by bearer key
  // Where Stripe POSTs its webhook events (general_settings.stripe_webhook_path).
  std::string webhook_path = "/webhooks/stripe";
  stripe_billing::YamlSettings billing;
};

// `env` resolves `os.environ/NAME` values and the settings the file leaves out, as in
// stripe_billing::config_from_yaml_file.
stripe_billing::Expected<GatewayConfig> load_gateway_config(
    const std::string& path,
    const stripe_billing::EnvLookup& env = stripe_billing::process_environment());
stripe_billing::Expected<GatewayConfig> parse_gateway_config(
    const std::string& yaml,
    const stripe_billing::EnvLookup& env = stripe_billing::process_environment());

}  // namespace gateway
