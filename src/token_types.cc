#include "token_types.h"

#include <algorithm>
#include <cctype>
#include <string>

namespace stripe_billing {
namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// `o1`, `o3-mini`, `o4-mini-2025-04-16`: the prefix followed by the end or a dash.
bool reasoning_series(std::string_view model, std::string_view prefix) {
  return starts_with(model, prefix) &&
         (model.size() == prefix.size() || model[prefix.size()] == '-');
}

bool is_claude(std::string_view model) {
  return contains(model, "claude") || contains(model, "anthropic.");
}

// LiteLLM custom_llm_provider values whose usage is OpenAI-shaped: prompt_tokens holds every
// input token, prompt_tokens_details.cached_tokens is a part of it (litellm/types/utils.py, Usage;
// DeepSeek's prompt_cache_hit_tokens is mapped to cached_tokens there too).
constexpr std::string_view kOpenAiCompatible[] = {"openai",
                                                  "azure",
                                                  "azure_ai",
                                                  "azure_text",
                                                  "text-completion-openai",
                                                  "custom_openai",
                                                  "openai_like",
                                                  "openrouter",
                                                  "deepseek",
                                                  "groq",
                                                  "mistral",
                                                  "codestral",
                                                  "together_ai",
                                                  "fireworks_ai",
                                                  "xai",
                                                  "perplexity",
                                                  "deepinfra",
                                                  "cerebras",
                                                  "sambanova",
                                                  "nvidia_nim",
                                                  "hosted_vllm",
                                                  "vllm",
                                                  "ollama",
                                                  "ollama_chat",
                                                  "lm_studio",
                                                  "litellm_proxy",
                                                  "databricks",
                                                  "dashscope",
                                                  "moonshot",
                                                  "github",
                                                  "github_copilot",
                                                  "nebius",
                                                  "novita",
                                                  "friendliai",
                                                  "volcengine",
                                                  "vercel_ai_gateway",
                                                  "chatgpt",
                                                  "zai",
                                                  "meta_llama",
                                                  "cohere_chat"};

std::optional<ProviderGuess> from_provider(std::string_view provider, std::string_view model) {
  if (provider.empty()) return std::nullopt;
  if (provider == "anthropic" || provider == "anthropic_text") {
    return ProviderGuess{ProviderFamily::kAnthropic, true};
  }
  if (provider == "vertex_ai" || provider == "vertex_ai_beta" || provider == "gemini") {
    // Claude on Vertex AI goes through LiteLLM's Anthropic transformation (vertex_ai_partner_models
    // /anthropic), so its usage reads like Anthropic's.
    if (provider != "gemini" && is_claude(model)) {
      return ProviderGuess{ProviderFamily::kAnthropic, true};
    }
    return ProviderGuess{ProviderFamily::kGemini, true};
  }
  if (provider == "bedrock" || provider == "bedrock_converse") {
    if (is_claude(model)) return ProviderGuess{ProviderFamily::kAnthropic, true};
    return ProviderGuess{ProviderFamily::kBedrock, true};
  }
  for (std::string_view known : kOpenAiCompatible) {
    if (provider == known) return ProviderGuess{ProviderFamily::kOpenAi, true};
  }
  return std::nullopt;
}

std::optional<ProviderGuess> from_model(std::string_view model) {
  if (starts_with(model, "anthropic/") || starts_with(model, "claude") ||
      starts_with(model, "anthropic.")) {
    return ProviderGuess{ProviderFamily::kAnthropic, true};
  }
  if (starts_with(model, "bedrock/")) {
    return ProviderGuess{is_claude(model) ? ProviderFamily::kAnthropic : ProviderFamily::kBedrock,
                         true};
  }
  if (starts_with(model, "vertex_ai/") || starts_with(model, "vertex_ai_beta/")) {
    return ProviderGuess{is_claude(model) ? ProviderFamily::kAnthropic : ProviderFamily::kGemini,
                         true};
  }
  if (starts_with(model, "gemini/") || starts_with(model, "gemini-") ||
      starts_with(model, "google/")) {
    return ProviderGuess{ProviderFamily::kGemini, true};
  }
  // Bedrock's cross-region ids without the bedrock/ prefix: us.anthropic.claude-…
  for (std::string_view region : {"us.", "eu.", "apac.", "global.", "jp.", "au.", "us-gov."}) {
    if (starts_with(model, region) && starts_with(model.substr(region.size()), "anthropic.")) {
      return ProviderGuess{ProviderFamily::kAnthropic, true};
    }
  }
  for (std::string_view prefix : {"openai/", "azure/", "azure_ai/", "text-completion-openai/",
                                  "gpt-", "chatgpt-", "text-embedding-", "ft:gpt-"}) {
    if (starts_with(model, prefix)) return ProviderGuess{ProviderFamily::kOpenAi, true};
  }
  for (std::string_view series : {"o1", "o3", "o4"}) {
    if (reasoning_series(model, series)) return ProviderGuess{ProviderFamily::kOpenAi, true};
  }
  return std::nullopt;
}

bool negative(const std::optional<std::int64_t>& count) { return count && *count < 0; }
bool too_large(const std::optional<std::int64_t>& count) {
  return count && *count > kMaxTokenCount;
}

}  // namespace

const char* to_string(ProviderFamily family) noexcept {
  switch (family) {
    case ProviderFamily::kOpenAi:
      return "openai";
    case ProviderFamily::kAnthropic:
      return "anthropic";
    case ProviderFamily::kGemini:
      return "gemini";
    case ProviderFamily::kBedrock:
      return "bedrock";
  }
  return "openai";
}

std::optional<ProviderFamily> provider_family_from_string(std::string_view name) {
  for (ProviderFamily family : {ProviderFamily::kOpenAi, ProviderFamily::kAnthropic,
                                ProviderFamily::kGemini, ProviderFamily::kBedrock}) {
    if (name == to_string(family)) return family;
  }
  return std::nullopt;
}

const char* to_string(TokenType type) noexcept {
  switch (type) {
    case TokenType::kInput:
      return "input";
    case TokenType::kOutput:
      return "output";
    case TokenType::kCachedInput:
      return "cached_input";
    case TokenType::kCacheRead:
      return "cache_read";
    case TokenType::kCacheWrite:
      return "cache_write";
  }
  return "input";
}

std::optional<TokenType> token_type_from_string(std::string_view name) {
  for (TokenType type : kAllTokenTypes) {
    if (name == to_string(type)) return type;
  }
  return std::nullopt;
}

const char* to_string(BillableTokens::Verdict verdict) noexcept {
  switch (verdict) {
    case BillableTokens::Verdict::kOk:
      return "ok";
    case BillableTokens::Verdict::kMissingUsage:
      return "missing_usage";
    case BillableTokens::Verdict::kNegative:
      return "negative_quantity";
    case BillableTokens::Verdict::kInconsistent:
      return "inconsistent_token_details";
    case BillableTokens::Verdict::kTooLarge:
      return "quantity_too_large";
  }
  return "ok";
}

ProviderGuess provider_family(std::string_view provider, std::string_view model) {
  const std::string p = lower(provider);
  const std::string m = lower(model);
  if (auto guess = from_provider(p, m)) return *guess;
  if (auto guess = from_model(m)) return *guess;
  return ProviderGuess{ProviderFamily::kOpenAi, false};
}

TokenDetails token_details(const UsageEvent& event) {
  TokenDetails details;
  details.prompt = event.prompt_tokens;
  details.completion = event.completion_tokens;
  details.total = event.total_tokens;
  details.cache_read = event.cache_read_tokens;
  details.cache_write = event.cache_write_tokens;
  details.reasoning = event.reasoning_tokens;
  return details;
}

std::int64_t BillableTokens::sum() const noexcept {
  std::int64_t total = 0;
  for (std::int64_t value : count) total += value;
  return total;
}

BillableTokens billable_tokens(const TokenDetails& details, ProviderFamily family) {
  using Verdict = BillableTokens::Verdict;
  BillableTokens result;
  const std::optional<std::int64_t>* all[] = {&details.prompt,      &details.completion,
                                              &details.total,       &details.cache_read,
                                              &details.cache_write, &details.reasoning};
  if (std::any_of(std::begin(all), std::end(all), [](auto* c) { return negative(*c); })) {
    result.verdict = Verdict::kNegative;
    return result;
  }
  if (std::any_of(std::begin(all), std::end(all), [](auto* c) { return too_large(*c); })) {
    result.verdict = Verdict::kTooLarge;
    return result;
  }
  if (!details.prompt && !details.completion) {
    result.verdict = Verdict::kMissingUsage;
    return result;
  }
  auto at = [&result](TokenType type) -> std::int64_t& {
    return result.count[static_cast<std::size_t>(type)];
  };
  // Every value is in [0, kMaxTokenCount]: no sum or difference below can overflow.
  const std::int64_t prompt = details.prompt.value_or(0);
  const std::int64_t completion = details.completion.value_or(0);
  const std::int64_t read = details.cache_read.value_or(0);
  const std::int64_t write = details.cache_write.value_or(0);
  at(TokenType::kOutput) = completion;  // reasoning is inside completion: never added
  if (read + write > prompt) {
    // The details do not fit inside prompt_tokens: bill what surely was used, nothing twice.
    result.verdict = Verdict::kInconsistent;
    at(TokenType::kInput) = prompt;
    return result;
  }
  // Both rules subtract the cache counts from prompt_tokens: LiteLLM folds Anthropic's (and
  // Bedrock's) cache read and write into prompt_tokens, and its generic cost calculator bills
  // prompt - cached - cache_creation as plain input for every provider.
  at(TokenType::kInput) = prompt - read - write;
  at(TokenType::kCacheWrite) = write;
  if (family == ProviderFamily::kAnthropic) {
    at(TokenType::kCacheRead) = read;
  } else {
    at(TokenType::kCachedInput) = read;
  }
  return result;
}

}  // namespace stripe_billing
