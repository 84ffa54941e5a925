// `check [--online]`: the configuration as the library would run it, and with --online whether
// Stripe accepts the key and has every price (usage records) and meter (meter modes) it bills.
#include <functional>
#include <iostream>
#include <set>

#include "cli.h"
#include "cli_support.h"
#include "retry_policy.h"

namespace stripe_billing::cli {
namespace {

using nlohmann::json;

// One online check's outcome, printed as a line "ok   …" or "FAIL …".
struct CheckLine {
  bool ok = false;
  std::string text;
};

void print(const CheckLine& line) {
  std::cout << (line.ok ? "ok    " : "FAIL  ") << line.text << "\n";
}

// A restricted key's 403 for a permission it lacks: the permission Stripe names ("" if none).
std::string missing_permission(const Error& error) {
  if (!error.stripe || !is_permission_error(*error.stripe)) return {};
  const std::string& message = error.stripe->message;
  const std::string marker = "Having the '";
  const std::size_t start = message.find(marker);
  if (start == std::string::npos) return "(a permission Stripe did not name)";
  const std::size_t end = message.find('\'', start + marker.size());
  return message.substr(start + marker.size(), end - start - marker.size());
}

bool refuses_key(const Error& error) {
  return error.stripe && (error.stripe->http_status == 401 || error.stripe->http_status == 403) &&
         missing_permission(error).empty();
}

// What a restricted key may do, asked without changing anything: each request is one Stripe
// refuses as malformed (400/404) when the key has the permission, and with 403 when it lacks it.
std::vector<CheckLine> check_permissions(StripeApi& api, const FinalizedConfig& config) {
  struct Need {
    const char* what;
    bool needed;  // the configuration cannot bill without it
    std::function<Expected<StripeResponse>()> request;
  };
  const bool all_mapped = !config.customer_map().empty();
  std::vector<Need> needs;
  if (config.uses_meters()) {
    needs.push_back({"write meter events", true, [&] {
                       return api.client().post_form("/v1/billing/meter_events", {},
                                                     "sb-check-permissions");
                     }});
  }
  if (config.uses_usage_records()) {
    needs.push_back({"write usage records", true, [&] {
                       return api.client().post_form(
                           "/v1/subscription_items/si_sbcheck/usage_records", {},
                           "sb-check-permissions");
                     }});
    needs.push_back({"read subscriptions (to find each customer's item)", true,
                     [&] { return api.client().get("/v1/subscription_items/si_sbcheck"); }});
  }
  needs.push_back(
      {"read customers (to look up customers not in STRIPE_CUSTOMER_MAP)", !all_mapped, [&] {
         return api.client().get(
             "/v1/customers/search",
             {{"query", "metadata['" + config.customer_metadata_key() + "']:'sb-check'"},
              {"limit", "1"}});
       }});
  std::vector<CheckLine> lines;
  for (const Need& need : needs) {
    const auto answer = need.request();
    const std::string permission = answer ? std::string() : missing_permission(answer.error());
    if (permission.empty()) {
      lines.push_back({true, std::string("key may ") + need.what});
    } else {
      lines.push_back({!need.needed, "key may not " + std::string(need.what) + ": it lacks " +
                                         permission +
                                         (need.needed ? "" : " (every customer is mapped)")});
    }
  }
  return lines;
}

// Stripe's answer to a refused key or a network failure ends the checks: nothing else can pass.
std::optional<int> fatal(const FinalizedConfig& config, const Error& error) {
  if (refuses_key(error)) {
    print({false, "key " + config.api_key().redacted() +
                      ": Stripe refuses it: " + redact(config, error.to_string())});
    return kExitCheckFailed;
  }
  if (exit_code_for(error) == kExitUnreachable) return report_error(config, "Stripe", error);
  return std::nullopt;
}

CheckLine check_price(const BilledDimension& dimension, const Expected<StripeResponse>& answer,
                      const FinalizedConfig& config) {
  const std::string what = "price " + dimension.price_id + " (" + dimension.name + ")";
  if (!answer) {
    return {false, what + (is_missing(answer.error()) ? ": not found: " : ": ") +
                       redact(config, answer.error().to_string())};
  }
  const json& price = answer->body;
  const json recurring = price.value("recurring", json());
  if (!price.value("active", false)) return {false, what + ": exists but is not active"};
  if (!recurring.is_object() || recurring.value("usage_type", "") != "metered") {
    return {false, what + ": exists but is not a metered recurring price"};
  }
  return {true, what + ": active, metered"};
}

CheckLine check_meter(const std::string& event_name, const std::vector<json>& meters,
                      const FinalizedConfig& config) {
  const std::string what = "meter " + event_name;
  for (const json& meter : meters) {
    if (meter.value("event_name", "") != event_name || meter.value("status", "") != "active")
      continue;
    const std::string customer_key =
        meter.value("customer_mapping", json::object()).value("event_payload_key", "");
    const std::string value_key =
        meter.value("value_settings", json::object()).value("event_payload_key", "");
    if (customer_key != config.meter_customer_key() || value_key != config.meter_value_key()) {
      return {false, what + ": active (" + meter.value("id", "") + ") but its payload keys are " +
                         customer_key + "/" + value_key + ", the configuration sends " +
                         config.meter_customer_key() + "/" + config.meter_value_key()};
    }
    return {true, what + ": active (" + meter.value("id", "") + ")"};
  }
  return {false, what + ": no active meter has this event name"};
}

int check_online(const FinalizedConfig& config) {
  StripeApi api(config);
  std::vector<CheckLine> lines;
  const bool restricted = config.api_key().reveal().rfind("rk_", 0) == 0;
  if (restricted) lines = check_permissions(api, config);
  if (config.uses_usage_records()) {
    for (const BilledDimension& dimension : config.dimensions()) {
      auto answer = api.client().get("/v1/prices/" + encode_path_segment(dimension.price_id));
      if (!answer) {
        if (auto status = fatal(config, answer.error())) return *status;
      }
      lines.push_back(check_price(dimension, answer, config));
    }
  }
  if (config.uses_meters()) {
    auto meters = list_all(api.client(), "/v1/billing/meters");
    if (!meters && !missing_permission(meters.error()).empty()) {
      lines.push_back({true, "meters not checked: the key lacks " +
                                 missing_permission(meters.error()) +
                                 " (sending meter events does not need it)"});
    } else if (!meters) {
      if (auto status = fatal(config, meters.error())) return *status;
      return report_error(config, "listing meters", meters.error());
    } else {
      std::set<std::string> checked;
      for (const BilledDimension& dimension : config.dimensions()) {
        if (checked.insert(dimension.meter_event_name).second) {
          lines.push_back(check_meter(dimension.meter_event_name, *meters, config));
        }
      }
    }
  }
  print({true, "key " + config.api_key().redacted() + ": accepted by Stripe"});
  bool all_ok = true;
  for (const CheckLine& line : lines) {
    print(line);
    all_ok = all_ok && line.ok;
  }
  return all_ok ? kExitOk : kExitCheckFailed;
}

}  // namespace

int run_check(const ConfigSource& source, const CheckOptions& options) {
  const auto config = load_config(source);
  if (!config) return kExitUsage;
  std::cout << "configuration ok\n"
            << "mode: " << to_string(config->billing_mode()) << "\n"
            << "key: " << config->api_key().redacted() << " ("
            << (config->live_mode() ? "live" : "test") << ")\n"
            << "summary: " << redact(*config, config->summary()) << "\n";
  if (!options.online) return kExitOk;
  return check_online(*config);
}

}  // namespace stripe_billing::cli
