// What a call's tokens are, by the type each is priced at: the provider families' rules for which
// reported count contains which, and the derivation of the billable types. Pure functions; the
// table is documented (with worked examples) in docs/token-types.md.
//
//   family     reported as                                   billable types
//   openai     prompt ⊇ cached (⊇ cache write, when an       input = prompt - cached - write,
//              OpenAI-compatible provider reports one),      cached_input = cached,
//              completion ⊇ reasoning                        cache_write = write, output
//   anthropic  prompt = input + cache read + cache write     input = prompt - read - write,
//              (as LiteLLM reports it)                       cache_read, cache_write, output
//   gemini     prompt ⊇ cached, completion ⊇ thoughts        like openai
//   bedrock    Claude models: provider_family() answers anthropic (LiteLLM reports them so);
//              others: the openai rule
//
// Invariant: the billable types sum to exactly prompt + completion tokens for kOk and
// kInconsistent; none is billed twice, none is dropped.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "stripe_billing/usage_event.h"

namespace stripe_billing {

enum class ProviderFamily { kOpenAi, kAnthropic, kGemini, kBedrock };

const char* to_string(ProviderFamily family) noexcept;  // openai, anthropic, gemini, bedrock
std::optional<ProviderFamily> provider_family_from_string(std::string_view name);

// The largest token count billable_tokens() takes (and the arithmetic's guarantee).
inline constexpr std::int64_t kMaxTokenCount = 999'999'999'999'999;

// The billable token types, in the order they are billed. The names are Stripe's token-billing
// `token_type` values and the dimension names in the outbox: never rename one.
enum class TokenType { kInput, kOutput, kCachedInput, kCacheRead, kCacheWrite };
inline constexpr std::size_t kTokenTypeCount = 5;
inline constexpr std::array<TokenType, kTokenTypeCount> kAllTokenTypes = {
    TokenType::kInput, TokenType::kOutput, TokenType::kCachedInput, TokenType::kCacheRead,
    TokenType::kCacheWrite};
const char* to_string(TokenType type) noexcept;  // input, output, cached_input, ...
std::optional<TokenType> token_type_from_string(std::string_view name);

struct ProviderGuess {
  ProviderFamily family = ProviderFamily::kOpenAi;
  bool known = false;  // false: nothing matched; the OpenAI rule applies (and is counted)
};
// From the payload's provider field when given (openai, azure, anthropic, vertex_ai, gemini,
// bedrock, ...), else from the model string (`anthropic/…`, `claude-…`, `gemini-…`,
// `bedrock/…`, `gpt-…`, `o3…`, ...).
ProviderGuess provider_family(std::string_view provider, std::string_view model);

// The counts a call reports, copied from the UsageEvent (the writer thread does the rest).
struct TokenDetails {
  std::optional<std::int64_t> prompt;
  std::optional<std::int64_t> completion;
  std::optional<std::int64_t> total;
  std::optional<std::int64_t> cache_read;
  std::optional<std::int64_t> cache_write;
  std::optional<std::int64_t> reasoning;
};
TokenDetails token_details(const UsageEvent& event);

struct BillableTokens {
  enum class Verdict {
    kOk,
    kMissingUsage,  // no prompt and no completion count
    kNegative,      // a negative count
    // The details do not fit inside the counts (cached > prompt, say): billed as plain input
    // and output, so that nothing is dropped, and counted (inconsistent_token_details).
    kInconsistent,
    kTooLarge,  // a count above kMaxTokenCount: nothing is billed
  };
  Verdict verdict = Verdict::kOk;
  std::array<std::int64_t, kTokenTypeCount> count{};  // by TokenType; zero: nothing to bill

  std::int64_t operator[](TokenType type) const noexcept {
    return count[static_cast<std::size_t>(type)];
  }
  std::int64_t sum() const noexcept;
};
// "ok", "missing_usage", "negative_quantity", "inconsistent_token_details", "quantity_too_large".
const char* to_string(BillableTokens::Verdict verdict) noexcept;

// Only input and output when the details are missing. Counts above STRIPE_MAX_QUANTITY are the
// caller's to refuse; a count above kMaxTokenCount is kTooLarge, so the arithmetic here never
// overflows. The total alone (no prompt, no completion) is kMissingUsage: it cannot be split
// into input and output, which are priced differently. Reasoning, audio and image counts never
// change the counts: they are inside completion or prompt and billed there.
BillableTokens billable_tokens(const TokenDetails& details, ProviderFamily family);

}  // namespace stripe_billing
