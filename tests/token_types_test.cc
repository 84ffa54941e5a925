#include "token_types.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "stripe_billing/usage_event.h"

namespace stripe_billing {
namespace {

using Verdict = BillableTokens::Verdict;

std::string read_fixture(const std::string& name) {
  std::ifstream file(STRIPE_BILLING_SOURCE_DIR "/tests/fixtures/" + name);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

struct Expected5 {
  std::int64_t input, output, cached_input, cache_read, cache_write;
};

struct FixtureCase {
  const char* file;
  ProviderFamily family;
  bool known;
  Expected5 want;
  const char* why;
};

// The expected counts are derived by hand from the provider's raw usage, written out in `why`;
// the fixtures hold what LiteLLM makes of that raw usage (tests/fixtures/*.json,
// docs/token-types.md).
const FixtureCase kFixtures[] = {
    {"openai_cached_reasoning.json",
     ProviderFamily::kOpenAi,
     true,
     {86, 300, 1920, 0, 0},
     "OpenAI: prompt 2006 contains cached 1920, so input = 2006 - 1920 = 86; completion 300 "
     "contains reasoning 192, so output = 300 (reasoning not added)"},
    {"openai_streaming.json",
     ProviderFamily::kOpenAi,
     true,
     {176, 45, 1024, 0, 0},
     "OpenAI streaming: prompt 1200 - cached 1024 = 176 input; output 45"},
    {"anthropic_cache.json",
     ProviderFamily::kAnthropic,
     true,
     {50, 400, 0, 3000, 1200},
     "Anthropic raw input 50, cache write 1200, cache read 3000: LiteLLM prompt 4250 = "
     "50 + 1200 + 3000; input = 4250 - 3000 - 1200 = 50; output 400"},
    {"anthropic_streaming.json",
     ProviderFamily::kAnthropic,
     true,
     {12, 256, 0, 0, 2048},
     "Anthropic raw input 12, cache write 2048, no read: prompt 2060; input = 2060 - 2048 = 12; "
     "output 256 holds the 100 thinking tokens"},
    {"gemini_cached.json",
     ProviderFamily::kGemini,
     true,
     {2000, 1200, 8000, 0, 0},
     "Gemini promptTokenCount 10000 contains cachedContentTokenCount 8000: input 2000, "
     "cached_input 8000; completion = candidates 500 + thoughts 700 = 1200"},
    {"bedrock_claude_converse.json",
     ProviderFamily::kAnthropic,
     true,
     {30, 220, 0, 1500, 500},
     "Bedrock Converse inputTokens 30, cacheRead 1500, cacheWrite 500: prompt 2030; input = "
     "2030 - 1500 - 500 = 30; Claude on Bedrock follows the Anthropic rule"},
    {"openai_compatible_unknown.json",
     ProviderFamily::kOpenAi,
     false,
     {900, 100, 0, 0, 0},
     "unknown provider, no details: the OpenAI rule, input = prompt 900, output 100"},
    {"cache_hit.json",
     ProviderFamily::kOpenAi,
     true,
     {500, 60, 0, 0, 0},
     "a LiteLLM cache hit reports the cached response's usage: input 500, output 60 "
     "(cache_hit is the caller's to act on)"},
    {"batch_retrieve.json",
     ProviderFamily::kOpenAi,
     true,
     {40000, 12000, 0, 0, 0},
     "a retrieved batch bills its whole usage once: input 40000, output 12000"},
};

class Fixtures : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(Fixtures, ParseToBillableTokensGivesTheHandDerivedCounts) {
  const FixtureCase& c = GetParam();
  const std::string text = read_fixture(c.file);
  ASSERT_FALSE(text.empty()) << c.file;
  auto event = parse_standard_logging_payload(text);
  ASSERT_TRUE(event) << c.file << ": " << event.error().to_string();

  const ProviderGuess guess = provider_family(event->provider, event->model);
  EXPECT_EQ(guess.family, c.family) << c.file << " (" << to_string(guess.family) << ")";
  EXPECT_EQ(guess.known, c.known) << c.file;

  const TokenDetails details = token_details(*event);
  const BillableTokens tokens = billable_tokens(details, guess.family);
  EXPECT_EQ(tokens.verdict, Verdict::kOk) << c.file << ": " << to_string(tokens.verdict);
  EXPECT_EQ(tokens[TokenType::kInput], c.want.input) << c.why;
  EXPECT_EQ(tokens[TokenType::kOutput], c.want.output) << c.why;
  EXPECT_EQ(tokens[TokenType::kCachedInput], c.want.cached_input) << c.why;
  EXPECT_EQ(tokens[TokenType::kCacheRead], c.want.cache_read) << c.why;
  EXPECT_EQ(tokens[TokenType::kCacheWrite], c.want.cache_write) << c.why;
  // Nothing billed twice, nothing dropped.
  EXPECT_EQ(tokens.sum(), *event->prompt_tokens + *event->completion_tokens) << c.file;
}

INSTANTIATE_TEST_SUITE_P(Table, Fixtures, ::testing::ValuesIn(kFixtures),
                         [](const ::testing::TestParamInfo<FixtureCase>& info) {
                           std::string name = info.param.file;
                           name = name.substr(0, name.find('.'));
                           return name;
                         });

TEST(FixtureFields, CarryTheNewFields) {
  auto cache_hit = parse_standard_logging_payload(read_fixture("cache_hit.json"));
  ASSERT_TRUE(cache_hit) << cache_hit.error().to_string();
  EXPECT_TRUE(cache_hit->cache_hit);
  auto batch = parse_standard_logging_payload(read_fixture("batch_retrieve.json"));
  ASSERT_TRUE(batch) << batch.error().to_string();
  EXPECT_EQ(batch->call_type, "aretrieve_batch");
  EXPECT_FALSE(batch->cache_hit);  // null in the payload
  auto reasoning = parse_standard_logging_payload(read_fixture("openai_cached_reasoning.json"));
  ASSERT_TRUE(reasoning) << reasoning.error().to_string();
  EXPECT_EQ(reasoning->reasoning_tokens, 192);
  EXPECT_EQ(reasoning->audio_input_tokens, 0);
  EXPECT_FALSE(reasoning->image_input_tokens.has_value());  // null in the payload
  auto streaming = parse_standard_logging_payload(read_fixture("anthropic_streaming.json"));
  ASSERT_TRUE(streaming) << streaming.error().to_string();
  // litellm_call_id is empty there: call_id is the anchor.
  EXPECT_EQ(streaming->call_id, "7e1d9c3b-2a4f-4b6e-8d0c-1f2e3d4c5b6a");
  EXPECT_EQ(streaming->response_id, "msg_01StreamThinking7");
}

struct ProviderCase {
  const char* provider;
  const char* model;
  ProviderFamily family;
  bool known;
};

class ProviderDetection : public ::testing::TestWithParam<ProviderCase> {};

TEST_P(ProviderDetection, FollowsTheProviderFieldThenTheModel) {
  const ProviderCase& c = GetParam();
  const ProviderGuess guess = provider_family(c.provider, c.model);
  EXPECT_EQ(guess.family, c.family)
      << "provider '" << c.provider << "', model '" << c.model << "': " << to_string(guess.family);
  EXPECT_EQ(guess.known, c.known) << "provider '" << c.provider << "', model '" << c.model << "'";
}

INSTANTIATE_TEST_SUITE_P(
    Table, ProviderDetection,
    ::testing::Values(
        // The provider field decides.
        ProviderCase{"openai", "gpt-4o", ProviderFamily::kOpenAi, true},
        ProviderCase{"azure", "my-deployment", ProviderFamily::kOpenAi, true},
        ProviderCase{"azure_ai", "mistral-large", ProviderFamily::kOpenAi, true},
        ProviderCase{"text-completion-openai", "gpt-3.5-turbo-instruct", ProviderFamily::kOpenAi,
                     true},
        ProviderCase{"deepseek", "deepseek-chat", ProviderFamily::kOpenAi, true},
        ProviderCase{"groq", "llama-3.3-70b-versatile", ProviderFamily::kOpenAi, true},
        ProviderCase{"openrouter", "anthropic/claude-3.7-sonnet", ProviderFamily::kOpenAi, true},
        ProviderCase{"xai", "grok-3", ProviderFamily::kOpenAi, true},
        ProviderCase{"anthropic", "claude-3-5-haiku-latest", ProviderFamily::kAnthropic, true},
        ProviderCase{"ANTHROPIC", "x", ProviderFamily::kAnthropic, true},
        ProviderCase{"vertex_ai", "gemini-2.5-pro", ProviderFamily::kGemini, true},
        ProviderCase{"vertex_ai_beta", "gemini-2.0-flash", ProviderFamily::kGemini, true},
        ProviderCase{"gemini", "gemini-2.5-flash", ProviderFamily::kGemini, true},
        ProviderCase{"vertex_ai", "claude-3-5-sonnet-v2@20241022", ProviderFamily::kAnthropic,
                     true},
        ProviderCase{"bedrock", "anthropic.claude-3-7-sonnet-20250219-v1:0",
                     ProviderFamily::kAnthropic, true},
        ProviderCase{"bedrock_converse", "us.anthropic.claude-sonnet-4-20250514-v1:0",
                     ProviderFamily::kAnthropic, true},
        ProviderCase{"bedrock", "amazon.nova-pro-v1:0", ProviderFamily::kBedrock, true},
        ProviderCase{"bedrock", "meta.llama3-70b-instruct-v1:0", ProviderFamily::kBedrock, true},
        // No provider (or an unknown one): the model string decides.
        ProviderCase{"", "anthropic/claude-sonnet-4-5", ProviderFamily::kAnthropic, true},
        ProviderCase{"", "claude-opus-4-1", ProviderFamily::kAnthropic, true},
        ProviderCase{"", "gemini/gemini-2.5-flash", ProviderFamily::kGemini, true},
        ProviderCase{"", "gemini-1.5-pro", ProviderFamily::kGemini, true},
        ProviderCase{"", "vertex_ai/gemini-2.5-pro", ProviderFamily::kGemini, true},
        ProviderCase{"", "vertex_ai/claude-sonnet-4@20250514", ProviderFamily::kAnthropic, true},
        ProviderCase{"", "bedrock/anthropic.claude-3-haiku-20240307-v1:0",
                     ProviderFamily::kAnthropic, true},
        ProviderCase{"", "bedrock/amazon.titan-text-express-v1", ProviderFamily::kBedrock, true},
        ProviderCase{"", "us.anthropic.claude-3-5-haiku-20241022-v1:0", ProviderFamily::kAnthropic,
                     true},
        ProviderCase{"", "openai/gpt-4.1", ProviderFamily::kOpenAi, true},
        ProviderCase{"", "azure/gpt-4o", ProviderFamily::kOpenAi, true},
        ProviderCase{"", "gpt-4o-mini", ProviderFamily::kOpenAi, true},
        ProviderCase{"", "o1", ProviderFamily::kOpenAi, true},
        ProviderCase{"", "o3-mini-2025-01-31", ProviderFamily::kOpenAi, true},
        ProviderCase{"", "o4-mini", ProviderFamily::kOpenAi, true},
        ProviderCase{"", "chatgpt-4o-latest", ProviderFamily::kOpenAi, true},
        ProviderCase{"", "text-embedding-3-small", ProviderFamily::kOpenAi, true},
        ProviderCase{"acme_inference", "claude-3-haiku", ProviderFamily::kAnthropic, true},
        // Nothing matches: the OpenAI rule, flagged unknown.
        ProviderCase{"", "llama-3-70b", ProviderFamily::kOpenAi, false},
        ProviderCase{"acme_inference", "my-finetune", ProviderFamily::kOpenAi, false},
        ProviderCase{"", "o3x", ProviderFamily::kOpenAi, false},
        ProviderCase{"", "", ProviderFamily::kOpenAi, false}));

TokenDetails counts(std::optional<std::int64_t> prompt, std::optional<std::int64_t> completion,
                    std::optional<std::int64_t> read = std::nullopt,
                    std::optional<std::int64_t> write = std::nullopt) {
  TokenDetails details;
  details.prompt = prompt;
  details.completion = completion;
  details.cache_read = read;
  details.cache_write = write;
  return details;
}

TEST(BillableTokens, MissingUsageWhenNeitherPromptNorCompletionIsGiven) {
  TokenDetails only_total;
  only_total.total = 120;  // a total alone cannot be split into input and output
  for (const TokenDetails& details : {TokenDetails{}, only_total}) {
    const BillableTokens tokens = billable_tokens(details, ProviderFamily::kOpenAi);
    EXPECT_EQ(tokens.verdict, Verdict::kMissingUsage);
    EXPECT_EQ(tokens.sum(), 0);
  }
}

TEST(BillableTokens, AMissingHalfCountsAsZero) {
  BillableTokens tokens = billable_tokens(counts(std::nullopt, 7), ProviderFamily::kOpenAi);
  EXPECT_EQ(tokens.verdict, Verdict::kOk);
  EXPECT_EQ(tokens[TokenType::kInput], 0);
  EXPECT_EQ(tokens[TokenType::kOutput], 7);
  tokens = billable_tokens(counts(11, std::nullopt), ProviderFamily::kAnthropic);
  EXPECT_EQ(tokens.verdict, Verdict::kOk);
  EXPECT_EQ(tokens[TokenType::kInput], 11);
  EXPECT_EQ(tokens[TokenType::kOutput], 0);
}

TEST(BillableTokens, NegativeCountsAreRefused) {
  TokenDetails negative_reasoning = counts(10, 10);
  negative_reasoning.reasoning = -1;
  TokenDetails negative_total = counts(10, 10);
  negative_total.total = -20;
  for (const TokenDetails& details : {counts(-1, 10), counts(10, -1), counts(10, 10, -1),
                                      counts(10, 10, 0, -1), negative_reasoning, negative_total}) {
    const BillableTokens tokens = billable_tokens(details, ProviderFamily::kAnthropic);
    EXPECT_EQ(tokens.verdict, Verdict::kNegative);
    EXPECT_EQ(tokens.sum(), 0);
  }
}

TEST(BillableTokens, CountsAboveTheLimitAreTooLarge) {
  const std::int64_t too_big = kMaxTokenCount + 1;
  const std::int64_t max = std::numeric_limits<std::int64_t>::max();
  for (const TokenDetails& details : {counts(too_big, 0), counts(0, too_big), counts(max, max),
                                      counts(10, 10, too_big), counts(10, 10, 0, max)}) {
    const BillableTokens tokens = billable_tokens(details, ProviderFamily::kOpenAi);
    EXPECT_EQ(tokens.verdict, Verdict::kTooLarge);
    EXPECT_EQ(tokens.sum(), 0);
  }
}

TEST(BillableTokens, TheLargestCountsDoNotOverflow) {
  const std::int64_t max = kMaxTokenCount;
  BillableTokens tokens =
      billable_tokens(counts(max, max, max / 2, max / 2), ProviderFamily::kAnthropic);
  ASSERT_EQ(tokens.verdict, Verdict::kOk);
  EXPECT_EQ(tokens.sum(), 2 * max);
  EXPECT_EQ(tokens[TokenType::kInput], max - 2 * (max / 2));
  tokens = billable_tokens(counts(max, max, max, max), ProviderFamily::kOpenAi);
  EXPECT_EQ(tokens.verdict, Verdict::kInconsistent);
  EXPECT_EQ(tokens.sum(), 2 * max);
}

TEST(BillableTokens, DetailsThatDoNotFitAreBilledAsPlainInputAndOutput) {
  for (ProviderFamily family : {ProviderFamily::kOpenAi, ProviderFamily::kAnthropic,
                                ProviderFamily::kGemini, ProviderFamily::kBedrock}) {
    for (const TokenDetails& details : {counts(100, 5, 101), counts(100, 5, 60, 41),
                                        counts(100, 5, 0, 101), counts(std::nullopt, 5, 1)}) {
      const BillableTokens tokens = billable_tokens(details, family);
      EXPECT_EQ(tokens.verdict, Verdict::kInconsistent) << to_string(family);
      EXPECT_EQ(tokens[TokenType::kInput], details.prompt.value_or(0));
      EXPECT_EQ(tokens[TokenType::kOutput], 5);
      EXPECT_EQ(tokens[TokenType::kCachedInput] + tokens[TokenType::kCacheRead] +
                    tokens[TokenType::kCacheWrite],
                0);
      EXPECT_EQ(tokens.sum(), details.prompt.value_or(0) + 5);
    }
  }
}

TEST(BillableTokens, DetailsThatExactlyFillThePromptAreConsistent) {
  const BillableTokens tokens = billable_tokens(counts(100, 5, 60, 40), ProviderFamily::kAnthropic);
  EXPECT_EQ(tokens.verdict, Verdict::kOk);
  EXPECT_EQ(tokens[TokenType::kInput], 0);
  EXPECT_EQ(tokens[TokenType::kCacheRead], 60);
  EXPECT_EQ(tokens[TokenType::kCacheWrite], 40);
}

TEST(BillableTokens, TheOpenAiRuleNamesTheReadCachedInputAndKeepsAReportedWrite) {
  // Some OpenAI-compatible providers report cache_creation_input_tokens; LiteLLM's generic cost
  // calculator takes it as part of prompt_tokens (llm_cost_calc/utils.py), and so does this.
  const BillableTokens tokens =
      billable_tokens(counts(1000, 50, 600, 300), ProviderFamily::kOpenAi);
  EXPECT_EQ(tokens.verdict, Verdict::kOk);
  EXPECT_EQ(tokens[TokenType::kInput], 100);
  EXPECT_EQ(tokens[TokenType::kCachedInput], 600);
  EXPECT_EQ(tokens[TokenType::kCacheRead], 0);
  EXPECT_EQ(tokens[TokenType::kCacheWrite], 300);
  EXPECT_EQ(tokens[TokenType::kOutput], 50);
}

TEST(BillableTokens, ReasoningIsNeverAdded) {
  TokenDetails details = counts(10, 40);
  details.reasoning = 30;
  const BillableTokens tokens = billable_tokens(details, ProviderFamily::kGemini);
  EXPECT_EQ(tokens[TokenType::kOutput], 40);
  EXPECT_EQ(tokens.sum(), 50);
}

// Every combination of small counts: the sum is prompt + completion for kOk and kInconsistent.
TEST(BillableTokens, SumIsAlwaysPromptPlusCompletion) {
  for (ProviderFamily family : {ProviderFamily::kOpenAi, ProviderFamily::kAnthropic,
                                ProviderFamily::kGemini, ProviderFamily::kBedrock}) {
    for (std::int64_t prompt = 0; prompt <= 6; ++prompt) {
      for (std::int64_t read = 0; read <= 7; ++read) {
        for (std::int64_t write = 0; write <= 7; ++write) {
          const BillableTokens tokens = billable_tokens(counts(prompt, 3, read, write), family);
          ASSERT_TRUE(tokens.verdict == Verdict::kOk || tokens.verdict == Verdict::kInconsistent);
          EXPECT_EQ(tokens.verdict == Verdict::kOk, read + write <= prompt);
          EXPECT_EQ(tokens.sum(), prompt + 3);
          for (std::int64_t value : tokens.count) EXPECT_GE(value, 0);
        }
      }
    }
  }
}

TEST(TokenTypeNames, RoundTripAndRefuseUnknownNames) {
  const char* names[] = {"input", "output", "cached_input", "cache_read", "cache_write"};
  for (std::size_t i = 0; i < kTokenTypeCount; ++i) {
    EXPECT_STREQ(to_string(kAllTokenTypes[i]), names[i]);
    EXPECT_EQ(token_type_from_string(names[i]), kAllTokenTypes[i]);
  }
  for (const char* bad : {"", "Input", "reasoning", "input ", "cache"}) {
    EXPECT_FALSE(token_type_from_string(bad).has_value()) << bad;
  }
  for (ProviderFamily family : {ProviderFamily::kOpenAi, ProviderFamily::kAnthropic,
                                ProviderFamily::kGemini, ProviderFamily::kBedrock}) {
    EXPECT_EQ(provider_family_from_string(to_string(family)), family);
  }
  EXPECT_STREQ(to_string(ProviderFamily::kGemini), "gemini");
  EXPECT_FALSE(provider_family_from_string("google").has_value());
  EXPECT_STREQ(to_string(Verdict::kInconsistent), "inconsistent_token_details");
}

TEST(TokenDetailsOf, CopiesEveryCount) {
  UsageEvent event;
  event.prompt_tokens = 1;
  event.completion_tokens = 2;
  event.total_tokens = 3;
  event.cache_read_tokens = 4;
  event.cache_write_tokens = 5;
  event.reasoning_tokens = 6;
  const TokenDetails details = token_details(event);
  EXPECT_EQ(details.prompt, 1);
  EXPECT_EQ(details.completion, 2);
  EXPECT_EQ(details.total, 3);
  EXPECT_EQ(details.cache_read, 4);
  EXPECT_EQ(details.cache_write, 5);
  EXPECT_EQ(details.reasoning, 6);
}

}  // namespace
}  // namespace stripe_billing
