// The lookup worker's backoff, with a clock that never moves: a request that backs off is never
// tried again here, so what gets tried shows exactly what a failure holds up.
#include "lookups.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>

#include "test_support.h"

namespace stripe_billing {
namespace {

using stripe_emulator::Fault;
using stripe_emulator::FaultKind;

class FrozenClock : public Clock {
 public:
  TimePoint now() const override { return wall_; }
  std::chrono::steady_clock::time_point steady_now() const override { return steady_; }

 private:
  const TimePoint wall_ = std::chrono::system_clock::now();
  const std::chrono::steady_clock::time_point steady_ = std::chrono::steady_clock::now();
};

class LookupsTest : public testing::EmulatorTest {
 protected:
  // A worker whose answers for the URLs holding `marker` are replaced by `body`.
  void start(const std::string& marker, const std::string& body) {
    auto finalized = finalize_config(config());
    ASSERT_TRUE(finalized) << finalized.error().to_string();
    config_.emplace(std::move(finalized.value()));
    transport_ = std::make_unique<testing::ReshapingTransport>(marker, body);
    client_.emplace(*transport_, StripeClientOptions{config_->api_base(), config_->api_key(),
                                                     config_->api_version(), config_->timeout()});
    resolver_.emplace(*client_, *config_, clock_);
    lookups_.emplace(*resolver_, clock_, RetryPolicy{}, Lookups::Hooks{[this] { ++answered_; }, {}},
                     std::make_shared<spdlog::logger>(
                         "lookups_test", std::make_shared<spdlog::sinks::null_sink_mt>()));
  }

  bool answered(int n) {
    return testing::eventually([&] { return answered_.load() >= n; }, std::chrono::seconds(10));
  }

  void TearDown() override {
    if (lookups_) lookups_->stop();
  }

  std::shared_ptr<FrozenClock> clock_ = std::make_shared<FrozenClock>();
  std::optional<FinalizedConfig> config_;
  std::unique_ptr<HttpTransport> transport_;
  std::optional<StripeClient> client_;
  std::optional<CustomerResolver> resolver_;
  std::optional<Lookups> lookups_;
  std::atomic<int> answered_{0};
};

TEST_F(LookupsTest, OneCustomersWronglyShapedAnswerBacksOffThatCustomerAlone) {
  std::string broken;
  add_customer("broken", &broken);
  const std::string alice_item = add_customer("alice");
  start("customer=" + broken, R"({"object":"list","data":[{"items":"not a list"}]})");

  lookups_->request(LookupRequest{"broken", price_, false});
  ASSERT_TRUE(answered(1));
  const Lookup failed = lookups_->peek("broken", price_);
  EXPECT_EQ(failed.status, Lookup::Status::kWaiting);
  EXPECT_GT(failed.retry_at_ms, 0) << "broken's lookup backs off";

  lookups_->request(LookupRequest{"alice", price_, false});
  ASSERT_TRUE(answered(2)) << "alice's lookup is not held up by broken's backoff";
  const Lookup found = lookups_->peek("alice", price_);
  ASSERT_EQ(found.status, Lookup::Status::kFound);
  EXPECT_EQ(found.target.subscription_item_id, alice_item);
  EXPECT_GT(lookups_->peek("broken", price_).retry_at_ms, 0) << "and broken still backs off";
}

TEST_F(LookupsTest, AStripeRefusalOfOneCustomersLookupBacksOffThatCustomerAlone) {
  add_customer("alice");
  const std::string bob_item = add_customer("bob");
  start("never-in-a-url", "");
  emulator_.inject(Fault{FaultKind::kStatus, 400, "/v1/customers/search", {}}, 1);

  lookups_->request(LookupRequest{"alice", price_, false});
  ASSERT_TRUE(answered(1));
  EXPECT_GT(lookups_->peek("alice", price_).retry_at_ms, 0) << "alice's lookup backs off";
  lookups_->request(LookupRequest{"bob", price_, false});
  ASSERT_TRUE(answered(2)) << "a 400 about alice's request does not hold up bob's";
  const Lookup found = lookups_->peek("bob", price_);
  ASSERT_EQ(found.status, Lookup::Status::kFound);
  EXPECT_EQ(found.target.subscription_item_id, bob_item);
}

TEST_F(LookupsTest, AFailingServiceBacksOffEveryLookupOfThePrice) {
  add_customer("alice");
  add_customer("bob");
  start("never-in-a-url", "");
  emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/customers/search", {}}, 1'000'000);

  lookups_->request(LookupRequest{"alice", price_, false});
  ASSERT_TRUE(answered(1));
  const std::size_t searches = count_requests("GET", "/v1/customers/search");
  lookups_->request(LookupRequest{"bob", price_, false});
  EXPECT_GT(lookups_->peek("bob", price_).retry_at_ms, 0)
      << "bob waits for the service's backoff, without a request of his own";
  lookups_->hurry();  // a drain: the backoff is over at once
  ASSERT_TRUE(answered(2));
  EXPECT_EQ(count_requests("GET", "/v1/customers/search"), searches + 1);
}

}  // namespace
}  // namespace stripe_billing
