#include "spec_catalog.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "embedded_specs.h"

namespace stripe_emulator {
namespace {

using nlohmann::json;

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    const auto slash = path.find('/');
    if (slash != 0) parts.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

bool is_placeholder(std::string_view segment) {
  return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

std::string upper(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return text;
}

json params_schema(const json& operation) {
  const auto body =
      operation.value("/requestBody/content/application~1x-www-form-urlencoded/schema"_json_pointer,
                      json::object());
  json schema = {{"type", "object"},
                 {"additionalProperties", false},
                 {"properties", body.value("properties", json::object())},
                 {"required", body.value("required", json::array())}};
  for (const auto& parameter : operation.value("parameters", json::array())) {
    if (parameter.value("in", "") != "query") continue;
    const auto name = parameter.at("name").get<std::string>();
    schema["properties"][name] = parameter.at("schema");
    if (parameter.value("required", false)) schema["required"].push_back(name);
  }
  return schema;
}

}  // namespace

SpecCatalog::SpecCatalog(const std::vector<std::string_view>& spec_texts) {
  std::vector<json> additions;
  for (const auto text : spec_texts) {
    const auto spec = json::parse(text);
    const json paths = spec.value("paths", json::object());
    const json spec_additions = spec.value("x-parameter-additions", json::array());
    for (const auto& [path, methods] : paths.items()) {
      for (const auto& [method, operation] : methods.items()) {
        operations_.push_back(
            Operation{upper(method), path, operation.at("operationId"), params_schema(operation)});
      }
    }
    additions.insert(additions.end(), spec_additions.begin(), spec_additions.end());
  }
  // Parameters Stripe added to an operation after the 2022 schemas: merged into its schema at a
  // JSON pointer (e.g. recurring[meter] on PostPrices, since API 2024-09-30).
  for (const auto& addition : additions) {
    const auto id = addition.at("operationId").get<std::string>();
    const auto found =
        std::find_if(operations_.begin(), operations_.end(),
                     [&](const Operation& operation) { return operation.operation_id == id; });
    if (found == operations_.end()) throw std::runtime_error("x-parameter-additions: no " + id);
    auto& properties = found->params_schema.at(json::json_pointer(addition.at("pointer")));
    for (const auto& [name, schema] : addition.at("properties").items()) properties[name] = schema;
  }
}

const SpecCatalog& SpecCatalog::embedded() {
  static const SpecCatalog catalog(embedded_specs());
  return catalog;
}

std::optional<RouteMatch> SpecCatalog::match(std::string_view method, std::string_view path) const {
  const auto wanted = segments(path);
  std::optional<RouteMatch> best;
  std::size_t best_placeholders = 0;
  for (const auto& operation : operations_) {
    const auto pattern = segments(operation.path_template);
    if (operation.method != method || pattern.size() != wanted.size()) continue;
    RouteMatch candidate{&operation, {}};
    bool matches = true;
    for (std::size_t i = 0; i < pattern.size() && matches; ++i) {
      if (is_placeholder(pattern[i])) {
        candidate.path_params[std::string(pattern[i].substr(1, pattern[i].size() - 2))] =
            std::string(wanted[i]);
      } else {
        matches = pattern[i] == wanted[i];
      }
    }
    if (matches && (!best || candidate.path_params.size() < best_placeholders)) {
      best_placeholders = candidate.path_params.size();
      best = std::move(candidate);
    }
  }
  return best;
}

}  // namespace stripe_emulator
