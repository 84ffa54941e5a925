// Model names as Stripe's token-billing rate card spells them: `provider/model` slugs such as
// `anthropic/claude-sonnet-4.5` or `openai/gpt-4.1`. Rules normalise what gateways send; an
// operator's mapping file wins over the rules. A model that maps to nothing has no slug: the
// caller parks its rows (unmapped_model) until a mapping names it.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "stripe_billing/error.h"

namespace stripe_billing {

// The rules alone: LiteLLM's provider prefixes mapped (`vertex_ai/`, `bedrock/`, `azure/`,
// `gemini/`, region and version qualifiers of Bedrock ids), the provider prefix added from the
// model family when missing; Anthropic date suffixes and `-latest` dropped and version dashes
// turned into dots (`claude-3-7-sonnet-20250219` -> `anthropic/claude-3.7-sonnet`); OpenAI
// date suffixes dropped (`gpt-4o-2024-08-06` -> `openai/gpt-4o`). nullopt: no rule knows it.
std::optional<std::string> normalize_model_slug(std::string_view model, std::string_view provider);

// The operator's mapping (model as the gateway sends it -> slug), then the rules.
class ModelSlugs {
 public:
  ModelSlugs() = default;
  explicit ModelSlugs(const std::map<std::string, std::string>& mapping)
      : mapping_(mapping.begin(), mapping.end()) {}
  // A YAML or JSON object of strings, `model: provider/slug`. Every problem (not an object, a
  // value that is not a `provider/model` slug of [a-z0-9._-/] ...) named in one kInvalidConfig
  // error with the path.
  static Expected<ModelSlugs> from_file(const std::string& path);
  static Expected<ModelSlugs> from_text(const std::string& text, const std::string& origin);

  std::optional<std::string> slug(std::string_view model, std::string_view provider) const;
  // The mapping alone: the slug the operator gave `model`, if any.
  std::optional<std::string> mapped(std::string_view model) const;
  std::size_t size() const noexcept { return mapping_.size(); }

 private:
  std::map<std::string, std::string, std::less<>> mapping_;
};

}  // namespace stripe_billing
