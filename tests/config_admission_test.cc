// The settings of admission and Stripe's webhooks: defaults, what each fills in, and the one
// message that names every problem (without ever showing the webhook secret).
#include <gtest/gtest.h>

#include "config_test_support.h"
#include "stripe_billing/config.h"

namespace stripe_billing {
namespace {

using testing::kWebhookSecret;
using testing::leaked_secret;

Config base() {
  Config config;
  config.api_key = "sk_test_emulator_0000000000000000";
  config.billing_mode = "meter_events";
  config.meter_event_name = "llm_tokens";
  return config;
}

std::string problems_of(const Config& config) {
  auto finalized = finalize_config(config);
  return finalized ? std::string() : finalized.error().message;
}

TEST(AdmissionConfig, IsOffByDefaultWithDocumentedDefaults) {
  auto finalized = finalize_config(base());
  ASSERT_TRUE(finalized) << finalized.error().message;
  const AdmissionSettings& admission = finalized->admission();
  EXPECT_EQ(admission.mode, AdmissionMode::kOff);
  EXPECT_TRUE(admission.budgets.empty());
  EXPECT_EQ(admission.period, BudgetPeriod::kMonth);
  EXPECT_EQ(admission.max_output, 4096);
  EXPECT_EQ(admission.unestimable, UnestimablePolicy::kReject);
  EXPECT_FALSE(admission.fail_open);
  EXPECT_EQ(admission.wait, std::chrono::milliseconds(250));
  EXPECT_EQ(admission.hold_ttl, std::chrono::seconds(600));
  EXPECT_FALSE(admission.overage_allowed);
  EXPECT_EQ(admission.credit_balance_ttl, std::chrono::seconds(60));
  EXPECT_TRUE(admission.webhook_secret.empty());
  EXPECT_EQ(admission.webhook_tolerance, std::chrono::seconds(300));
  EXPECT_EQ(finalized->summary().find("admission="), std::string::npos);
}

TEST(AdmissionConfig, StaticBudgetsByCustomerPlanAndStar) {
  Config config = base();
  config.admission = "static";
  config.budgets = "pro=1000000, cus_A1=5000 ,*=100";
  config.budget_period = "day";
  config.admission_max_output = "512";
  config.admission_unestimable = "reserve";
  config.admission_reserve = "2000";
  config.admission_fail = "open";
  config.admission_wait_ms = "0";
  config.hold_ttl_s = "30";
  config.overage = "allow";
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  const AdmissionSettings& admission = finalized->admission();
  EXPECT_EQ(admission.mode, AdmissionMode::kStatic);
  EXPECT_EQ(admission.budgets, (std::map<std::string, std::int64_t>{
                                   {"pro", 1'000'000}, {"cus_A1", 5000}, {"*", 100}}));
  EXPECT_EQ(admission.period, BudgetPeriod::kDay);
  EXPECT_EQ(admission.max_output, 512);
  EXPECT_EQ(admission.unestimable, UnestimablePolicy::kReserve);
  EXPECT_EQ(admission.fixed_reserve, 2000);
  EXPECT_TRUE(admission.fail_open);
  EXPECT_EQ(admission.wait, std::chrono::milliseconds(0));
  EXPECT_EQ(admission.hold_ttl, std::chrono::seconds(30));
  EXPECT_TRUE(admission.overage_allowed);
  EXPECT_NE(finalized->summary().find(" admission=static"), std::string::npos);
}

TEST(AdmissionConfig, NamesEveryProblemAtOnce) {
  Config config = base();
  config.admission = "static";  // without budgets
  config.budget_period = "week";
  config.admission_unestimable = "reserve";  // without an amount
  config.admission_fail = "maybe";
  config.hold_ttl_s = "1";
  config.overage = "forgive";
  config.admission_wait_ms = "60000";
  const std::string message = problems_of(config);
  EXPECT_NE(message.find("STRIPE_ADMISSION=static needs STRIPE_BUDGETS"), std::string::npos)
      << message;
  EXPECT_NE(message.find("STRIPE_BUDGET_PERIOD must be one of month, day"), std::string::npos);
  EXPECT_NE(message.find("STRIPE_ADMISSION_UNESTIMABLE=reserve needs STRIPE_ADMISSION_RESERVE"),
            std::string::npos);
  EXPECT_NE(message.find("STRIPE_ADMISSION_FAIL must be one of closed, open"), std::string::npos);
  EXPECT_NE(message.find("STRIPE_HOLD_TTL_S must be from 5 to 86400"), std::string::npos);
  EXPECT_NE(message.find("STRIPE_OVERAGE must be one of refuse, allow"), std::string::npos);
  EXPECT_NE(message.find("STRIPE_ADMISSION_WAIT_MS must be from 0 to 5000"), std::string::npos);
  EXPECT_NE(message.find("(7 problems)"), std::string::npos) << message;
}

TEST(AdmissionConfig, RefusesMalformedBudgets) {
  for (const char* budgets : {"pro", "=5", "pro=", "pro=-1", "pro=1.5", "pro=1,pro=2",
                              "a\x01"
                              "b=5"}) {
    Config config = base();
    config.admission = "static";
    config.budgets = budgets;
    EXPECT_NE(problems_of(config).find("STRIPE_BUDGETS"), std::string::npos) << budgets;
  }
}

TEST(AdmissionConfig, BudgetsPerTokenTypeByKeyAndType) {
  Config config = base();
  config.admission = "static";
  config.quantity = "token_types";
  config.token_budgets = "pro:output=200000, org:acme:input=5, *:cached_input=7";
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  using Typed = std::map<std::string, std::map<std::string, std::int64_t>>;
  EXPECT_EQ(finalized->admission().token_budgets, (Typed{{"pro", {{"output", 200'000}}},
                                                         {"org:acme", {{"input", 5}}},
                                                         {"*", {{"cached_input", 7}}}}))
      << "split at the last ':', so that a key may hold one";
  EXPECT_TRUE(finalized->admission().budgets.empty()) << "no budget of all units is needed";
}

TEST(AdmissionConfig, RefusesBudgetsPerTokenTypeThatCannotApply) {
  const auto problems_with = [](const char* quantity, const char* budgets,
                                const char* admission = "static") {
    Config config = base();
    config.admission = admission;
    config.quantity = quantity;
    config.token_budgets = budgets;
    return problems_of(config);
  };
  for (const char* malformed : {"pro", "pro=5", "pro:=5", ":output=5",
                                "pro:output=", "pro:output=-1", "pro:output=1,pro:output=2"}) {
    EXPECT_NE(problems_with("token_types", malformed).find("STRIPE_TOKEN_BUDGETS"),
              std::string::npos)
        << malformed;
  }
  EXPECT_NE(problems_with("token_types", "pro:reasoning=5")
                .find("\"reasoning\" is not a token type this quantity bills (input, output, "
                      "cached_input, cache_read, cache_write)"),
            std::string::npos)
      << problems_with("token_types", "pro:reasoning=5");
  EXPECT_NE(problems_with("split", "pro:cached_input=5")
                .find("is not a token type this quantity bills (input, output)"),
            std::string::npos)
      << problems_with("split", "pro:cached_input=5");
  EXPECT_TRUE(problems_with("split", "pro:input=5,pro:output=9").empty());
  EXPECT_NE(problems_with("total_tokens", "pro:input=5")
                .find("STRIPE_TOKEN_BUDGETS needs STRIPE_QUANTITY=token_types or split"),
            std::string::npos);
  EXPECT_NE(problems_with("priced", "pro:input=5", "credits").find("STRIPE_TOKEN_BUDGETS"),
            std::string::npos);
}

TEST(AdmissionConfig, CreditsAreMoneyAndNeedAMoneyQuantity) {
  Config config = base();
  config.admission = "credits";
  EXPECT_NE(problems_of(config).find("STRIPE_ADMISSION=credits needs STRIPE_QUANTITY=cost or "
                                     "priced"),
            std::string::npos);
  config.quantity = "cost";
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  EXPECT_EQ(finalized->admission().mode, AdmissionMode::kCredits);
}

TEST(AdmissionConfig, TheWebhookSecretIsTakenAsASecretAndNeverShown) {
  Config config = base();
  config.webhook_secret = kWebhookSecret;
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  EXPECT_EQ(finalized->admission().webhook_secret.reveal(), kWebhookSecret);
  EXPECT_NE(finalized->summary().find("webhooks=on"), std::string::npos);
  EXPECT_EQ(leaked_secret(finalized->summary(), {kWebhookSecret}), "");

  // Not a signing secret: refused, and the value is not quoted.
  for (const std::string& bad :
       {std::string("sk_test_") + "NotAWebhookSecret1234567890", std::string("whsec_"),
        std::string("whsec_short"), std::string(kWebhookSecret) + " trailing"}) {
    config.webhook_secret = bad;
    const std::string message = problems_of(config);
    EXPECT_NE(message.find("STRIPE_WEBHOOK_SECRET must be an endpoint's signing secret"),
              std::string::npos)
        << message;
    if (bad.size() > 8) {
      EXPECT_EQ(message.find(bad), std::string::npos) << message;
    }
    EXPECT_EQ(leaked_secret(message, {kWebhookSecret}), "") << message;
  }
}

TEST(AdmissionConfig, AWebhookSecretInAnotherSettingIsStillRefused) {
  Config config = base();
  config.budgets = std::string("pro=") + kWebhookSecret;
  const std::string message = problems_of(config);
  EXPECT_NE(message.find("STRIPE_BUDGETS holds what looks like a secret key"), std::string::npos)
      << message;
  EXPECT_EQ(leaked_secret(message, {kWebhookSecret}), "") << message;
}

}  // namespace
}  // namespace stripe_billing
