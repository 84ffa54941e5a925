// `setup-test`: what a test account needs before the gateway can bill it — a product, the prices
// or meters the configuration bills, customers carrying the lookup metadata and, for usage
// records, their subscriptions. Every object is looked up before it is created, so running it
// again creates nothing new. Test keys only.
#include <unistd.h>

#include <iostream>
#include <set>

#include "cli.h"
#include "cli_support.h"
#include "customer_resolver.h"

namespace stripe_billing::cli {
namespace {

using nlohmann::json;

constexpr const char* kProductId = "stripe_billing_test_product";
constexpr const char* kLookupKeyPrefix = "stripe_billing_test_";
// Stand in for the price ids the user does not have yet, so the rest is checked as usual (the
// split prices must differ from each other).
constexpr const char* kPlaceholderPrice = "price_stripe_billing_setup_placeholder";
constexpr const char* kPlaceholderPromptPrice = "price_stripe_billing_setup_prompt";
constexpr const char* kPlaceholderCompletionPrice = "price_stripe_billing_setup_completion";

struct Found {
  std::string id;
  bool created = false;
};

void report(const std::string& what, const Found& found) {
  std::cout << (found.created ? "created  " : "exists   ") << what << " " << found.id << "\n";
}

void fill_placeholder_prices(Config& config) {
  for (auto [price, placeholder] :
       {std::pair{&config.price_id, kPlaceholderPrice},
        std::pair{&config.prompt_price_id, kPlaceholderPromptPrice},
        std::pair{&config.completion_price_id, kPlaceholderCompletionPrice}}) {
    if (!price->has_value() || (*price)->empty()) *price = placeholder;
  }
}

// The variable that names a dimension's price or meter: the split ones when two are billed.
std::string variable_for(const FinalizedConfig& config, const BilledDimension& dimension,
                         const std::string& what) {
  const bool two = config.dimensions().size() == 2;
  if (two && dimension.name == "prompt_tokens") return "STRIPE_PROMPT_" + what;
  if (two && dimension.name == "completion_tokens") return "STRIPE_COMPLETION_" + what;
  return "STRIPE_" + what;
}

class TestSetup {
 public:
  explicit TestSetup(const FinalizedConfig& config)
      : config_(config),
        api_(config),
        run_id_(std::to_string(now_ms()) + "-" + std::to_string(::getpid())) {}

  int run(int customers);

 private:
  Expected<Found> product();
  Expected<Found> legacy_price(const std::string& product_id, const BilledDimension& dimension);
  Expected<Found> meter(const std::string& event_name);
  // nullopt when Stripe (or the emulator) refuses recurring[meter].
  Expected<std::optional<Found>> meter_price(const std::string& product_id,
                                             const std::string& event_name,
                                             const std::string& meter_id);
  Expected<Found> customer(const std::string& value);
  Expected<Found> subscription(const std::string& customer_id,
                               const std::vector<std::string>& price_ids);
  Expected<std::optional<std::string>> price_by_lookup_key(const std::string& lookup_key);
  Expected<Found> create(const std::string& path, const FormFields& fields,
                         const std::string& idempotency_key);
  std::string run_key(const std::string& what) const {
    return "stripe-billing-setup-test-" + run_id_ + "-" + what;
  }
  void print_environment(const std::vector<std::pair<std::string, std::string>>& variables,
                         int customers) const;

  const FinalizedConfig& config_;
  StripeApi api_;
  std::string run_id_;
};

int TestSetup::run(int customers) {
  std::vector<std::pair<std::string, std::string>> variables;  // what to export
  variables.emplace_back("STRIPE_BILLING_MODE", to_string(config_.billing_mode()));
  if (config_.quantity_source() != QuantitySource::kTotalTokens) {
    variables.emplace_back("STRIPE_QUANTITY", to_string(config_.quantity_source()));
  }
  auto made_product = product();
  if (!made_product)
    return report_error(config_, "product " + std::string(kProductId), made_product.error());
  report("product", *made_product);

  std::vector<std::string> legacy_prices;
  if (config_.uses_usage_records()) {
    for (const BilledDimension& dimension : config_.dimensions()) {
      auto price = legacy_price(made_product->id, dimension);
      if (!price) return report_error(config_, "price for " + dimension.name, price.error());
      report("price (" + dimension.name + ", legacy metered)", *price);
      legacy_prices.push_back(price->id);
      variables.emplace_back(variable_for(config_, dimension, "PRICE_ID"), price->id);
    }
  }
  if (config_.uses_meters()) {
    std::set<std::string> done;
    for (const BilledDimension& dimension : config_.dimensions()) {
      if (!done.insert(dimension.meter_event_name).second) continue;
      auto made_meter = meter(dimension.meter_event_name);
      if (!made_meter)
        return report_error(config_, "meter " + dimension.meter_event_name, made_meter.error());
      report("meter " + dimension.meter_event_name, *made_meter);
      variables.emplace_back(variable_for(config_, dimension, "METER_EVENT_NAME"),
                             dimension.meter_event_name);
      auto price = meter_price(made_product->id, dimension.meter_event_name, made_meter->id);
      if (!price)
        return report_error(config_, "price for meter " + dimension.meter_event_name,
                            price.error());
      if (*price) {
        report("price (meter " + dimension.meter_event_name + ")", **price);
      } else {
        std::cout
            << "note     no price created for meter " << dimension.meter_event_name
            << ": this Stripe API version refuses recurring[meter]; the meter alone counts usage, "
               "attach a price to it "
               "in the Dashboard before invoicing\n";
      }
    }
  }
  variables.emplace_back("STRIPE_CUSTOMER_METADATA_KEY", config_.customer_metadata_key());
  if (config_.api_base() != kDefaultApiBase)
    variables.emplace_back("STRIPE_API_BASE", config_.api_base());

  for (int i = 1; i <= customers; ++i) {
    const std::string value = "test-customer-" + std::to_string(i);
    auto made_customer = customer(value);
    if (!made_customer) return report_error(config_, "customer " + value, made_customer.error());
    report("customer " + value, *made_customer);
    if (legacy_prices.empty()) continue;
    auto made_subscription = subscription(made_customer->id, legacy_prices);
    if (!made_subscription) {
      return report_error(config_, "subscription of " + value, made_subscription.error());
    }
    report("subscription of " + value, *made_subscription);
  }
  print_environment(variables, customers);
  return kExitOk;
}

void TestSetup::print_environment(const std::vector<std::pair<std::string, std::string>>& variables,
                                  int customers) const {
  std::cout << "\n# Bill these test objects with (and STRIPE_API_KEY set to your test key, "
            << config_.api_key().redacted() << "):\n";
  for (const auto& [name, value] : variables)
    std::cout << "export " << name << "=" << value << "\n";
  if (customers > 0) {
    std::cout << "# The test customers are found by the " << to_string(config_.charge_by())
              << " values test-customer-1 to test-customer-" << customers << ".\n";
  }
}

Expected<Found> TestSetup::product() {
  auto existing = api_.client().get(std::string("/v1/products/") + kProductId);
  if (existing) return Found{kProductId, false};
  if (!is_missing(existing.error())) return std::move(existing).error();
  return create("/v1/products", {{"id", kProductId}, {"name", "LLM tokens (stripe_billing test)"}},
                run_key("product"));
}

Expected<std::optional<std::string>> TestSetup::price_by_lookup_key(const std::string& lookup_key) {
  auto prices = api_.client().get(
      "/v1/prices", {{"lookup_keys[0]", lookup_key}, {"active", "true"}, {"limit", "1"}});
  if (!prices) return std::move(prices).error();
  const json data = prices->body.value("data", json::array());
  if (data.empty()) return std::optional<std::string>();
  return std::optional<std::string>(data.front().value("id", ""));
}

Expected<Found> TestSetup::legacy_price(const std::string& product_id,
                                        const BilledDimension& dimension) {
  const std::string lookup_key = kLookupKeyPrefix + dimension.name;
  auto existing = price_by_lookup_key(lookup_key);
  if (!existing) return std::move(existing).error();
  if (*existing) return Found{**existing, false};
  return create("/v1/prices",
                {{"product", product_id},
                 {"currency", "usd"},
                 {"unit_amount", "1"},
                 {"recurring[interval]", "month"},
                 {"recurring[usage_type]", "metered"},
                 {"recurring[aggregate_usage]", "sum"},
                 {"lookup_key", lookup_key},
                 {"nickname", "stripe_billing test: " + dimension.name}},
                run_key("price-" + dimension.name));
}

Expected<Found> TestSetup::meter(const std::string& event_name) {
  auto meters = list_all(api_.client(), "/v1/billing/meters");
  if (!meters) return std::move(meters).error();
  for (const json& meter : *meters) {
    if (meter.value("event_name", "") == event_name && meter.value("status", "") == "active") {
      return Found{meter.value("id", ""), false};
    }
  }
  return create("/v1/billing/meters",
                {{"display_name", "LLM tokens (" + event_name + ")"},
                 {"event_name", event_name},
                 {"default_aggregation[formula]", "sum"},
                 {"customer_mapping[event_payload_key]", config_.meter_customer_key()},
                 {"customer_mapping[type]", "by_id"},
                 {"value_settings[event_payload_key]", config_.meter_value_key()}},
                run_key("meter-" + event_name));
}

Expected<std::optional<Found>> TestSetup::meter_price(const std::string& product_id,
                                                      const std::string& event_name,
                                                      const std::string& meter_id) {
  const std::string lookup_key = kLookupKeyPrefix + std::string("meter_") + event_name;
  auto existing = price_by_lookup_key(lookup_key);
  if (!existing) return std::move(existing).error();
  if (*existing) return std::optional<Found>(Found{**existing, false});
  auto created = create("/v1/prices",
                        {{"product", product_id},
                         {"currency", "usd"},
                         {"unit_amount", "1"},
                         {"recurring[interval]", "month"},
                         {"recurring[usage_type]", "metered"},
                         {"recurring[meter]", meter_id},
                         {"lookup_key", lookup_key},
                         {"nickname", "stripe_billing test: meter " + event_name}},
                        run_key("meter-price-" + event_name));
  if (created) return std::optional<Found>(std::move(created.value()));
  const Error& error = created.error();
  if (error.stripe && error.stripe->http_status == 400 &&
      error.stripe->param == "recurring[meter]") {
    return std::optional<Found>();
  }
  return std::move(created).error();
}

Expected<Found> TestSetup::customer(const std::string& value) {
  auto found = api_.client().get(
      "/v1/customers/search",
      {{"query", customer_search_query(config_.customer_metadata_key(), value)}, {"limit", "1"}});
  if (!found) return std::move(found).error();
  const json data = found->body.value("data", json::array());
  if (!data.empty()) return Found{data.front().value("id", ""), false};
  // Stripe's search lags up to a minute behind a new customer: the same key on a quick re-run
  // makes Stripe answer with the customer it already created.
  return create(
      "/v1/customers",
      {{"metadata[" + config_.customer_metadata_key() + "]", value},
       {"name", "stripe_billing " + value}},
      "stripe-billing-setup-test-customer-" + config_.customer_metadata_key() + "-" + value);
}

Expected<Found> TestSetup::subscription(const std::string& customer_id,
                                        const std::vector<std::string>& price_ids) {
  FormFields items;
  std::string existing_id;
  for (const std::string& price_id : price_ids) {
    auto found =
        api_.client().get("/v1/subscriptions",
                          {{"customer", customer_id}, {"price", price_id}, {"status", "active"}});
    if (!found) return std::move(found).error();
    const json data = found->body.value("data", json::array());
    if (!data.empty()) {
      existing_id = data.front().value("id", "");
      continue;
    }
    items.emplace_back("items[" + std::to_string(items.size()) + "][price]", price_id);
  }
  if (items.empty()) return Found{existing_id, false};
  FormFields fields{{"customer", customer_id}};
  fields.insert(fields.end(), items.begin(), items.end());
  return create("/v1/subscriptions", fields, run_key("subscription-" + customer_id));
}

Expected<Found> TestSetup::create(const std::string& path, const FormFields& fields,
                                  const std::string& idempotency_key) {
  auto created = api_.client().post_form(path, fields, idempotency_key);
  if (!created) return std::move(created).error();
  return Found{created->body.value("id", ""), true};
}

}  // namespace

int run_setup_test(const ConfigSource& source, const SetupTestOptions& options) {
  const auto config = load_config(source, fill_placeholder_prices);
  if (!config) return kExitUsage;
  if (config->live_mode()) {
    std::cerr << "stripe-billing: setup-test creates test objects and runs with a test key only; "
                 "STRIPE_API_KEY is a live key ("
              << config->api_key().redacted() << ")\n";
    return kExitUsage;
  }
  return TestSetup(*config).run(options.customers);
}

}  // namespace stripe_billing::cli
