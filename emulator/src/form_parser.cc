#include "form_parser.h"

#include <optional>
#include <vector>

namespace stripe_emulator {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "a[b][]" -> {"a", "b", ""}; a key that does not follow the bracket grammar is one name.
std::vector<std::string> key_path(const std::string& key) {
  const auto open = key.find('[');
  if (open == std::string::npos || open == 0) return {key};
  std::vector<std::string> path{key.substr(0, open)};
  for (std::size_t at = open; at < key.size();) {
    const auto close = key.find(']', at);
    if (key[at] != '[' || close == std::string::npos) return {key};
    path.push_back(key.substr(at + 1, close - at - 1));
    at = close + 1;
  }
  return path;
}

std::string param_name(const std::vector<std::string>& path, std::size_t depth) {
  std::string name = path[0];
  for (std::size_t i = 1; i <= depth; ++i) name += "[" + path[i] + "]";
  return name;
}

std::optional<ApiError> insert(nlohmann::json& tree, const std::vector<std::string>& path,
                               std::string value) {
  nlohmann::json* node = &tree;
  for (std::size_t depth = 0; depth < path.size(); ++depth) {
    if (!node->is_object()) {
      return errors::invalid_request(
          "Received both a value and a hash for parameter: " + param_name(path, depth - 1),
          param_name(path, depth - 1));
    }
    const auto key = path[depth].empty() ? std::to_string(node->size()) : path[depth];
    const bool is_leaf = depth + 1 == path.size();
    auto& child = (*node)[key];
    if (is_leaf) {
      if (child.is_object()) {
        return errors::invalid_request(
            "Received both a value and a hash for parameter: " + param_name(path, depth),
            param_name(path, depth));
      }
      child = std::move(value);
      return std::nullopt;
    }
    if (child.is_null()) child = nlohmann::json::object();
    node = &child;
  }
  return std::nullopt;
}

}  // namespace

std::string form_decode(std::string_view text) {
  std::string decoded;
  decoded.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      decoded += ' ';
    } else if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 &&
               hex_value(text[i + 2]) >= 0) {
      decoded += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    } else {
      decoded += text[i];
    }
  }
  return decoded;
}

Expected<nlohmann::json> parse_form(std::string_view text) {
  auto tree = nlohmann::json::object();
  while (!text.empty()) {
    const auto end = text.find('&');
    const auto pair = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    const auto equals = pair.find('=');
    const auto key = form_decode(pair.substr(0, equals));
    if (key.empty()) continue;
    auto value = equals == std::string_view::npos ? "" : form_decode(pair.substr(equals + 1));
    if (auto error = insert(tree, key_path(key), std::move(value))) return *error;
  }
  return tree;
}

}  // namespace stripe_emulator
