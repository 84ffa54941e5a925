#include "model_slug.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "usage_record.h"  // log_safe

namespace stripe_billing {
namespace {

// Longer than any real model id: anything beyond is refused before a rule looks at it.
constexpr std::size_t kMaxModelLength = 256;
constexpr std::size_t kMaxSlugLength = 200;

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}
bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool all_digits(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!is_digit(c)) return false;
  }
  return true;
}

// Path segments that name where LiteLLM sent the call, not the model: dropped.
constexpr std::string_view kRoutePrefixes[] = {
    "openai",    "azure",      "azure_ai",         "text-completion-openai",
    "anthropic", "vertex_ai",  "vertex_ai_beta",   "gemini",
    "google",    "bedrock",    "bedrock_converse", "converse",
    "invoke",    "openrouter", "litellm_proxy"};

bool is_route_prefix(std::string_view segment, std::string_view provider) {
  if (!provider.empty() && segment == provider) return true;
  for (std::string_view prefix : kRoutePrefixes) {
    if (segment == prefix) return true;
  }
  return false;
}

// Bedrock: `us.anthropic.claude-…-v1:0` -> `claude-…`.
std::string strip_bedrock_qualifiers(std::string name) {
  for (std::string_view region :
       {"us.", "eu.", "apac.", "global.", "jp.", "au.", "ca.", "us-gov."}) {
    if (starts_with(name, region) &&
        starts_with(std::string_view(name).substr(region.size()), "anthropic.")) {
      name.erase(0, region.size());
      break;
    }
  }
  if (starts_with(name, "anthropic.")) name.erase(0, std::string_view("anthropic.").size());
  return name;
}

// Drops a trailing `-v2`, `-v1:0`, `-v2:0` (Bedrock and Vertex AI release labels).
void strip_release_label(std::string& name) {
  const std::size_t dash = name.rfind("-v");
  if (dash == std::string::npos) return;
  std::string_view label = std::string_view(name).substr(dash + 2);
  const std::size_t colon = label.find(':');
  const std::string_view major = label.substr(0, colon);
  if (!all_digits(major)) return;
  if (colon != std::string_view::npos && !all_digits(label.substr(colon + 1))) return;
  name.erase(dash);
}

// `-20250219` at the end (Anthropic's snapshot dates).
void strip_compact_date(std::string& name) {
  if (name.size() > 9 && name[name.size() - 9] == '-' &&
      all_digits(std::string_view(name).substr(name.size() - 8))) {
    name.erase(name.size() - 9);
  }
}

// `-2024-08-06` at the end (OpenAI's snapshot dates).
void strip_dashed_date(std::string& name) {
  if (name.size() <= 11) return;
  const std::string_view tail = std::string_view(name).substr(name.size() - 11);
  if (tail[0] == '-' && all_digits(tail.substr(1, 4)) && tail[5] == '-' &&
      all_digits(tail.substr(6, 2)) && tail[8] == '-' && all_digits(tail.substr(9, 2))) {
    name.erase(name.size() - 11);
  }
}

// `claude-3-7-sonnet` -> `claude-3.7-sonnet`: a dash between two single digits (each alone
// between separators) becomes a dot. Dates and multi-digit numbers are never touched.
std::string dot_versions(const std::string& name) {
  std::string out = name;
  for (std::size_t i = 1; i + 1 < out.size(); ++i) {
    if (out[i] != '-' || !is_digit(out[i - 1]) || !is_digit(out[i + 1])) continue;
    const bool left_alone = i < 2 || !std::isalnum(static_cast<unsigned char>(out[i - 2]));
    const bool right_alone =
        i + 2 >= out.size() || !std::isalnum(static_cast<unsigned char>(out[i + 2]));
    if (left_alone && right_alone && (i < 2 || out[i - 2] != '.')) out[i] = '.';
  }
  return out;
}

bool is_openai_model(std::string_view name) {
  for (std::string_view prefix : {"gpt-", "chatgpt-", "text-embedding-", "codex-"}) {
    if (starts_with(name, prefix)) return true;
  }
  for (std::string_view series : {"o1", "o3", "o4"}) {
    if (starts_with(name, series) && (name.size() == series.size() || name[series.size()] == '-')) {
      return true;
    }
  }
  return false;
}

bool slug_charset(std::string_view text) {
  for (char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || is_digit(c) || c == '.' || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// `provider/model` of [a-z0-9._-], each part starting with a letter or digit; a model part may
// hold further `/` segments (`meta/llama-3-70b/instruct`), none empty, none `.` or `..`.
bool valid_slug(std::string_view slug) {
  if (slug.empty() || slug.size() > kMaxSlugLength) return false;
  const std::size_t slash = slug.find('/');
  if (slash == std::string_view::npos) return false;
  std::size_t start = 0;
  while (start <= slug.size()) {
    std::size_t end = slug.find('/', start);
    if (end == std::string_view::npos) end = slug.size();
    const std::string_view part = slug.substr(start, end - start);
    if (part.empty() || part == "." || part == ".." || !slug_charset(part)) return false;
    if (!std::isalnum(static_cast<unsigned char>(part[0]))) return false;
    start = end + 1;
  }
  return true;
}

std::string quoted(const std::string& text) { return "'" + log_safe(text, 80) + "'"; }

std::string where(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null() || mark.line < 0) return "";
  return "line " + std::to_string(mark.line + 1) + ": ";
}

std::string join(const std::vector<std::string>& problems) {
  std::string out;
  for (const std::string& problem : problems) {
    if (!out.empty()) out += "; ";
    out += problem;
  }
  return out;
}

}  // namespace

std::optional<std::string> normalize_model_slug(std::string_view model, std::string_view provider) {
  if (model.empty() || model.size() > kMaxModelLength) return std::nullopt;
  std::string text;
  text.reserve(model.size());
  for (char c : model) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f) return std::nullopt;  // no spaces, controls, non-ASCII
    text.push_back(static_cast<char>(std::tolower(byte)));
  }
  std::string provider_lower;
  for (char c : provider) {
    provider_lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }

  // Split into path segments; route prefixes go, exactly one model name must remain.
  std::vector<std::string> segments;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = text.find('/', start);
    segments.push_back(text.substr(start, end == std::string::npos ? end : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  for (const std::string& segment : segments) {
    if (segment.empty() || segment == "." || segment == "..") return std::nullopt;
  }
  std::size_t first = 0;
  while (first + 1 < segments.size() && is_route_prefix(segments[first], provider_lower)) {
    ++first;
  }
  if (first + 1 != segments.size()) return std::nullopt;  // `meta-llama/llama-3-70b`, ...
  std::string name = segments.back();

  // Vertex AI's `@20241022` snapshot suffix.
  if (const std::size_t at = name.find('@'); at != std::string::npos) {
    if (!all_digits(std::string_view(name).substr(at + 1)) && name.substr(at + 1) != "latest") {
      return std::nullopt;
    }
    name.erase(at);
  }
  name = strip_bedrock_qualifiers(name);
  if (starts_with(name, "claude")) strip_release_label(name);
  if (name.empty() || !slug_charset(name)) return std::nullopt;

  if (starts_with(name, "claude")) {
    if (ends_with(name, "-latest")) name.erase(name.size() - 7);
    strip_compact_date(name);
    name = dot_versions(name);
    return "anthropic/" + name;
  }
  if (is_openai_model(name)) {
    if (ends_with(name, "-latest")) name.erase(name.size() - 7);
    strip_dashed_date(name);
    return "openai/" + name;
  }
  if (starts_with(name, "gemini-")) {
    if (ends_with(name, "-latest")) name.erase(name.size() - 7);
    return "google/" + name;
  }
  return std::nullopt;
}

Expected<ModelSlugs> ModelSlugs::from_text(const std::string& text, const std::string& origin) {
  const std::string label = "model slug mapping " + origin;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return Error{ErrorCode::kInvalidConfig,
                 label + ": not valid YAML or JSON at line " + std::to_string(e.mark.line + 1) +
                     ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg,
                 std::nullopt};
  }
  if (!root.IsMap()) {
    return Error{ErrorCode::kInvalidConfig,
                 label + ": must be an object of `model: provider/model` strings", std::nullopt};
  }
  std::vector<std::string> problems;
  std::map<std::string, std::string> mapping;
  std::set<std::string> seen;
  for (const auto& entry : root) {
    const YAML::Node& key = entry.first;
    const YAML::Node& value = entry.second;
    if (!key.IsScalar() || key.Scalar().empty()) {
      problems.push_back(where(key) + "a key is not a model name (a non-empty string)");
      continue;
    }
    const std::string model = key.Scalar();
    if (!seen.insert(model).second) {
      problems.push_back(where(key) + "key " + quoted(model) + " appears twice");
      continue;
    }
    if (model.size() > 1000 || !is_valid_utf8(model)) {
      problems.push_back(where(key) + "key " + quoted(model) +
                         " is not a model name (valid UTF-8, at most 1000 bytes)");
      continue;
    }
    if (!value.IsScalar() || !valid_slug(value.Scalar())) {
      problems.push_back(where(value) + "key " + quoted(model) +
                         ": the value must be a `provider/model` slug of [a-z0-9._-]" +
                         (value.IsScalar() ? " (got " + quoted(value.Scalar()) + ")" : ""));
      continue;
    }
    mapping.emplace(model, value.Scalar());
  }
  if (!problems.empty()) {
    return Error{ErrorCode::kInvalidConfig, label + ": " + join(problems), std::nullopt};
  }
  return ModelSlugs(mapping);
}

Expected<ModelSlugs> ModelSlugs::from_file(const std::string& path) {
  auto text = read_table_file(path, "model slug mapping");
  if (!text) return std::move(text).error();
  return from_text(*text, path);
}

std::optional<std::string> ModelSlugs::mapped(std::string_view model) const {
  if (auto it = mapping_.find(model); it != mapping_.end()) return it->second;
  return std::nullopt;
}

std::optional<std::string> ModelSlugs::slug(std::string_view model,
                                            std::string_view provider) const {
  if (auto it = mapping_.find(model); it != mapping_.end()) return it->second;
  return normalize_model_slug(model, provider);
}

}  // namespace stripe_billing
