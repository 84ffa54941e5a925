#include "form_values.h"

#include <algorithm>

namespace stripe_emulator {

using nlohmann::json;

std::string text(const json& params, const char* name, const std::string& fallback) {
  return params.contains(name) ? params[name].get<std::string>() : fallback;
}

std::optional<std::int64_t> integer(const json& params, const char* name) {
  if (!params.contains(name)) return std::nullopt;
  return std::stoll(params[name].get<std::string>());
}

bool boolean(const json& params, const char* name, bool fallback) {
  return params.contains(name) ? params[name] == "true" : fallback;
}

std::map<std::string, std::string> string_hash(const json& params, const char* name) {
  std::map<std::string, std::string> hash;
  if (params.contains(name) && params[name].is_object()) {
    for (const auto& [key, value] : params[name].items()) hash[key] = value.get<std::string>();
  }
  return hash;
}

std::vector<json> array(const json& params, const char* name) {
  std::map<std::int64_t, json> by_index;
  if (params.contains(name)) {
    for (const auto& [index, value] : params[name].items())
      by_index.emplace(std::stoll(index), value);
  }
  std::vector<json> values;
  values.reserve(by_index.size());
  for (auto& [index, value] : by_index) values.push_back(std::move(value));
  return values;
}

std::size_t limit(const json& params) {
  return static_cast<std::size_t>(
      std::clamp<std::int64_t>(integer(params, "limit").value_or(10), 1, 100));
}

}  // namespace stripe_emulator
