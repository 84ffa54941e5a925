// The reasons the library stores in the outbox and counts: one table, every one documented.
#include "reasons.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

namespace stripe_billing {
namespace {

using ::testing::HasSubstr;

TEST(Reasons, EveryNameIsUniqueAndReadsBackAsItsReason) {
  std::set<std::string> names;
  for (const ReasonInfo& info : all_reasons()) {
    EXPECT_TRUE(names.insert(info.name).second) << info.name;
    EXPECT_EQ(to_string(info.reason), std::string(info.name));
    EXPECT_EQ(reason_from_string(info.name), info.reason);
    EXPECT_NE(std::string(info.meaning), "");
  }
  EXPECT_FALSE(reason_from_string("stripe_parameter_unknown"));
}

TEST(Reasons, EveryReasonIsInTheOperatorsTable) {
  std::ifstream in(std::string(STRIPE_BILLING_SOURCE_DIR) + "/docs/operations.md");
  ASSERT_TRUE(in) << "docs/operations.md not found";
  std::stringstream docs;
  docs << in.rdbuf();
  for (const ReasonInfo& info : all_reasons()) {
    EXPECT_THAT(docs.str(), HasSubstr("`" + std::string(info.name) + "`")) << info.name;
    EXPECT_THAT(docs.str(), HasSubstr(to_string(info.kind))) << info.name;
  }
}

TEST(Reasons, StripesRefusalsAreNamedAfterItsCode) {
  StripeError error;
  error.http_status = 400;
  error.code = "parameter_invalid_integer";
  EXPECT_EQ(stripe_reason(error), "stripe_parameter_invalid_integer");
  error.code.clear();
  EXPECT_EQ(stripe_reason(error), "stripe_400");
}

}  // namespace
}  // namespace stripe_billing
