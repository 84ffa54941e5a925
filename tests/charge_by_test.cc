// Which id of a call names the Stripe customer, and whether the caller of the gateway could have
// chosen it (docs/configuration.md, "Who chooses the customer").
#include "charge_by.h"

#include <gtest/gtest.h>

#include "test_support.h"

namespace stripe_billing {
namespace {

using testing::in_seconds;

constexpr RequestUserTrust kEveryTrust[] = {RequestUserTrust::kOff, RequestUserTrust::kLookup,
                                            RequestUserTrust::kCustomerId};

UsageEvent from_request_user(const std::string& user) {
  UsageEvent event;
  event.request_user = user;
  return event;
}

// ---- The decision ---------------------------------------------------------------------------

TEST(ChargeByValueTest, EndUserIdBillsTheKeyBoundEndUserOverTheRequestsUser) {
  UsageEvent event = from_request_user("body");
  event.end_user_id = "bound";
  for (RequestUserTrust trust : kEveryTrust) {
    const CustomerKey key = charge_by_value(event, ChargeBy::kEndUserId, trust);
    EXPECT_EQ(key.value, "bound") << to_string(trust);
    EXPECT_EQ(key.origin, KeyOrigin::kApiKey);
    EXPECT_TRUE(key.trusted);
    EXPECT_EQ(key.refused, RequestUserRefusal::kNone);
  }
}

TEST(ChargeByValueTest, UserIdAndTeamIdComeFromTheKeyMetadataAndAreTrusted) {
  UsageEvent event = from_request_user("body");
  event.user_id = "u";
  event.team_id = "t";
  const CustomerKey user = charge_by_value(event, ChargeBy::kUserId, RequestUserTrust::kOff);
  const CustomerKey team = charge_by_value(event, ChargeBy::kTeamId, RequestUserTrust::kOff);
  EXPECT_EQ(user.value, "u");
  EXPECT_EQ(team.value, "t");
  EXPECT_EQ(user.origin, KeyOrigin::kApiKey);
  EXPECT_TRUE(user.trusted);
  EXPECT_TRUE(team.trusted);
}

TEST(ChargeByValueTest, UserIdAndTeamIdNeverFallBackToTheRequestsUser) {
  const UsageEvent event = from_request_user("body");
  for (RequestUserTrust trust : kEveryTrust) {
    for (ChargeBy charge_by : {ChargeBy::kUserId, ChargeBy::kTeamId}) {
      const CustomerKey key = charge_by_value(event, charge_by, trust);
      EXPECT_EQ(key.value, "") << to_string(charge_by) << " " << to_string(trust);
      EXPECT_EQ(key.origin, KeyOrigin::kNone);
    }
  }
}

TEST(ChargeByValueTest, AnEventWithoutTheFieldHasNoCustomerKey) {
  const UsageEvent event;
  for (ChargeBy charge_by : {ChargeBy::kEndUserId, ChargeBy::kUserId, ChargeBy::kTeamId}) {
    const CustomerKey key = charge_by_value(event, charge_by, RequestUserTrust::kCustomerId);
    EXPECT_EQ(key.value, "");
    EXPECT_EQ(key.origin, KeyOrigin::kNone);
    EXPECT_FALSE(key.trusted);
    EXPECT_EQ(key.refused, RequestUserRefusal::kNone);
  }
}

TEST(ChargeByValueTest, TheRequestsUserIsNotUsedByDefault) {
  const UsageEvent event = from_request_user("alice");
  const CustomerKey key = charge_by_value(event, ChargeBy::kEndUserId, RequestUserTrust::kOff);
  EXPECT_EQ(key.value, "");
  EXPECT_EQ(key.origin, KeyOrigin::kNone);
  EXPECT_EQ(key.refused, RequestUserRefusal::kNotTrusted);
}

TEST(ChargeByValueTest, WithLookupTheRequestsUserIsAnUntrustedLookupValue) {
  const UsageEvent event = from_request_user("alice");
  const CustomerKey key = charge_by_value(event, ChargeBy::kEndUserId, RequestUserTrust::kLookup);
  EXPECT_EQ(key.value, "alice");
  EXPECT_EQ(key.origin, KeyOrigin::kRequest);
  EXPECT_FALSE(key.trusted);
  EXPECT_EQ(key.refused, RequestUserRefusal::kNone);
}

TEST(ChargeByValueTest, WithLookupARequestUserThatLooksLikeACustomerIdIsRefused) {
  for (const std::string user : {"cus_Victim123", "cus_", "cus_a-b"}) {
    const UsageEvent event = from_request_user(user);
    const CustomerKey key = charge_by_value(event, ChargeBy::kEndUserId, RequestUserTrust::kLookup);
    EXPECT_EQ(key.value, "") << user;
    EXPECT_EQ(key.origin, KeyOrigin::kNone);
    EXPECT_EQ(key.refused, RequestUserRefusal::kLooksLikeCustomerId);
  }
}

TEST(ChargeByValueTest, WithCustomerIdTheRequestsUserMayNameTheCustomer) {
  const UsageEvent event = from_request_user("cus_Victim123");
  const CustomerKey key =
      charge_by_value(event, ChargeBy::kEndUserId, RequestUserTrust::kCustomerId);
  EXPECT_EQ(key.value, "cus_Victim123");
  EXPECT_EQ(key.origin, KeyOrigin::kRequest);
  EXPECT_TRUE(key.trusted);
}

TEST(ChargeByValueTest, AKeyBoundCustomerIdIsTrusted) {
  UsageEvent event;
  event.end_user_id = "cus_Bound123";
  const CustomerKey key = charge_by_value(event, ChargeBy::kEndUserId, RequestUserTrust::kOff);
  EXPECT_EQ(key.value, "cus_Bound123");
  EXPECT_TRUE(key.trusted);
}

TEST(ChargeByValueTest, TheValueIsTheEventsOwnFieldNotACopy) {
  UsageEvent event = from_request_user("body");
  event.end_user_id = "bound";
  EXPECT_EQ(charge_by_value(event, ChargeBy::kEndUserId, RequestUserTrust::kOff).value.data(),
            event.end_user_id.data());
  event.end_user_id.clear();
  EXPECT_EQ(charge_by_value(event, ChargeBy::kEndUserId, RequestUserTrust::kLookup).value.data(),
            event.request_user.data());
}

TEST(ChargeByValueTest, RefusalsHaveStableNames) {
  EXPECT_STREQ(to_string(RequestUserRefusal::kNone), "");
  EXPECT_STREQ(to_string(RequestUserRefusal::kNotTrusted), "request_user_not_trusted");
  EXPECT_STREQ(to_string(RequestUserRefusal::kLooksLikeCustomerId), "request_user_is_customer_id");
}

// ---- Through the library, against the emulator ---------------------------------------------

class WhoPaysTest : public testing::EmulatorTest {
 protected:
  WhoPaysTest() {
    victim_item_ = add_customer("victim", &victim_);
    alice_item_ = add_customer("alice");
  }

  // Bills one call of 10 tokens whose key has the end user `end_user` and whose request body
  // says `user`, under STRIPE_TRUST_REQUEST_USER=`trust` (nullopt: the default).
  StripeLoggerStats bill(std::optional<std::string> trust, const std::string& user,
                         const std::string& end_user = "") {
    Config config = EmulatorTest::config();
    config.trust_request_user = std::move(trust);
    auto logger = make_logger(config);
    UsageEvent call = event("call-1", 10);
    call.request_user = user;
    call.end_user_id = end_user;
    logger->log_success_event(call);
    EXPECT_TRUE(logger->flush(in_seconds(10)));
    return logger->stats();
  }

  std::string victim_;
  std::string victim_item_;
  std::string alice_item_;
};

TEST_F(WhoPaysTest, ByDefaultACallerCannotNameTheCustomerWhoPays) {
  const StripeLoggerStats stats = bill(std::nullopt, victim_);
  EXPECT_EQ(emulator_.total_usage(victim_item_), 0);
  EXPECT_EQ(stats.rejected.at("request_user_not_trusted"), 1u) << "parked, with why";
  EXPECT_EQ(stats.parked, 1u);
  EXPECT_EQ(count_requests("POST", "/v1/"), 0u);
}

TEST_F(WhoPaysTest, ByDefaultTheRequestsUserIsNotLookedUpEither) {
  bill(std::nullopt, "alice");
  EXPECT_EQ(emulator_.total_usage(alice_item_), 0);
  EXPECT_EQ(count_requests("GET", "/v1/customers/search"), 0u);
}

TEST_F(WhoPaysTest, WithLookupACallersCustomerIdIsNotTakenAsTheCustomer) {
  const StripeLoggerStats stats = bill("lookup", victim_);
  EXPECT_EQ(emulator_.total_usage(victim_item_), 0);
  EXPECT_EQ(stats.rejected.at("request_user_is_customer_id"), 1u) << "parked, with why";
  EXPECT_EQ(stats.parked, 1u);
}

TEST_F(WhoPaysTest, WithLookupTheRequestsUserIsFoundThroughTheCustomerMetadata) {
  bill("lookup", "alice");
  EXPECT_EQ(emulator_.total_usage(alice_item_), 10);
  EXPECT_EQ(count_requests("GET", "/v1/customers/search"), 1u);
}

TEST_F(WhoPaysTest, WithCustomerIdTheRequestsUserNamesTheCustomerDirectly) {
  bill("customer_id", victim_);
  EXPECT_EQ(emulator_.total_usage(victim_item_), 10);
  EXPECT_EQ(count_requests("GET", "/v1/customers/search"), 0u);
}

TEST_F(WhoPaysTest, TheKeyBoundEndUserPaysWhateverTheRequestSays) {
  bill("customer_id", victim_, "alice");
  EXPECT_EQ(emulator_.total_usage(alice_item_), 10);
  EXPECT_EQ(emulator_.total_usage(victim_item_), 0);
}

}  // namespace
}  // namespace stripe_billing
