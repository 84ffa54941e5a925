// Priced calls: a price table (model -> USD per 1M tokens, per token type) and the exact amount
// of a call in fixed-point decimal arithmetic, never binary floating point.
//
// The file (YAML or JSON):
//   markup: "1.2"                # optional; STRIPE_PRICE_MARKUP wins when set
//   models:
//     openai/gpt-4.1: {input: "2.00", cached_input: "0.50", output: "8.00"}
//     anthropic/claude-sonnet-4.5: {input: "3", cache_read: "0.30", cache_write: "3.75",
//                                   output: "15"}
// Prices are decimal strings or numbers with at most 9 decimal places, 0 to 1,000,000. Keys are
// models as the slugs (model_slug.h) or as the gateway sends them; lookups try the raw model
// first, then its slug.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "stripe_billing/error.h"
#include "token_types.h"

namespace stripe_billing {

// A non-negative decimal with 9 fractional digits: value = nanos / 1e9.
struct Decimal {
  std::int64_t nanos = 0;
  // "2", "0.30", "3.75", "1e-3" is refused (no exponents), at most 9 decimals, no sign.
  static std::optional<Decimal> parse(std::string_view text);
  std::string to_string() const;  // shortest exact form: "0.3", "15"
};

struct ModelPrices {
  // USD per 1,000,000 tokens, by TokenType; nullopt: the table has no price for that type (a
  // call with tokens of that type is then unpriced).
  std::array<std::optional<Decimal>, kTokenTypeCount> per_million{};
};

class PriceTable {
 public:
  static Expected<PriceTable> from_file(const std::string& path);
  static Expected<PriceTable> from_text(const std::string& text, const std::string& origin);

  const ModelPrices* find(std::string_view model) const;
  std::optional<Decimal> markup() const noexcept { return markup_; }
  std::size_t size() const noexcept { return models_.size(); }

 private:
  std::map<std::string, ModelPrices, std::less<>> models_;
  std::optional<Decimal> markup_;
};

// The call's amount in micro-units of the billed unit (kMicrosPerUnit per unit):
//   sum over types of tokens × USD-per-1M / 1e6 × markup × units_per_usd, × 1e6,
// computed exactly in 128-bit integers and rounded half-up to a whole micro-unit once, at the
// end. nullopt: a type with tokens has no price (the call is unpriced), or the amount would not
// fit an int64.
std::optional<std::int64_t> priced_amount_micros(const BillableTokens& tokens,
                                                 const ModelPrices& prices, Decimal markup,
                                                 Decimal units_per_usd);

}  // namespace stripe_billing
