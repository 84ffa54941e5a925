#include "customer_resolver.h"

#include <gtest/gtest.h>

#include "test_support.h"

namespace stripe_billing {
namespace {

class ManualClock : public Clock {
 public:
  TimePoint now() const override { return now_.load(); }
  void advance(std::chrono::seconds by) { now_ = now_.load() + by; }

 private:
  std::atomic<TimePoint> now_{std::chrono::system_clock::now()};
};

class CustomerResolverTest : public testing::EmulatorTest {
 protected:
  void SetUp() override {
    Config raw = config();
    raw.lookup_cache_ttl = "300";
    raw.lookup_miss_ttl = "30";
    raw.customer_map = "mapped-item=si_static,mapped-customer=" + mapped_customer_;
    auto finalized = finalize_config(raw);
    ASSERT_TRUE(finalized) << finalized.error().to_string();
    config_.emplace(std::move(finalized.value()));
    transport_ = make_curl_transport();
    client_.emplace(*transport_, StripeClientOptions{config_->api_base(), config_->api_key(),
                                                     config_->api_version(), config_->timeout()});
    resolver_.emplace(*client_, *config_, clock_);
  }

  std::size_t searches() const { return count_requests("GET", "/v1/customers/search"); }
  std::size_t subscription_lookups() const { return count_requests("GET", "/v1/subscriptions"); }

  std::string mapped_customer_ = emulator_.create_customer({});
  std::shared_ptr<ManualClock> clock_ = std::make_shared<ManualClock>();
  std::optional<FinalizedConfig> config_;
  std::unique_ptr<HttpTransport> transport_;
  std::optional<StripeClient> client_;
  std::optional<CustomerResolver> resolver_;
};

TEST_F(CustomerResolverTest, FindsTheItemOfTheCustomerWithTheMetadataValue) {
  std::string customer;
  const std::string item = add_customer("alice", &customer);
  add_customer("bob");
  auto target = resolver_->resolve("alice", price_);
  ASSERT_TRUE(target) << target.error().to_string();
  EXPECT_EQ(target->customer_id, customer);
  EXPECT_EQ(target->subscription_item_id, item);
}

TEST_F(CustomerResolverTest, PicksTheItemOnTheConfiguredPrice) {
  std::string customer;
  add_customer("alice", &customer);
  const std::string other_price = emulator_.create_metered_price(product_);
  emulator_.create_subscription(customer, other_price);
  auto target = resolver_->resolve("alice", price_);
  ASSERT_TRUE(target);
  for (const auto& record : emulator_.requests()) {
    if (record.path == "/v1/subscriptions") {
      EXPECT_NE(record.raw_target.find("price=" + price_), std::string::npos);
      EXPECT_NE(record.raw_target.find("status=active"), std::string::npos);
    }
  }
}

TEST_F(CustomerResolverTest, CachesAHitUntilItsTtlExpires) {
  add_customer("alice");
  ASSERT_TRUE(resolver_->resolve("alice", price_));
  clock_->advance(std::chrono::seconds(299));
  ASSERT_TRUE(resolver_->resolve("alice", price_));
  EXPECT_EQ(searches(), 1u);
  clock_->advance(std::chrono::seconds(2));
  ASSERT_TRUE(resolver_->resolve("alice", price_));
  EXPECT_EQ(searches(), 2u);
}

TEST_F(CustomerResolverTest, CachesAMissForTheShorterTtl) {
  auto first = resolver_->resolve("late-customer", price_);
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code, ErrorCode::kCustomerNotFound);
  add_customer("late-customer");
  EXPECT_FALSE(resolver_->resolve("late-customer", price_));
  EXPECT_EQ(searches(), 1u);
  clock_->advance(std::chrono::seconds(31));
  EXPECT_TRUE(resolver_->resolve("late-customer", price_));
  EXPECT_EQ(searches(), 2u);
}

TEST_F(CustomerResolverTest, DoesNotCacheANetworkFailure) {
  add_customer("alice");
  emulator_.inject({stripe_emulator::FaultKind::kStatus, 500, "/v1/customers/search", {}});
  auto failed = resolver_->resolve("alice", price_);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, ErrorCode::kStripe);
  EXPECT_TRUE(resolver_->resolve("alice", price_));
}

TEST_F(CustomerResolverTest, InvalidateLooksTheItemUpAgainButKeepsTheCustomer) {
  add_customer("alice");
  ASSERT_TRUE(resolver_->resolve("alice", price_));
  resolver_->invalidate("alice", price_);
  ASSERT_TRUE(resolver_->resolve("alice", price_));
  EXPECT_EQ(subscription_lookups(), 2u);
  EXPECT_EQ(searches(), 1u);
}

TEST_F(CustomerResolverTest, WithoutAPriceOnlyTheCustomerIsLookedUp) {
  std::string customer;
  add_customer("alice", &customer);
  auto target = resolver_->resolve("alice", "");
  ASSERT_TRUE(target) << target.error().to_string();
  EXPECT_EQ(target->customer_id, customer);
  EXPECT_EQ(target->subscription_item_id, "");
  EXPECT_EQ(subscription_lookups(), 0u);
}

TEST_F(CustomerResolverTest, EachPriceHasItsOwnItemAndOneCustomerSearch) {
  std::string customer;
  add_customer("alice", &customer);
  const std::string output_price = emulator_.create_metered_price(product_);
  const std::string output_item = emulator_.create_subscription(customer, output_price).item_id;
  auto input = resolver_->resolve("alice", price_);
  auto output = resolver_->resolve("alice", output_price);
  ASSERT_TRUE(input && output);
  EXPECT_NE(input->subscription_item_id, output->subscription_item_id);
  EXPECT_EQ(output->subscription_item_id, output_item);
  EXPECT_EQ(searches(), 1u);
}

TEST_F(CustomerResolverTest, TheStaticMapComesBeforeAnyLookup) {
  auto item = resolver_->resolve("mapped-item", price_);
  ASSERT_TRUE(item);
  EXPECT_EQ(item->subscription_item_id, "si_static");
  const std::string mapped_item = emulator_.create_subscription(mapped_customer_, price_).item_id;
  auto customer = resolver_->resolve("mapped-customer", price_);
  ASSERT_TRUE(customer) << customer.error().to_string();
  EXPECT_EQ(customer->customer_id, mapped_customer_);
  EXPECT_EQ(customer->subscription_item_id, mapped_item);
  EXPECT_EQ(searches(), 0u);
}

TEST_F(CustomerResolverTest, HostileValuesAreSearchedLiterally) {
  const std::vector<std::string> hostile = {
      "a&b=c", "../x", "50% off", "it's", "back\\slash", "a b/c", "x' OR metadata['y']:'z"};
  std::map<std::string, std::string> items;
  for (const auto& value : hostile) items[value] = add_customer(value);
  for (const auto& value : hostile) {
    auto target = resolver_->resolve(value, price_);
    ASSERT_TRUE(target) << value << ": " << target.error().to_string();
    EXPECT_EQ(target->subscription_item_id, items[value]) << value;
  }
}

TEST_F(CustomerResolverTest, RefusesKeysNoMetadataValueCanEqualWithoutARequest) {
  for (const std::string& value : {std::string(1 << 20, 'x'), std::string("caf\xff")}) {
    auto target = resolver_->resolve(value, price_);
    ASSERT_FALSE(target);
    EXPECT_EQ(target.error().code, ErrorCode::kMissingCustomer);
  }
  EXPECT_EQ(emulator_.requests().size(), 0u);
}

TEST(CustomerSearchQuery, EscapesQuotesAndBackslashes) {
  EXPECT_EQ(customer_search_query("k", "it's \\ ok"), R"(metadata['k']:'it\'s \\ ok')");
}

TEST(IsCustomerId, AcceptsOnlyCusFollowedBySafeCharacters) {
  EXPECT_TRUE(is_customer_id("cus_ABC123"));
  EXPECT_FALSE(is_customer_id("cus_"));
  EXPECT_FALSE(is_customer_id("cus_../x"));
  EXPECT_FALSE(is_customer_id("customer"));
}

// Answers every request with one body, whatever is asked.
class FixedAnswer final : public HttpTransport {
 public:
  explicit FixedAnswer(std::string body) : body_(std::move(body)) {}
  Expected<HttpResponse> send(const HttpRequest&) override { return HttpResponse{200, {}, body_}; }
  void abort_in_flight() override {}

 private:
  std::string body_;
};

TEST(CustomerResolverShapes, AWronglyShapedAnswerIsAnErrorNeverAnException) {
  Config raw;
  raw.api_key = "sk_test_resolver_00000000000000";
  raw.price_id = "price_1";
  auto config = finalize_config(raw);
  ASSERT_TRUE(config);
  const std::vector<std::string> bodies = {
      R"({"data":{"id":"cus_1"}})",
      R"({"data":"cus_1"})",
      R"({"data":[42]})",
      R"({"data":[{"id":7}]})",
      R"({"data":[{"id":"cus_1","items":"nope"}]})",
      R"({"data":[{"id":"cus_1","items":{"data":[{"id":"si_1","price":{"id":5}}]}}]})",
      R"({"data":[{"id":"cus_1","items":{"data":[{"id":3,"price":"price_1"}]}}]})",
      R"({"data":[{"id":"cus_1","items":{"data":"x"}}]})",
      R"({"data":[{"id":"cus_1","items":{"data":[{"id":"si_1","price":"price_1",)"
      R"("current_period_end":"soon"}]}}]})",
      R"({"object":"list"})",
  };
  for (const std::string& body : bodies) {
    FixedAnswer transport(body);
    StripeClient client(transport, StripeClientOptions{config->api_base(), config->api_key(),
                                                       config->api_version(), config->timeout()});
    CustomerResolver resolver(client, *config, Clock::system());
    Expected<BillingTarget> target = Error{ErrorCode::kInternal, "", std::nullopt};
    ASSERT_NO_THROW(target = resolver.resolve("alice", "price_1")) << body;
    if (!target) {
      EXPECT_TRUE(target.error().code == ErrorCode::kInvalidResponse ||
                  target.error().code == ErrorCode::kCustomerNotFound ||
                  target.error().code == ErrorCode::kSubscriptionItemNotFound)
          << body << ": " << target.error().to_string();
    }
  }
}

}  // namespace
}  // namespace stripe_billing
