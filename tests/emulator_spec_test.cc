// Holds the emulator to Stripe's published request schemas. For every operation of the 2022 subset
// (and of the emulator's extension file) it serves, every parameter the schema describes, nested
// ones included, is accepted with a well-typed value and rejected, naming it, with a wrongly typed
// or too long one; an invented parameter is rejected by name. The schemas are read here from the
// spec files themselves, so the test does not share the emulator's reading of them.
#include <gtest/gtest.h>
#include <httplib.h>

#include <ctime>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "stripe_emulator/emulator.h"

namespace {

using nlohmann::json;
using stripe_emulator::Emulator;

constexpr char kApiKey[] = "sk_test_emulator_0000000000000000";
constexpr std::int64_t kDay = 86'400;
constexpr char kMeterEvent[] = "spec_tokens";
constexpr char kCancellableEvent[] = "spec_event_to_cancel";
const std::string kSpecDirectory = STRIPE_BILLING_SOURCE_DIR "/emulator/spec/";
const std::string kSharedSubset =
    STRIPE_BILLING_SOURCE_DIR "/../shared/stripe/openapi-subset-2022.json";

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(file), {});
}

struct Operation {
  std::string method;
  std::string path_template;
  std::string operation_id;
  json params_schema;  // body properties and query parameters, as one object schema
};

std::vector<Operation> operations_in(const std::string& spec_file) {
  std::vector<Operation> operations;
  const auto spec = json::parse(read_file(spec_file).value());
  for (const auto& [path, methods] : spec["paths"].items()) {
    for (const auto& [method, operation] : methods.items()) {
      const auto body = operation.value(
          "/requestBody/content/application~1x-www-form-urlencoded/schema"_json_pointer,
          json::object());
      json schema = {{"type", "object"},
                     {"properties", body.value("properties", json::object())},
                     {"required", body.value("required", json::array())}};
      for (const auto& parameter : operation.value("parameters", json::array())) {
        if (parameter["in"] != "query") continue;
        schema["properties"][parameter["name"]] = parameter["schema"];
        if (parameter.value("required", false)) schema["required"].push_back(parameter["name"]);
      }
      operations.push_back(
          Operation{method == "get" ? "GET" : "POST", path, operation["operationId"], schema});
    }
  }
  return operations;
}

// --- Values for schemas ---------------------------------------------------------------------

std::string type_of(const json& schema) { return schema.value("type", "string"); }

// The alternative of an anyOf that holds members: an object (hash) or an array (indexed hash).
const json& object_alternative(const json& schema) {
  if (schema.contains("anyOf")) {
    for (const auto& alternative : schema["anyOf"]) {
      if (type_of(alternative) == "object" || type_of(alternative) == "array") return alternative;
    }
  }
  return schema;
}

// A well-typed value in form-tree shape (strings and hashes), or none if the form encoding
// cannot express one (an empty hash).
std::optional<json> valid_value(const json& schema) {
  if (schema.contains("anyOf")) {
    for (const auto& alternative : schema["anyOf"]) {
      if (auto value = valid_value(alternative)) return value;
    }
    return std::nullopt;
  }
  const auto type = type_of(schema);
  if (type == "object") {
    const auto properties = schema.value("properties", json::object());
    json value = json::object();
    for (const auto& required : schema.value("required", json::array())) {
      auto member = valid_value(properties[required.get<std::string>()]);
      if (!member) return std::nullopt;
      value[required.get<std::string>()] = *member;
    }
    for (const auto& [name, member_schema] : properties.items()) {
      if (!value.empty()) break;
      if (auto member = valid_value(member_schema)) value[name] = *member;
    }
    if (value.empty() && schema.value("additionalProperties", json()).is_object()) {
      if (auto member = valid_value(schema["additionalProperties"])) value["key"] = *member;
    }
    return value.empty() ? std::nullopt : std::optional<json>(value);
  }
  if (type == "array") {
    auto item = valid_value(schema.value("items", json::object()));
    return item ? std::optional<json>(json{{"0", *item}}) : std::nullopt;
  }
  if (type == "integer") return json("1");
  if (type == "number") return json("1.5");
  if (type == "boolean") return json("true");
  if (schema.contains("enum")) return schema["enum"][0];
  if (schema.value("format", "") == "decimal") return json("1.5");
  return json("x");
}

bool accepts_any_text(const json& schema) {
  return type_of(schema) == "string" && !schema.contains("enum") &&
         schema.value("format", "") != "decimal";
}

bool accepts_a_hash_with_any_keys(const json& schema) {
  return type_of(schema) == "object" && schema.value("additionalProperties", json()).is_object();
}

// A value of the wrong type for the schema, or none if every shape is acceptable.
std::optional<json> wrong_value(const json& schema) {
  if (schema.contains("anyOf")) {
    const auto& alternatives = schema["anyOf"];
    if (std::none_of(alternatives.begin(), alternatives.end(), accepts_any_text)) {
      return json("zz_wrong_type");
    }
    if (std::none_of(alternatives.begin(), alternatives.end(), accepts_a_hash_with_any_keys)) {
      return json{{"zz_unknown_key", "1"}};
    }
    return std::nullopt;
  }
  const auto type = type_of(schema);
  if (type == "object" || type == "array" || type == "integer" || type == "number" ||
      type == "boolean" || schema.contains("enum") || schema.value("format", "") == "decimal") {
    return json("zz_wrong_type");
  }
  return json{{"zz_unknown_key", "1"}};  // a hash where text belongs
}

// --- Parameter paths ------------------------------------------------------------------------

struct Parameter {
  std::vector<std::string> path;  // {"items", "0", "price"}
  json schema;

  std::string name() const {
    std::string name = path[0];
    for (std::size_t i = 1; i < path.size(); ++i) name += "[" + path[i] + "]";
    return name;
  }
};

void collect(const json& schema, const std::vector<std::string>& path,
             std::vector<Parameter>& parameters) {
  if (!path.empty()) parameters.push_back(Parameter{path, schema});
  const auto alternatives = schema.contains("anyOf") ? schema["anyOf"] : json::array({schema});
  for (const auto& alternative : alternatives) {
    const auto extended = [&](const std::string& key) {
      auto longer = path;
      longer.push_back(key);
      return longer;
    };
    if (type_of(alternative) == "object") {
      const auto properties = alternative.value("properties", json::object());
      for (const auto& [name, member] : properties.items()) {
        collect(member, extended(name), parameters);
      }
      if (accepts_a_hash_with_any_keys(alternative)) {
        collect(alternative["additionalProperties"], extended("key"), parameters);
      }
    } else if (type_of(alternative) == "array") {
      collect(alternative.value("items", json::object()), extended("0"), parameters);
    }
  }
}

std::vector<Parameter> parameters_of(const Operation& operation) {
  std::vector<Parameter> parameters;
  collect(operation.params_schema, {}, parameters);
  return parameters;
}

const json& member_schema(const json& schema, const std::string& key) {
  const auto& object = object_alternative(schema);
  if (type_of(object) == "array") return object["items"];
  const auto& properties = object.value("properties", json::object());
  if (properties.contains(key)) return object["properties"][key];
  return object["additionalProperties"];
}

// Puts `value` at `path` inside `params`, creating well-typed parents on the way.
void put(json& params, const Operation& operation, const std::vector<std::string>& path,
         const json& value, bool merge) {
  json* node = &params;
  const json* schema = &operation.params_schema;
  for (std::size_t depth = 0; depth + 1 < path.size(); ++depth) {
    schema = &member_schema(*schema, path[depth]);
    auto& child = (*node)[path[depth]];
    if (!child.is_object())
      child = valid_value(object_alternative(*schema)).value_or(json::object());
    node = &child;
  }
  auto& target = (*node)[path.back()];
  if (merge && target.is_object() && value.is_object()) {
    target.merge_patch(value);
  } else {
    target = value;
  }
}

std::string percent_encoded(const std::string& text, bool keep_brackets) {
  std::string encoded;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_brackets && (c == '[' || c == ']'))) {
      encoded += static_cast<char>(c);
    } else {
      char escape[4];
      std::snprintf(escape, sizeof(escape), "%%%02X", c);
      encoded += escape;
    }
  }
  return encoded;
}

std::string form_encoded(const json& tree, const std::string& prefix = "") {
  std::string form;
  for (const auto& [key, value] : tree.items()) {
    const auto name = prefix.empty() ? key : prefix + "[" + key + "]";
    const auto part = value.is_object() ? form_encoded(value, name)
                                        : percent_encoded(name, true) + "=" +
                                              percent_encoded(value.get<std::string>(), false);
    if (part.empty()) continue;
    form += (form.empty() ? "" : "&") + part;
  }
  return form;
}

bool is_schema_error(const httplib::Result& result) {
  if (!result || result->status != 400) return false;
  const auto message = json::parse(result->body)["error"].value("message", "");
  for (const auto* prefix : {"Received unknown parameter", "Invalid ", "Missing required param"}) {
    if (message.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

// --- The fixture ----------------------------------------------------------------------------

class SpecConformanceTest : public ::testing::Test {
 protected:
  SpecConformanceTest() {
    customer_ = emulator_.create_customer({{"k", "v"}}, "a@example.com");
    product_ = emulator_.create_product("Tokens");
    price_ = emulator_.create_metered_price(product_);
    const auto ids = emulator_.create_subscription(customer_, price_);
    subscription_ = ids.subscription_id;
    item_ = ids.item_id;
    meter_ = emulator_.create_meter(kMeterEvent);
    grant_ = emulator_.create_credit_grant(customer_, 100);
    record_cancellable_event();
    for (const auto* file : {"openapi-subset-2022.json", "emulator-extensions.json"}) {
      for (auto& operation : operations_in(kSpecDirectory + file)) {
        operations_.push_back(std::move(operation));
      }
    }
  }

  void record_cancellable_event() const {
    httplib::Client client("127.0.0.1", emulator_.port());
    client.set_bearer_token_auth(kApiKey);
    const json event = {{"event_name", kMeterEvent},
                        {"identifier", kCancellableEvent},
                        {"payload", {{"stripe_customer_id", customer_}, {"value", "1"}}}};
    const auto result = client.Post("/v1/billing/meter_events", form_encoded(event),
                                    "application/x-www-form-urlencoded");
    if (!result || result->status != 200) throw std::runtime_error("cannot record a meter event");
  }

  // Event summaries may be grouped by day, so their range is aligned with UTC days.
  static std::int64_t today() { return std::time(nullptr) / kDay * kDay; }

  std::string fresh(const std::string& prefix) { return prefix + std::to_string(++custom_ids_); }

  // What an operation needs to succeed, so a refusal can only come from the parameter under test.
  // Meters need an event name no active meter has.
  json base_params(const Operation& operation) {
    const std::map<std::string, json> base = {
        {"PostBillingMeters",
         {{"display_name", "Tokens"},
          {"event_name", fresh("spec_meter_")},
          {"default_aggregation", {{"formula", "sum"}}}}},
        {"PostBillingMeterEvents",
         {{"event_name", kMeterEvent},
          {"payload", {{"stripe_customer_id", customer_}, {"value", "1"}}}}},
        {"PostBillingMeterEventAdjustments",
         {{"event_name", kMeterEvent},
          {"type", "cancel"},
          {"cancel", {{"identifier", kCancellableEvent}}}}},
        {"GetBillingCreditBalanceSummary",
         {{"customer", customer_}, {"filter", {{"type", "applicability_scope"}}}}},
        {"GetBillingMetersIdEventSummaries",
         {{"customer", customer_},
          {"start_time", std::to_string(today() - kDay)},
          {"end_time", std::to_string(today() + kDay)}}},
        {"PostSubscriptionItemsSubscriptionItemUsageRecords", {{"quantity", "1"}}},
        {"GetCustomersSearch", {{"query", "email:'a@example.com'"}}},
        {"PostSubscriptions", {{"customer", customer_}, {"items", {{"0", {{"price", price_}}}}}}},
        {"GetSubscriptionItems", {{"subscription", subscription_}}},
        {"PostPrices", {{"currency", "usd"}, {"product", product_}, {"unit_amount", "1"}}},
        {"PostProducts", {{"name", "Tokens"}}}};
    const auto found = base.find(operation.operation_id);
    return found == base.end() ? json::object() : found->second;
  }

  // Values that must name existing objects (or be fresh, or in range) rather than be merely
  // well-typed.
  std::optional<json> meaningful_value(const Operation& operation, const std::string& parameter) {
    const auto& id = operation.operation_id;
    if (id == "PostBillingMeters" && parameter == "event_name") return json(fresh("spec_meter_"));
    if (id == "PostBillingMeterEvents" || id == "PostBillingMeterEventAdjustments") {
      if (parameter == "event_name") return json(kMeterEvent);
      if (parameter == "identifier") return json(fresh("spec_event_"));
      if (parameter == "timestamp") return json(std::to_string(std::time(nullptr)));
      if (parameter == "cancel") return json{{"identifier", kCancellableEvent}};
      if (parameter == "cancel[identifier]") return json(kCancellableEvent);
    }
    if (parameter == "start_time") return json(std::to_string(today() - kDay));
    if (parameter == "end_time") return json(std::to_string(today() + kDay));
    if (parameter == "customer") return json(customer_);
    if (parameter == "product") return json(product_);
    if (parameter == "price" || parameter == "items[0][price]") return json(price_);
    if (parameter == "subscription") return json(subscription_);
    if (parameter == "query") return json("email:'a@example.com'");
    if (parameter == "id") return json("prod_spec_" + std::to_string(++custom_ids_));
    return std::nullopt;
  }

  std::string path_of(const Operation& operation) const {
    auto path = operation.path_template;
    const bool meter = path.rfind("/v1/billing/meters/", 0) == 0;
    const bool grant = path.rfind("/v1/billing/credit_grants/", 0) == 0;
    for (const auto& [placeholder, id] :
         std::map<std::string, std::string>{{"{subscription_item}", item_},
                                            {"{price}", price_},
                                            {"{customer}", customer_},
                                            {"{id}", meter   ? meter_
                                                     : grant ? grant_
                                                             : product_}}) {
      const auto at = path.find(placeholder);
      if (at != std::string::npos) path.replace(at, placeholder.size(), id);
    }
    return path;
  }

  httplib::Result send(const Operation& operation, const json& params) const {
    httplib::Client client("127.0.0.1", emulator_.port());
    client.set_bearer_token_auth(kApiKey);
    const auto path = path_of(operation);
    if (operation.method == "GET") return client.Get((path + "?" + form_encoded(params)).c_str());
    return client.Post(path.c_str(), form_encoded(params), "application/x-www-form-urlencoded");
  }

  std::vector<Operation> served_operations() {
    std::vector<Operation> served;
    for (const auto& operation : operations_) {
      const auto result = send(operation, base_params(operation));
      const bool unrecognized = result && result->status == 404 &&
                                result->body.find("Unrecognized request URL") != std::string::npos;
      if (!unrecognized) served.push_back(operation);
    }
    return served;
  }

  Emulator emulator_;
  std::string customer_, product_, price_, subscription_, item_, meter_, grant_;
  std::vector<Operation> operations_;
  int custom_ids_ = 0;
};

std::string describe(const Operation& operation, const std::string& parameter, const json& params,
                     const httplib::Result& result) {
  std::ostringstream out;
  out << operation.method << " " << operation.path_template << " " << parameter << "\n  sent "
      << form_encoded(params) << "\n  got ";
  if (result) {
    out << result->status << " " << result->body;
  } else {
    out << "no answer";
  }
  return out.str();
}

TEST(OpenApiSubsetCopy, IsByteIdenticalToTheSharedSpec) {
  const auto shared = read_file(kSharedSubset);
  ASSERT_TRUE(shared) << kSharedSubset << " is missing";
  const auto copy = read_file(kSpecDirectory + "openapi-subset-2022.json");
  ASSERT_TRUE(copy);
  EXPECT_TRUE(*copy == *shared) << "emulator/spec/openapi-subset-2022.json differs from "
                                << kSharedSubset;
}

TEST_F(SpecConformanceTest, ServesEveryOperationOfTheSubsetAndTheExtensions) {
  std::set<std::string> served;
  for (const auto& operation : served_operations()) served.insert(operation.operation_id);
  EXPECT_EQ(served, (std::set<std::string>{
                        "GetBillingCreditBalanceSummary",
                        "GetBillingCreditGrantsId",
                        "GetBillingMeters",
                        "GetBillingMetersId",
                        "GetBillingMetersIdEventSummaries",
                        "GetCustomers",
                        "GetCustomersCustomer",
                        "GetCustomersSearch",
                        "GetPrices",
                        "GetPricesPrice",
                        "GetProductsId",
                        "GetSubscriptionItems",
                        "GetSubscriptionItemsSubscriptionItemUsageRecordSummaries",
                        "GetSubscriptions",
                        "PostBillingMeterEventAdjustments",
                        "PostBillingMeterEvents",
                        "PostBillingMeters",
                        "PostCustomers",
                        "PostPrices",
                        "PostProducts",
                        "PostSubscriptionItemsSubscriptionItemUsageRecords",
                        "PostSubscriptions",
                    }));
}

TEST_F(SpecConformanceTest, AcceptsEveryParameterWithAWellTypedValue) {
  for (const auto& operation : served_operations()) {
    for (const auto& parameter : parameters_of(operation)) {
      auto value = meaningful_value(operation, parameter.name());
      if (!value) value = valid_value(parameter.schema);
      if (!value) continue;
      auto params = base_params(operation);
      put(params, operation, parameter.path, *value, true);
      const auto result = send(operation, params);
      EXPECT_TRUE(result && result->status == 200)
          << describe(operation, parameter.name(), params, result);
    }
  }
}

TEST_F(SpecConformanceTest, RejectsEveryParameterGivenAWrongType) {
  int rejected = 0;
  for (const auto& operation : served_operations()) {
    for (const auto& parameter : parameters_of(operation)) {
      const auto value = wrong_value(parameter.schema);
      if (!value) continue;
      auto params = base_params(operation);
      put(params, operation, parameter.path, *value, false);
      const auto result = send(operation, params);
      ASSERT_TRUE(result) << describe(operation, parameter.name(), params, result);
      EXPECT_TRUE(is_schema_error(result) &&
                  json::parse(result->body)["error"]["param"] == parameter.name())
          << describe(operation, parameter.name(), params, result);
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 200);
}

TEST_F(SpecConformanceTest, RejectsTextLongerThanItsMaxLength) {
  for (const auto& operation : served_operations()) {
    for (const auto& parameter : parameters_of(operation)) {
      if (!accepts_any_text(parameter.schema) || !parameter.schema.contains("maxLength")) continue;
      auto params = base_params(operation);
      const auto too_long = std::string(parameter.schema["maxLength"].get<std::size_t>() + 1, 'x');
      put(params, operation, parameter.path, too_long, false);
      const auto result = send(operation, params);
      ASSERT_TRUE(result);
      EXPECT_TRUE(is_schema_error(result) &&
                  json::parse(result->body)["error"]["param"] == parameter.name())
          << describe(operation, parameter.name(), json::object(), result);
    }
  }
}

TEST_F(SpecConformanceTest, RejectsAnInventedParameterNamingIt) {
  for (const auto& operation : served_operations()) {
    auto params = base_params(operation);
    params["zz_invented_param"] = "1";
    const auto result = send(operation, params);
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 400) << operation.operation_id;
    const auto error = json::parse(result->body)["error"];
    EXPECT_EQ(error["message"], "Received unknown parameter: zz_invented_param")
        << operation.operation_id;
    EXPECT_EQ(error["param"], "zz_invented_param") << operation.operation_id;
  }
}

TEST_F(SpecConformanceTest, RejectsAMissingRequiredParameterNamingIt) {
  for (const auto& operation : served_operations()) {
    for (const auto& required : operation.params_schema.value("required", json::array())) {
      auto params = base_params(operation);
      params.erase(required.get<std::string>());
      const auto result = send(operation, params);
      ASSERT_TRUE(result);
      EXPECT_EQ(json::parse(result->body)["error"]["message"],
                "Missing required param: " + required.get<std::string>() + ".")
          << operation.operation_id;
    }
  }
}

}  // namespace
