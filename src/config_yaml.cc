// Reads a LiteLLM proxy config file: `litellm_settings.success_callback`, the
// `environment_variables` map (which LiteLLM copies into the process environment, so here it
// overrides `env`), and this library's own `stripe_billing` section. Every other section belongs
// to LiteLLM and is ignored. No message quotes a setting's value from the file or the
// environment: any of them may be a secret. Keys and names are quoted, but a key pasted into the
// wrong line may be one, so every message is scrubbed of the API key and of anything that looks
// like a secret key before it leaves.
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "stripe_billing/config.h"
#include "stripe_billing/secret.h"

namespace stripe_billing {
namespace {

constexpr std::string_view kSection = "stripe_billing";
constexpr std::string_view kEnvironmentPrefix = "os.environ/";
constexpr std::string_view kStripePrefix = "STRIPE_";
// A configured key shorter than this is not searched for in messages (it would match words).
constexpr std::size_t kMinKeyLengthToFind = 8;

// "api_key" → "STRIPE_API_KEY", "environment" → "ENVIRONMENT", in documentation order.
const std::vector<std::pair<std::string, std::string>>& yaml_keys_to_variables() {
  static const std::vector<std::pair<std::string, std::string>> keys = [] {
    std::vector<std::pair<std::string, std::string>> out;
    for (const std::string& variable : config_variable_names()) {
      std::string key = variable;
      if (key.compare(0, kStripePrefix.size(), kStripePrefix) == 0) {
        key.erase(0, kStripePrefix.size());
      }
      for (char& c : key) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      }
      out.emplace_back(std::move(key), variable);
    }
    return out;
  }();
  return keys;
}

const std::string* variable_for_key(const std::string& key) {
  for (const auto& [yaml_key, variable] : yaml_keys_to_variables()) {
    if (yaml_key == key) return &variable;
  }
  return nullptr;
}

std::string where(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null() || mark.line < 0) return "";
  return "line " + std::to_string(mark.line + 1) + ": ";
}

class Reader {
 public:
  Reader(std::string source, const EnvLookup& env) : source_(std::move(source)), env_(env) {}

  // Errors come out scrubbed (scrubbed()).
  Expected<YamlSettings> read(const std::string& text);

 private:
  Expected<YamlSettings> read_unscrubbed(const std::string& text);
  std::string scrubbed(std::string_view text) const;
  void read_environment_variables(const YAML::Node& section);
  void read_success_callbacks(const YAML::Node& section, YamlSettings& settings);
  void read_stripe_section(const YAML::Node& section);
  std::optional<std::string> read_setting(const std::string& key, const YAML::Node& value);
  std::optional<std::string> read_customer_map(const YAML::Node& value);
  std::optional<std::string> resolve(const std::string& label, const YAML::Node& value);
  std::optional<std::string> lookup(const std::string& name) const;

  void problem(const YAML::Node& node, std::string text) {
    problems_.push_back(where(node) + std::move(text));
  }
  Error to_error() const;

  std::string source_;
  const EnvLookup& env_;
  std::map<std::string, std::string> file_environment_;  // environment_variables
  std::map<std::string, std::string> file_settings_;     // variable name → value
  std::vector<std::string> problems_;
};

Expected<YamlSettings> Reader::read(const std::string& text) {
  Expected<YamlSettings> result = read_unscrubbed(text);
  if (result) return result;
  Error error = std::move(result).error();
  error.message = scrubbed(error.message);
  return error;
}

// The API key as the file or the environment gives it, then every secret-looking word.
std::string Reader::scrubbed(std::string_view text) const {
  std::string out(text);
  const auto in_file = file_settings_.find("STRIPE_API_KEY");
  const std::optional<std::string> key = in_file != file_settings_.end()
                                             ? std::optional<std::string>(in_file->second)
                                             : lookup("STRIPE_API_KEY");
  if (key && key->size() >= kMinKeyLengthToFind) {
    const std::string redacted = Secret::redact_key(*key);
    for (std::size_t at = out.find(*key); at != std::string::npos;
         at = out.find(*key, at + redacted.size())) {
      out.replace(at, key->size(), redacted);
    }
  }
  return Secret::redact_secrets_in(out);
}

Expected<YamlSettings> Reader::read_unscrubbed(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    // e.msg names the grammar rule that failed; it never quotes the offending text.
    return Error{ErrorCode::kInvalidConfig,
                 "invalid YAML in " + source_ + " at line " + std::to_string(e.mark.line + 1) +
                     ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg,
                 std::nullopt};
  }
  YamlSettings settings;
  if (root.IsNull()) return YamlSettings{config_from_env(env_), {}};
  if (!root.IsMap()) {
    return Error{ErrorCode::kInvalidConfig,
                 "invalid configuration file " + source_ +
                     ": the top level must be a map of sections (litellm_settings, "
                     "stripe_billing, ...)",
                 std::nullopt};
  }
  const YAML::Node& sections = root;  // const: lookups must not add nodes
  read_environment_variables(sections["environment_variables"]);
  read_success_callbacks(sections["litellm_settings"], settings);
  read_stripe_section(sections[std::string(kSection)]);
  if (!problems_.empty()) return to_error();

  settings.config = config_from_env([this](const std::string& name) {
    const auto in_file = file_settings_.find(name);
    if (in_file != file_settings_.end()) return std::optional<std::string>(in_file->second);
    return lookup(name);
  });
  return settings;
}

// LiteLLM copies this map into os.environ before anything reads the environment, so its entries
// win over the process environment for both the fallback and os.environ/ references.
void Reader::read_environment_variables(const YAML::Node& section) {
  if (!section.IsDefined() || section.IsNull()) return;
  if (!section.IsMap()) {
    problem(section, "environment_variables must be a map of NAME: value");
    return;
  }
  for (const auto& entry : section) {
    if (!entry.first.IsScalar()) {
      problem(entry.first, "environment_variables: every name must be a plain string");
      continue;
    }
    const std::string name = entry.first.Scalar();
    if (entry.second.IsNull()) continue;
    if (!entry.second.IsScalar()) {
      problem(entry.second, "environment_variables." + name + " must be a string or a number");
      continue;
    }
    file_environment_[name] = entry.second.Scalar();
  }
}

void Reader::read_success_callbacks(const YAML::Node& section, YamlSettings& settings) {
  if (!section.IsDefined() || section.IsNull()) return;
  if (!section.IsMap()) {
    problem(section, "litellm_settings must be a map");
    return;
  }
  const YAML::Node callbacks = section["success_callback"];
  if (!callbacks.IsDefined() || callbacks.IsNull()) return;
  if (!callbacks.IsSequence()) {
    problem(callbacks, "litellm_settings.success_callback must be a list, e.g. [\"stripe\"]");
    return;
  }
  for (const YAML::Node& callback : callbacks) {
    if (!callback.IsScalar()) {
      problem(callback, "litellm_settings.success_callback entries must be strings");
      continue;
    }
    settings.success_callbacks.push_back(callback.Scalar());
  }
}

void Reader::read_stripe_section(const YAML::Node& section) {
  if (!section.IsDefined() || section.IsNull()) return;
  if (!section.IsMap()) {
    problem(section, std::string(kSection) + " must be a map of settings (api_key: ..., ...)");
    return;
  }
  std::vector<std::string> unknown;
  std::set<std::string> seen;
  for (const auto& entry : section) {
    if (!entry.first.IsScalar()) {
      problem(entry.first, std::string(kSection) + ": every key must be a plain string");
      continue;
    }
    const std::string key = entry.first.Scalar();
    const std::string* variable = variable_for_key(key);
    if (variable == nullptr) {
      const std::string line = where(entry.first);
      unknown.push_back(key + (line.empty() ? "" : " (" + line.substr(0, line.size() - 2) + ")"));
      continue;
    }
    if (!seen.insert(key).second) {
      problem(entry.first, std::string(kSection) + "." + key + " appears more than once");
      continue;
    }
    std::optional<std::string> value = read_setting(key, entry.second);
    if (value && !value->empty()) file_settings_[*variable] = std::move(*value);
  }
  if (!unknown.empty()) {
    std::string text =
        std::string(kSection) + " has unknown " + (unknown.size() == 1 ? "key " : "keys ");
    for (std::size_t i = 0; i < unknown.size(); ++i) text += (i ? ", " : "") + unknown[i];
    text += "; the settings are ";
    bool first = true;
    for (const auto& known : yaml_keys_to_variables()) {
      text += (first ? "" : ", ") + known.first;
      first = false;
    }
    problems_.push_back(std::move(text));
  }
}

// nullopt (or "") when the file leaves the setting to the environment.
std::optional<std::string> Reader::read_setting(const std::string& key, const YAML::Node& value) {
  const std::string label = std::string(kSection) + "." + key;
  if (value.IsNull()) return std::nullopt;
  if (key == "customer_map" && value.IsMap()) return read_customer_map(value);
  if (!value.IsScalar()) {
    problem(value, label + " must be a string or a number" +
                       (key == "customer_map" ? std::string(", or a map of value: cus_…/si_…")
                                              : std::string()));
    return std::nullopt;
  }
  return resolve(label, value);
}

// The map form `{alice: cus_1, bob: si_2}` becomes the variable's form "alice=cus_1,bob=si_2";
// finalize_config() checks the targets.
std::optional<std::string> Reader::read_customer_map(const YAML::Node& value) {
  const std::string label = std::string(kSection) + ".customer_map";
  std::string joined;
  bool ok = true;
  for (const auto& entry : value) {
    if (!entry.first.IsScalar() || entry.first.Scalar().empty()) {
      problem(entry.first, label + ": every key must be a non-empty string");
      ok = false;
      continue;
    }
    const std::string name = entry.first.Scalar();
    if (name.find_first_of("=,") != std::string::npos) {
      problem(entry.first, label + ": the key \"" + name + "\" must not contain '=' or ','");
      ok = false;
      continue;
    }
    if (!entry.second.IsScalar()) {
      problem(entry.second, label + "." + name + " must be a cus_… or si_… id");
      ok = false;
      continue;
    }
    const std::optional<std::string> target = resolve(label + "." + name, entry.second);
    if (!target) {
      ok = false;
      continue;
    }
    if (target->find(',') != std::string::npos) {
      problem(entry.second, label + "." + name + " must be a single cus_… or si_… id");
      ok = false;
      continue;
    }
    joined += (joined.empty() ? "" : ",") + name + "=" + *target;
  }
  if (!ok) return std::nullopt;
  return joined;
}

// A scalar's text, or for `os.environ/NAME` the value of NAME.
std::optional<std::string> Reader::resolve(const std::string& label, const YAML::Node& value) {
  const std::string& text = value.Scalar();
  if (text.compare(0, kEnvironmentPrefix.size(), kEnvironmentPrefix) != 0) return text;
  const std::string name = text.substr(kEnvironmentPrefix.size());
  if (name.empty()) {
    problem(value, label + ": os.environ/ must be followed by a variable name");
    return std::nullopt;
  }
  std::optional<std::string> resolved = lookup(name);
  if (!resolved || resolved->empty()) {
    problem(value, label + " refers to os.environ/" + name + ", but " + name + " is not set");
    return std::nullopt;
  }
  return resolved;
}

std::optional<std::string> Reader::lookup(const std::string& name) const {
  const auto in_file = file_environment_.find(name);
  if (in_file != file_environment_.end()) return in_file->second;
  return env_(name);
}

Error Reader::to_error() const {
  std::string message = "invalid Stripe billing configuration in " + source_ + " (" +
                        std::to_string(problems_.size()) +
                        (problems_.size() == 1 ? " problem):" : " problems):");
  for (const std::string& line : problems_) message += "\n- " + line;
  return Error{ErrorCode::kInvalidConfig, std::move(message), std::nullopt};
}

Expected<YamlSettings> read_guarded(const std::string& text, const std::string& source,
                                    const EnvLookup& env) {
  try {
    return Reader(source, env).read(text);
  } catch (const YAML::Exception& e) {
    return Error{ErrorCode::kInvalidConfig,
                 Secret::redact_secrets_in("invalid configuration file " + source + ": " + e.msg),
                 std::nullopt};
  } catch (const std::exception& e) {
    return Error{ErrorCode::kInternal,
                 Secret::redact_secrets_in("reading " + source + " failed: " + e.what()),
                 std::nullopt};
  }
}

}  // namespace

Expected<YamlSettings> config_from_yaml_file(const std::string& path, const EnvLookup& env) {
  // The path is quoted in every message; one that holds a secret is quoted redacted.
  const auto cannot_read = [&path](const std::string& why) {
    return Error{ErrorCode::kInvalidConfig,
                 Secret::redact_secrets_in("cannot read configuration file " + path + ": " + why),
                 std::nullopt};
  };
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return cannot_read("it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) return cannot_read(std::error_code(errno, std::generic_category()).message());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return cannot_read("read error");
  return read_guarded(text.str(), path, env);
}

Expected<YamlSettings> config_from_yaml_string(const std::string& yaml, const EnvLookup& env) {
  return read_guarded(yaml, "<yaml string>", env);
}

}  // namespace stripe_billing
