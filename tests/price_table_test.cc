#include "price_table.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <limits>
#include <string>

#include "temp_dir.h"
#include "usage_record.h"  // kMicrosPerUnit

namespace stripe_billing {
namespace {

Decimal dec(const char* text) {
  const std::optional<Decimal> value = Decimal::parse(text);
  EXPECT_TRUE(value.has_value()) << text;
  return value.value_or(Decimal{});
}

BillableTokens tokens_of(std::int64_t input, std::int64_t output, std::int64_t cached_input,
                         std::int64_t cache_read, std::int64_t cache_write) {
  BillableTokens tokens;
  tokens.count = {input, output, cached_input, cache_read, cache_write};
  return tokens;
}

ModelPrices prices_of(std::optional<const char*> input, std::optional<const char*> output,
                      std::optional<const char*> cached_input = std::nullopt,
                      std::optional<const char*> cache_read = std::nullopt,
                      std::optional<const char*> cache_write = std::nullopt) {
  ModelPrices prices;
  const std::optional<const char*> all[] = {input, output, cached_input, cache_read, cache_write};
  for (std::size_t i = 0; i < kTokenTypeCount; ++i) {
    if (all[i]) prices.per_million[i] = dec(*all[i]);
  }
  return prices;
}

TEST(DecimalParse, ReadsExactDecimals) {
  EXPECT_EQ(dec("2").nanos, 2'000'000'000);
  EXPECT_EQ(dec("0.30").nanos, 300'000'000);
  EXPECT_EQ(dec("3.75").nanos, 3'750'000'000);
  EXPECT_EQ(dec("0.000000001").nanos, 1);
  EXPECT_EQ(dec("0").nanos, 0);
  EXPECT_EQ(dec("007.5").nanos, 7'500'000'000);
  EXPECT_EQ(dec("1000000").nanos, 1'000'000'000'000'000);
  EXPECT_EQ(dec("999999.999999999").nanos, 999'999'999'999'999);
}

TEST(DecimalParse, RefusesAnythingElse) {
  for (const char* bad : {"",
                          "-1",
                          "+1",
                          "1e-3",
                          "1E3",
                          ".5",
                          "1.",
                          "1.0000000001",
                          "1,5",
                          " 1",
                          "1 ",
                          "0x10",
                          "1000000.000000001",
                          "1000001",
                          "99999999999999999999999",
                          "inf",
                          "nan",
                          "1..2",
                          "1.2.3",
                          "١"}) {
    EXPECT_FALSE(Decimal::parse(bad).has_value()) << bad;
  }
}

TEST(DecimalToString, IsTheShortestExactForm) {
  EXPECT_EQ(dec("0.30").to_string(), "0.3");
  EXPECT_EQ(dec("15").to_string(), "15");
  EXPECT_EQ(dec("15.000").to_string(), "15");
  EXPECT_EQ(dec("0.000000001").to_string(), "0.000000001");
  EXPECT_EQ(dec("3.75").to_string(), "3.75");
  EXPECT_EQ(dec("1000000").to_string(), "1000000");
  for (const char* text : {"0.1", "2.5", "123456.789012345", "0"}) {
    EXPECT_EQ(dec(text).to_string(), text);
  }
}

// The brief's example: 1,234 input tokens at $3/1M, 567 cache_read at $0.30/1M, 89 output at
// $15/1M, markup 1.2, billed in cents (100 units per USD).
//   USD      = (1234 × 3 + 567 × 0.30 + 89 × 15) / 1,000,000
//            = (3702 + 170.1 + 1335) / 1,000,000 = 5207.1 / 1,000,000 = 0.0052071
//   × 1.2    = 0.00624852 USD
//   × 100    = 0.624852 cents = 624,852 micro-cents (exact: no rounding)
TEST(PricedAmount, WorkedExampleInCents) {
  const BillableTokens tokens = tokens_of(1234, 89, 0, 567, 0);
  const ModelPrices prices = prices_of("3", "15", std::nullopt, "0.30");
  const auto micros = priced_amount_micros(tokens, prices, dec("1.2"), dec("100"));
  ASSERT_TRUE(micros.has_value());
  EXPECT_EQ(*micros, 624'852);

  // Independently, in integers: prices in hundredths of a USD per 1M tokens (300, 30, 1500),
  // so Σ tokens × price is in 10^-8 USD; × 12 (markup 1.2 = 12/10) is in 10^-9 USD; × 100
  // cents per USD is in 10^-9 cents; / 1000 is micro-cents.
  const std::int64_t hundredths = 1234 * 300 + 567 * 30 + 89 * 1500;  // 520,710
  const std::int64_t nano_cents = hundredths * 12 * 100;              // 624,852,000
  ASSERT_EQ(nano_cents % 1000, 0);
  EXPECT_EQ(*micros, nano_cents / 1000);
  EXPECT_EQ(*micros, 624'852);  // and the hand-derived constant above
}

// 7 tokens at $0.15/1M, markup 1.1, in USD: 7 × 0.15 = 1.05 USD per 1M → 1.05 micro-USD,
// × 1.1 = 1.155 micro-USD: rounded once, half-up, to 1. Rounding each step would differ
// nowhere here, but rounding per type would (see the next test).
TEST(PricedAmount, RoundsOnceAtTheEnd) {
  EXPECT_EQ(
      priced_amount_micros(tokens_of(7, 0, 0, 0, 0), prices_of("0.15", "0"), dec("1.1"), dec("1")),
      1);
  // Two types of 0.4 micro-units each: 0.8 in all, rounded once to 1 (per type: 0 + 0 = 0).
  EXPECT_EQ(
      priced_amount_micros(tokens_of(4, 4, 0, 0, 0), prices_of("0.1", "0.1"), dec("1"), dec("1")),
      1);
}

TEST(PricedAmount, HalfRoundsUp) {
  // 1 token at $0.5/1M in USD = 0.5 micro-USD → 1; at $0.499999999/1M → 0.499999999 → 0.
  EXPECT_EQ(
      priced_amount_micros(tokens_of(1, 0, 0, 0, 0), prices_of("0.5", "1"), dec("1"), dec("1")), 1);
  EXPECT_EQ(priced_amount_micros(tokens_of(1, 0, 0, 0, 0), prices_of("0.499999999", "1"), dec("1"),
                                 dec("1")),
            0);
  // 3 tokens at $0.5/1M = 1.5 micro-USD → 2.
  EXPECT_EQ(
      priced_amount_micros(tokens_of(3, 0, 0, 0, 0), prices_of("0.5", "1"), dec("1"), dec("1")), 2);
}

TEST(PricedAmount, EveryTypeCounts) {
  // 1M tokens of each type at 1, 2, 3, 4, 5 USD per 1M, markup 1, USD: 15 USD = 15,000,000 µ.
  const auto micros =
      priced_amount_micros(tokens_of(1'000'000, 1'000'000, 1'000'000, 1'000'000, 1'000'000),
                           prices_of("1", "2", "3", "4", "5"), dec("1"), dec("1"));
  EXPECT_EQ(micros, 15 * kMicrosPerUnit);
}

TEST(PricedAmount, UnpricedWhenATypeWithTokensHasNoPrice) {
  const ModelPrices prices = prices_of("3", "15");  // no cache_read price
  EXPECT_FALSE(
      priced_amount_micros(tokens_of(10, 10, 0, 1, 0), prices, dec("1"), dec("100")).has_value());
  // No tokens of that type: priced.
  EXPECT_EQ(priced_amount_micros(tokens_of(1'000'000, 0, 0, 0, 0), prices, dec("1"), dec("100")),
            300 * kMicrosPerUnit);
}

TEST(PricedAmount, NulloptWhenTheAmountDoesNotFitAnInt64) {
  const std::int64_t max_tokens = kMaxTokenCount;
  // 10^15 tokens at $1,000,000/1M = 10^15 USD; × markup 10^6 × 10^6 units = 10^27 units: no.
  EXPECT_FALSE(priced_amount_micros(tokens_of(max_tokens, 0, 0, 0, 0), prices_of("1000000", "1"),
                                    dec("1000000"), dec("1000000"))
                   .has_value());
  const std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
  EXPECT_FALSE(
      priced_amount_micros(tokens_of(int64_max, int64_max, int64_max, int64_max, int64_max),
                           prices_of("1000000", "1000000", "1000000", "1000000", "1000000"),
                           dec("1000000"), dec("1000000"))
          .has_value());
  // Just fits: 9,223,372,036,854 tokens at $1/1M in USD = 9,223,372.036854 USD
  // = 9,223,372,036,854 micro-USD.
  EXPECT_EQ(priced_amount_micros(tokens_of(9'223'372'036'854, 0, 0, 0, 0), prices_of("1", "1"),
                                 dec("1"), dec("1")),
            9'223'372'036'854);
  // The largest int64 amount exactly: int64_max tokens at $1/1M = int64_max micro-USD.
  EXPECT_EQ(priced_amount_micros(tokens_of(int64_max, 0, 0, 0, 0), prices_of("1", "1"), dec("1"),
                                 dec("1")),
            int64_max);
  // One more micro-unit's worth does not fit.
  EXPECT_FALSE(priced_amount_micros(tokens_of(int64_max, 1, 0, 0, 0), prices_of("1", "1"), dec("1"),
                                    dec("1"))
                   .has_value());
}

TEST(PricedAmount, RefusesNegativeCounts) {
  EXPECT_FALSE(
      priced_amount_micros(tokens_of(-1, 0, 0, 0, 0), prices_of("1", "1"), dec("1"), dec("1"))
          .has_value());
}

TEST(PricedAmount, ZeroMarkupOrUnitsIsZero) {
  EXPECT_EQ(priced_amount_micros(tokens_of(1000, 1000, 0, 0, 0), prices_of("1", "1"), dec("0"),
                                 dec("100")),
            0);
}

TEST(PriceTableText, ReadsTheDocumentedFormat) {
  auto table = PriceTable::from_text(R"(
markup: "1.2"
models:
  openai/gpt-4.1: {input: "2.00", cached_input: "0.50", output: "8.00"}
  anthropic/claude-sonnet-4.5: {input: "3", cache_read: "0.30", cache_write: "3.75",
                                output: "15"}
  gpt-4o-2024-08-06: {input: 2.5, output: 10}
)",
                                     "prices.yaml");
  ASSERT_TRUE(table) << table.error().to_string();
  EXPECT_EQ(table->size(), 3u);
  ASSERT_TRUE(table->markup().has_value());
  EXPECT_EQ(table->markup()->nanos, 1'200'000'000);
  const ModelPrices* claude = table->find("anthropic/claude-sonnet-4.5");
  ASSERT_NE(claude, nullptr);
  EXPECT_EQ(claude->per_million[static_cast<std::size_t>(TokenType::kCacheWrite)]->nanos,
            3'750'000'000);
  EXPECT_FALSE(claude->per_million[static_cast<std::size_t>(TokenType::kCachedInput)]);
  // Numbers are read from their text, exactly (2.5 is never a binary float here).
  const ModelPrices* raw = table->find("gpt-4o-2024-08-06");
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(raw->per_million[static_cast<std::size_t>(TokenType::kInput)]->nanos, 2'500'000'000);
  // find is exact.
  EXPECT_EQ(table->find("openai/gpt-4.1-mini"), nullptr);
  EXPECT_EQ(table->find("OPENAI/GPT-4.1"), nullptr);
  EXPECT_NE(table->find("openai/gpt-4.1"), nullptr);
}

TEST(PriceTableText, ReadsJsonWithoutMarkup) {
  auto table = PriceTable::from_text(
      R"({"models": {"openai/gpt-4o": {"input": "2.5", "output": "10", "cached_input": 1.25}}})",
      "prices.json");
  ASSERT_TRUE(table) << table.error().to_string();
  EXPECT_FALSE(table->markup().has_value());
  const ModelPrices* gpt = table->find("openai/gpt-4o");
  ASSERT_NE(gpt, nullptr);
  EXPECT_EQ(gpt->per_million[static_cast<std::size_t>(TokenType::kCachedInput)]->nanos,
            1'250'000'000);
}

TEST(PriceTableText, NamesEveryProblemInOneError) {
  auto table = PriceTable::from_text(R"(
markup: -1
currency: usd
models:
  a/one: {input: "3", reasoning: "1"}
  a/two: {input: "1e-3", output: "-2"}
  a/three: "3 dollars"
  a/four: {}
  a/one: {input: "3"}
  a/five: {input: "1", input: "2"}
)",
                                     "bad-prices.yaml");
  ASSERT_FALSE(table);
  EXPECT_EQ(table.error().code, ErrorCode::kInvalidConfig);
  const std::string& message = table.error().message;
  for (const char* part :
       {"bad-prices.yaml", "markup", "'currency'", "unknown token type 'reasoning'",
        "models.'a/two'.input", "'1e-3'", "models.'a/two'.output", "models.'a/three'",
        "models.'a/four'", "models.'a/one' appears twice", "models.'a/five'.input appears twice",
        "line 2", "line 5"}) {
    EXPECT_NE(message.find(part), std::string::npos) << part << " not in: " << message;
  }
}

TEST(PriceTableText, RefusesWhatIsNotAPriceTable) {
  for (const char* text : {"", "[1]", "models: [1, 2]", "markup: 1.2", "{bad", "models: {a/b: [1]}",
                           "markup: 0\n"
                           "models: {}"}) {
    auto table = PriceTable::from_text(text, "p.yaml");
    ASSERT_FALSE(table) << text;
    EXPECT_EQ(table.error().code, ErrorCode::kInvalidConfig);
    EXPECT_NE(table.error().message.find("p.yaml"), std::string::npos) << table.error().message;
  }
}

TEST(PriceTableText, AnEmptyModelsObjectIsAnEmptyTable) {
  auto table = PriceTable::from_text("models: {}", "p.yaml");
  ASSERT_TRUE(table) << table.error().to_string();
  EXPECT_EQ(table->size(), 0u);
}

TEST(PriceTableFile, ReadsAFileAndNamesAMissingOne) {
  testing::TempDir dir;
  const std::string path = dir.file("prices.yaml");
  {
    std::ofstream out(path);
    out << "models:\n  openai/gpt-4.1: {input: \"2\", output: \"8\"}\n";
  }
  auto table = PriceTable::from_file(path);
  ASSERT_TRUE(table) << table.error().to_string();
  ASSERT_NE(table->find("openai/gpt-4.1"), nullptr);

  auto missing = PriceTable::from_file(dir.file("missing.yaml"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kInvalidConfig);
  EXPECT_NE(missing.error().message.find("missing.yaml"), std::string::npos);
}

// From a table to an amount, as a caller does it: parse, find, price.
TEST(PriceTableFile, PricesACallFromTheTable) {
  auto table = PriceTable::from_text(R"(
markup: "1.2"
models:
  anthropic/claude-sonnet-4.5: {input: "3", cache_read: "0.30", cache_write: "3.75", output: "15"}
)",
                                     "p.yaml");
  ASSERT_TRUE(table) << table.error().to_string();
  const ModelPrices* prices = table->find("anthropic/claude-sonnet-4.5");
  ASSERT_NE(prices, nullptr);
  // 1,000 input, 2,000 cache read, 400 cache write, 100 output, markup 1.2, cents:
  //   (1000 × 3 + 2000 × 0.30 + 400 × 3.75 + 100 × 15) / 10^6 = (3000 + 600 + 1500 + 1500) / 10^6
  //   = 6600 / 10^6 = 0.0066 USD; × 1.2 = 0.00792 USD = 0.792 cents = 792,000 micro-cents.
  EXPECT_EQ(priced_amount_micros(tokens_of(1000, 100, 0, 2000, 400), *prices, *table->markup(),
                                 dec("100")),
            792'000);
}

}  // namespace
}  // namespace stripe_billing
