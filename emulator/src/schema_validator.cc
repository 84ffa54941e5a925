#include "schema_validator.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stripe_emulator {
namespace {

using nlohmann::json;
using Violation = std::optional<ApiError>;

Violation check(const json& value, const json& schema, const std::string& param);

Violation invalid(const std::string& message, const std::string& param) {
  return errors::invalid_request(message, param);
}

std::string child_param(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "[" + key + "]";
}

bool is_integer(const std::string& text) {
  std::int64_t parsed = 0;
  const auto* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, parsed);
  return !text.empty() && error == std::errc{} && stop == end;
}

bool is_decimal(const std::string& text) {
  const auto digits = [](std::string_view part) {
    return !part.empty() &&
           std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  std::string_view rest = text;
  if (!rest.empty() && rest.front() == '-') rest.remove_prefix(1);
  const auto point = rest.find('.');
  if (point == std::string_view::npos) return digits(rest);
  return digits(rest.substr(0, point)) && digits(rest.substr(point + 1));
}

std::size_t character_count(const std::string& text) {
  return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

std::string one_of_list(const json& values) {
  std::string list;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) list += i + 1 == values.size() ? (values.size() > 2 ? ", or " : " or ") : ", ";
    list += values[i].get<std::string>();
  }
  return list;
}

std::string shortened(const std::string& text) {
  return text.size() <= 30 ? text : text.substr(0, 30) + "...";
}

Violation check_leaf(const std::string& value, const json& schema, const std::string& param) {
  const auto type = schema.value("type", "string");
  if (type == "integer" && !is_integer(value)) return invalid("Invalid integer: " + value, param);
  if (type == "number" && !is_decimal(value)) return invalid("Invalid decimal: " + value, param);
  if (type == "boolean" && value != "true" && value != "false") {
    return invalid("Invalid boolean: " + value, param);
  }
  if (schema.value("format", "") == "decimal" && !is_decimal(value)) {
    return invalid("Invalid decimal: " + value, param);
  }
  if (schema.contains("enum") &&
      std::find(schema["enum"].begin(), schema["enum"].end(), value) == schema["enum"].end()) {
    return invalid("Invalid " + param + ": must be one of " + one_of_list(schema["enum"]), param);
  }
  if (schema.contains("maxLength") &&
      character_count(value) > schema["maxLength"].get<std::size_t>()) {
    return invalid("Invalid string: " + shortened(value) + "; must be at most " +
                       std::to_string(schema["maxLength"].get<std::size_t>()) + " characters",
                   param);
  }
  return std::nullopt;
}

const json kNoProperties = json::object();

Violation check_object(const json& value, const json& schema, const std::string& param) {
  if (!value.is_object()) return invalid("Invalid hash", param);
  const auto& properties = schema.contains("properties") ? schema["properties"] : kNoProperties;
  const auto additional = schema.find("additionalProperties");
  const bool open = additional != schema.end() && additional->is_object();
  for (const auto& [key, child] : value.items()) {
    const auto name = child_param(param, key);
    if (properties.contains(key)) {
      if (auto violation = check(child, properties.at(key), name)) return violation;
    } else if (open) {
      if (auto violation = check(child, *additional, name)) return violation;
    } else {
      return invalid("Received unknown parameter: " + name, name);
    }
  }
  for (const auto& required : schema.value("required", json::array())) {
    const auto key = required.get<std::string>();
    if (!value.contains(key)) {
      return errors::parameter_missing(child_param(param, key));
    }
  }
  return std::nullopt;
}

Violation check_array(const json& value, const json& schema, const std::string& param) {
  if (!value.is_object()) return invalid("Invalid array", param);
  std::map<std::int64_t, const json*> by_index;
  for (const auto& [key, child] : value.items()) {
    if (!is_integer(key) || key.front() == '-') return invalid("Invalid array", param);
    by_index[std::stoll(key)] = &child;
  }
  for (const auto& [index, child] : by_index) {
    const auto name = param + "[" + std::to_string(index) + "]";
    if (auto violation = check(*child, schema.value("items", json::object()), name)) {
      return violation;
    }
  }
  return std::nullopt;
}

// When no alternative accepts the value, answer with the error of the alternative the caller
// most likely meant: preferably one of the value's shape (text or hash), preferably one that is
// more than a fixed list of words, and last the enum [""] that Stripe uses to unset a field.
Violation check_any_of(const json& value, const json& alternatives, const std::string& param) {
  std::vector<std::pair<int, ApiError>> violations;
  for (const auto& alternative : alternatives) {
    auto violation = check(value, alternative, param);
    if (!violation) return std::nullopt;
    const auto type = alternative.value("type", "string");
    const bool same_shape = value.is_object() == (type == "object" || type == "array");
    const bool fixed_words = alternative.contains("enum");
    const bool only_unsets = alternative.value("enum", json::array()) == json::array({""});
    const int rank = only_unsets ? 4 : (same_shape ? 0 : 2) + (fixed_words ? 1 : 0);
    violations.emplace_back(rank, *violation);
  }
  if (violations.empty()) return std::nullopt;
  return std::min_element(violations.begin(), violations.end(),
                          [](const auto& a, const auto& b) { return a.first < b.first; })
      ->second;
}

Violation check(const json& value, const json& schema, const std::string& param) {
  if (schema.contains("anyOf")) return check_any_of(value, schema["anyOf"], param);
  const auto type = schema.value("type", "string");
  if (type == "object") return check_object(value, schema, param);
  if (type == "array") return check_array(value, schema, param);
  if (!value.is_string()) {
    return invalid("Invalid " + std::string(type == "number" ? "decimal" : type), param);
  }
  return check_leaf(value.get_ref<const std::string&>(), schema, param);
}

}  // namespace

std::optional<ApiError> validate_params(const json& params, const json& schema) {
  return check(params, schema, "");
}

}  // namespace stripe_emulator
