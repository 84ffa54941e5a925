#include "usage_record.h"

#include <gtest/gtest.h>

#include "stripe_billing/stripe_client.h"

namespace stripe_billing {
namespace {

UsageEvent tokens(std::optional<std::int64_t> prompt, std::optional<std::int64_t> completion,
                  std::optional<std::int64_t> total) {
  UsageEvent event;
  event.prompt_tokens = prompt;
  event.completion_tokens = completion;
  event.total_tokens = total;
  return event;
}

using Verdict = QuantityCheck::Verdict;

TEST(BillableQuantity, UsesTotalTokensByDefault) {
  auto check = billable_quantity(tokens(1, 2, 40), QuantitySource::kTotalTokens, 100);
  EXPECT_EQ(check.verdict, Verdict::kBill);
  EXPECT_EQ(check.value, 40);
}

TEST(BillableQuantity, AddsPromptAndCompletionWhenTotalIsMissing) {
  auto check = billable_quantity(tokens(10, 5, std::nullopt), QuantitySource::kTotalTokens, 100);
  EXPECT_EQ(check.verdict, Verdict::kBill);
  EXPECT_EQ(check.value, 15);
}

TEST(BillableQuantity, ReadsTheConfiguredSource) {
  EXPECT_EQ(billable_quantity(tokens(10, 5, 15), QuantitySource::kPromptTokens, 100).value, 10);
  EXPECT_EQ(billable_quantity(tokens(10, 5, 15), QuantitySource::kCompletionTokens, 100).value, 5);
}

TEST(BillableQuantity, ClassifiesZeroNegativeMissingAndTooLarge) {
  EXPECT_EQ(billable_quantity(tokens(0, 0, 0), QuantitySource::kTotalTokens, 100).verdict,
            Verdict::kZero);
  auto negative = billable_quantity(tokens(0, 0, -5), QuantitySource::kTotalTokens, 100);
  EXPECT_EQ(negative.verdict, Verdict::kNegative);
  EXPECT_STREQ(negative.reason(), "negative_quantity");
  auto missing =
      billable_quantity(tokens(std::nullopt, 3, std::nullopt), QuantitySource::kTotalTokens, 100);
  EXPECT_EQ(missing.verdict, Verdict::kMissingUsage);
  EXPECT_STREQ(missing.reason(), "missing_usage");
  auto large = billable_quantity(tokens(0, 0, 101), QuantitySource::kTotalTokens, 100);
  EXPECT_EQ(large.verdict, Verdict::kTooLarge);
  EXPECT_STREQ(large.reason(), "quantity_too_large");
  EXPECT_EQ(billable_quantity(tokens(0, 0, 100), QuantitySource::kTotalTokens, 100).verdict,
            Verdict::kBill);
}

TEST(BillableQuantity, DoesNotOverflowWhenAddingHugeParts) {
  auto check = billable_quantity(tokens(INT64_MAX, INT64_MAX, std::nullopt),
                                 QuantitySource::kTotalTokens, 100);
  EXPECT_EQ(check.verdict, Verdict::kMissingUsage);
}

TEST(UsageRecordRequest, HasOnlyTheParametersStripeAccepts) {
  FormFields fields = usage_record_fields(42, 1700000000);
  EXPECT_EQ(encode_form(fields), "quantity=42&timestamp=1700000000&action=increment");
}

TEST(UsageRecordRequest, PathCannotBeClimbedOrSplit) {
  EXPECT_EQ(usage_record_path("si_123"), "/v1/subscription_items/si_123/usage_records");
  EXPECT_EQ(usage_record_path("../x"), "/v1/subscription_items/%2E%2E%2Fx/usage_records");
  EXPECT_EQ(usage_record_path("a?b#c"), "/v1/subscription_items/a%3Fb%23c/usage_records");
}

TEST(HashedId, IsStableDistinctAndSafe) {
  EXPECT_EQ(hashed_id("a&b=c\r\n"), hashed_id("a&b=c\r\n"));
  EXPECT_NE(hashed_id(std::string(300, 'a')), hashed_id(std::string(301, 'a')));
  for (const std::string& text :
       {std::string("a&b=c\r\nX: 1"), std::string(10'000, 'x'), std::string("\xff\xfe")}) {
    const std::string id = hashed_id(text);
    EXPECT_EQ(id.size(), 33u);
    for (char c : id) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c))) << id;
  }
}

TEST(LogSafe, EscapesControlBytesAndTruncates) {
  EXPECT_EQ(log_safe("a\nb\"c"), "a\\x0ab\\x22c");
  const std::string out = log_safe(std::string(1000, 'x'), 10);
  EXPECT_EQ(out.rfind("xxxxxxxxxx", 0), 0u);
  EXPECT_NE(out.find("1000 bytes"), std::string::npos);
}

TEST(IsValidUtf8, AcceptsUtf8AndRejectsBrokenSequences) {
  EXPECT_TRUE(is_valid_utf8("plain ascii"));
  EXPECT_TRUE(is_valid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("\xff"));
  EXPECT_FALSE(is_valid_utf8("\xc3"));
  EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));      // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));  // surrogate
}

}  // namespace
}  // namespace stripe_billing
