#include "model_slug.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "temp_dir.h"

namespace stripe_billing {
namespace {

struct SlugCase {
  const char* model;
  const char* provider;
  const char* slug;  // nullptr: no rule knows it
};

class Rules : public ::testing::TestWithParam<SlugCase> {};

TEST_P(Rules, NormaliseWhatGatewaysSend) {
  const SlugCase& c = GetParam();
  const std::optional<std::string> slug = normalize_model_slug(c.model, c.provider);
  if (c.slug == nullptr) {
    EXPECT_FALSE(slug.has_value()) << c.model << " gave " << slug.value_or("");
  } else {
    EXPECT_EQ(slug.value_or("(none)"), c.slug) << c.model;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, Rules,
    ::testing::Values(
        // Anthropic: dates and -latest dropped, version dashes between single digits to dots.
        SlugCase{"claude-3-7-sonnet-20250219", "", "anthropic/claude-3.7-sonnet"},
        SlugCase{"anthropic/claude-sonnet-4-5-20250929", "", "anthropic/claude-sonnet-4.5"},
        SlugCase{"claude-3-5-haiku-latest", "", "anthropic/claude-3.5-haiku"},
        SlugCase{"claude-opus-4-1", "", "anthropic/claude-opus-4.1"},
        SlugCase{"claude-opus-4-1-20250805", "anthropic", "anthropic/claude-opus-4.1"},
        SlugCase{"claude-sonnet-4-20250514", "", "anthropic/claude-sonnet-4"},
        SlugCase{"claude-3-haiku-20240307", "", "anthropic/claude-3-haiku"},
        SlugCase{"Claude-3-7-Sonnet-20250219", "", "anthropic/claude-3.7-sonnet"},
        SlugCase{"anthropic/claude-sonnet-4.5", "", "anthropic/claude-sonnet-4.5"},
        // OpenAI: dashed dates dropped, names kept.
        SlugCase{"gpt-4o-2024-08-06", "", "openai/gpt-4o"},
        SlugCase{"openai/gpt-4.1", "", "openai/gpt-4.1"},
        SlugCase{"gpt-4.1-mini", "", "openai/gpt-4.1-mini"},
        SlugCase{"o3-mini-2025-01-31", "", "openai/o3-mini"}, SlugCase{"o1", "openai", "openai/o1"},
        SlugCase{"azure/gpt-4o", "", "openai/gpt-4o"}, SlugCase{"gpt-4o", "azure", "openai/gpt-4o"},
        SlugCase{"chatgpt-4o-latest", "", "openai/chatgpt-4o"},
        SlugCase{"text-embedding-3-large", "", "openai/text-embedding-3-large"},
        SlugCase{"gpt-3.5-turbo-0125", "", "openai/gpt-3.5-turbo-0125"},
        // Google.
        SlugCase{"vertex_ai/gemini-2.5-pro", "", "google/gemini-2.5-pro"},
        SlugCase{"gemini/gemini-2.5-flash", "", "google/gemini-2.5-flash"},
        SlugCase{"gemini-2.0-flash-001", "vertex_ai", "google/gemini-2.0-flash-001"},
        // Bedrock and Vertex AI spellings of Claude.
        SlugCase{"bedrock/anthropic.claude-3-7-sonnet-20250219-v1:0", "",
                 "anthropic/claude-3.7-sonnet"},
        SlugCase{"bedrock/us.anthropic.claude-sonnet-4-20250514-v1:0", "",
                 "anthropic/claude-sonnet-4"},
        SlugCase{"bedrock/converse/eu.anthropic.claude-3-5-haiku-20241022-v1:0", "",
                 "anthropic/claude-3.5-haiku"},
        SlugCase{"us.anthropic.claude-3-7-sonnet-20250219-v1:0", "bedrock",
                 "anthropic/claude-3.7-sonnet"},
        SlugCase{"anthropic.claude-3-5-sonnet-20241022-v2:0", "bedrock",
                 "anthropic/claude-3.5-sonnet"},
        SlugCase{"vertex_ai/claude-3-5-sonnet-v2@20241022", "", "anthropic/claude-3.5-sonnet"},
        SlugCase{"vertex_ai/claude-sonnet-4@20250514", "", "anthropic/claude-sonnet-4"},
        SlugCase{"claude-opus-4-1@20250805", "vertex_ai", "anthropic/claude-opus-4.1"},
        // Nothing knows these.
        SlugCase{"my-finetune", "", nullptr}, SlugCase{"llama-3-70b", "", nullptr},
        SlugCase{"meta-llama/llama-3-70b", "", nullptr},
        SlugCase{"bedrock/amazon.nova-pro-v1:0", "", nullptr},
        SlugCase{"azure/my-deployment", "", nullptr},
        SlugCase{"ft:gpt-4o-mini:acme::abc123", "", nullptr}, SlugCase{"gemini", "", nullptr},
        SlugCase{"openai/", "", nullptr}, SlugCase{"", "", nullptr}, SlugCase{"../x", "", nullptr},
        SlugCase{"openai/../gpt-4o", "", nullptr}, SlugCase{"openai//gpt-4o", "", nullptr},
        SlugCase{"gpt 4o", "", nullptr}, SlugCase{"gpt-4o\n", "", nullptr},
        SlugCase{"claude-3-7-sonnet@bad", "", nullptr}, SlugCase{"gpt-4o\xc3\xa9", "", nullptr},
        SlugCase{"claude\xff\xfe", "", nullptr}));

TEST(RuleEdges, NeverTouchDatesOrMultiDigitNumbers) {
  // Only a dash between two lone digits becomes a dot: 3-7 yes, 10-2 no, dates no.
  EXPECT_EQ(normalize_model_slug("claude-10-2-sonnet", ""), "anthropic/claude-10-2-sonnet");
  EXPECT_EQ(normalize_model_slug("claude-3-70-x", ""), "anthropic/claude-3-70-x");
  EXPECT_EQ(normalize_model_slug("claude-2025-01-31", ""), "anthropic/claude-2025-01-31");
  EXPECT_EQ(normalize_model_slug("gpt-4-1106-preview", ""), "openai/gpt-4-1106-preview");
}

TEST(RuleEdges, SurviveHostileInput) {
  const std::string huge(10 * 1024 * 1024, 'a');
  EXPECT_FALSE(normalize_model_slug(huge, "").has_value());
  EXPECT_FALSE(normalize_model_slug("claude-" + huge, "").has_value());
  std::string every_byte;
  for (int c = 0; c < 256; ++c) every_byte.push_back(static_cast<char>(c));
  EXPECT_FALSE(normalize_model_slug(every_byte, "").has_value());
  EXPECT_FALSE(normalize_model_slug(std::string("gpt-4o\0x", 8), "").has_value());
  EXPECT_FALSE(normalize_model_slug(std::string(300, '/'), "").has_value());
}

TEST(Mapping, WinsOverTheRules) {
  auto slugs = ModelSlugs::from_text(R"(
claude-3-7-sonnet-20250219: anthropic/claude-3.7-sonnet-thinking
my-finetune: openai/gpt-4o-mini
)",
                                     "mapping.yaml");
  ASSERT_TRUE(slugs) << slugs.error().to_string();
  EXPECT_EQ(slugs->size(), 2u);
  EXPECT_EQ(slugs->slug("claude-3-7-sonnet-20250219", ""), "anthropic/claude-3.7-sonnet-thinking");
  EXPECT_EQ(slugs->slug("my-finetune", ""), "openai/gpt-4o-mini");
  // Not in the mapping: the rules.
  EXPECT_EQ(slugs->slug("gpt-4o-2024-08-06", ""), "openai/gpt-4o");
  EXPECT_FALSE(slugs->slug("llama-3-70b", "").has_value());
}

TEST(Mapping, ReadsJsonToo) {
  auto slugs = ModelSlugs::from_text(
      R"({"azure/prod-gpt": "openai/gpt-4.1", "x": "meta/llama-3/70b"})", "mapping.json");
  ASSERT_TRUE(slugs) << slugs.error().to_string();
  EXPECT_EQ(slugs->slug("azure/prod-gpt", "azure"), "openai/gpt-4.1");
  EXPECT_EQ(slugs->slug("x", ""), "meta/llama-3/70b");
}

TEST(Mapping, AnEmptyObjectIsNoMapping) {
  auto slugs = ModelSlugs::from_text("{}", "mapping.json");
  ASSERT_TRUE(slugs) << slugs.error().to_string();
  EXPECT_EQ(slugs->size(), 0u);
  EXPECT_EQ(slugs->slug("gpt-4o", ""), "openai/gpt-4o");
}

TEST(Mapping, RefusesAnInvalidFileNamingEveryProblem) {
  auto slugs = ModelSlugs::from_text(R"(
good: openai/gpt-4o
no-provider: gpt-4o
upper: OpenAI/GPT-4o
dotdot: openai/../etc
list: [openai/gpt-4o]
good: openai/gpt-4o-mini
)",
                                     "bad.yaml");
  ASSERT_FALSE(slugs);
  EXPECT_EQ(slugs.error().code, ErrorCode::kInvalidConfig);
  const std::string& message = slugs.error().message;
  for (const char* part : {"bad.yaml", "'no-provider'", "'upper'", "'dotdot'", "'list'",
                           "'good' appears twice", "line 3", "line 7"}) {
    EXPECT_NE(message.find(part), std::string::npos) << part << " not in: " << message;
  }
}

TEST(Mapping, RefusesWhatIsNotAnObject) {
  for (const char* text : {"", "[1, 2]", "just text", "{unclosed", "null"}) {
    auto slugs = ModelSlugs::from_text(text, "m.yaml");
    ASSERT_FALSE(slugs) << text;
    EXPECT_EQ(slugs.error().code, ErrorCode::kInvalidConfig);
    EXPECT_NE(slugs.error().message.find("m.yaml"), std::string::npos) << slugs.error().message;
  }
}

TEST(Mapping, ErrorsNeverQuoteAHugeKeyWhole) {
  const std::string key(100000, 'k');
  auto slugs = ModelSlugs::from_text(key + ": not-a-slug\n", "m.yaml");
  ASSERT_FALSE(slugs);
  EXPECT_LT(slugs.error().message.size(), 1000u);
}

TEST(Mapping, FromFileReadsAndNamesThePath) {
  testing::TempDir dir;
  const std::string path = dir.file("slugs.yaml");
  {
    std::ofstream out(path);
    out << "my-model: acme/my-model-v1\n";
  }
  auto slugs = ModelSlugs::from_file(path);
  ASSERT_TRUE(slugs) << slugs.error().to_string();
  EXPECT_EQ(slugs->slug("my-model", ""), "acme/my-model-v1");

  auto missing = ModelSlugs::from_file(dir.file("nope.yaml"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kInvalidConfig);
  EXPECT_NE(missing.error().message.find("nope.yaml"), std::string::npos);
}

}  // namespace
}  // namespace stripe_billing
