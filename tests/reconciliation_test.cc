// Reconciliation: the local ledger against Stripe's usage record summaries and meter event
// summaries, through the emulator.
#include "stripe_billing/reconciliation.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "stripe_billing/stripe_client.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using testing::in_seconds;

constexpr const char* kMeter = "llm_tokens";

class ReconciliationTest : public testing::EmulatorTest {
 protected:
  ReconciliationTest() { emulator_.create_meter(kMeter); }

  Config dual_config() const {
    Config config = EmulatorTest::config();
    config.billing_mode = "dual";
    config.meter_event_name = kMeter;
    return config;
  }

  // Bills 30 calls for alice and bob in dual mode and waits until Stripe has them all.
  void bill_calls(const Config& config) {
    auto logger = make_logger(config);
    for (int i = 0; i < 30; ++i) {
      logger->log_success_event(
          for_customer("call-" + std::to_string(i), 5 + i, i % 2 ? "bob" : "alice"));
    }
    ASSERT_TRUE(logger->shutdown(in_seconds(30)));
  }

  ReconciliationReport reconcile_today(const Config& config) {
    const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    auto finalized = finalize_config(config);
    EXPECT_TRUE(finalized);
    auto report = reconcile(*finalized, now - 3600, now + 60);
    EXPECT_TRUE(report) << (report ? "" : report.error().to_string());
    return report ? *report : ReconciliationReport{};
  }

  const ReconciliationRow* row(const ReconciliationReport& report, const std::string& kind,
                               const std::string& customer_id) const {
    for (const auto& row : report.rows) {
      if (row.kind == kind && row.customer_id == customer_id) return &row;
    }
    return nullptr;
  }
};

TEST_F(ReconciliationTest, EverythingDeliveredMatchesStripeOnBothSides) {
  std::string alice, bob;
  add_customer("alice", &alice);
  add_customer("bob", &bob);
  const Config config = dual_config();
  bill_calls(config);
  const ReconciliationReport report = reconcile_today(config);
  ASSERT_EQ(report.rows.size(), 4u);  // alice and bob, usage records and meter
  EXPECT_TRUE(report.matches());
  const auto* alice_meter = row(report, "meter", alice);
  const auto* alice_records = row(report, "usage_record", alice);
  ASSERT_TRUE(alice_meter && alice_records);
  EXPECT_EQ(alice_meter->local,
            5 + 7 + 9 + 11 + 13 + 15 + 17 + 19 + 21 + 23 + 25 + 27 + 29 + 31 + 33);
  EXPECT_EQ(alice_meter->stripe, alice_meter->local);
  EXPECT_EQ(alice_records->stripe, alice_meter->local);
  EXPECT_EQ(alice_meter->start % 60, 0);
  EXPECT_EQ(alice_meter->end % 60, 0);
}

TEST_F(ReconciliationTest, UsageStripeHasButTheLedgerDoesNotIsADifference) {
  std::string alice, bob;
  const std::string alice_item = add_customer("alice", &alice);
  add_customer("bob", &bob);
  const Config config = dual_config();
  bill_calls(config);
  // Someone else bills alice 100 more tokens on both sides.
  auto transport = make_curl_transport();
  StripeClient client(*transport, {emulator_.base_url(), Secret(testing::kEmulatorKey),
                                   kDefaultApiVersion, std::chrono::seconds(5)});
  ASSERT_TRUE(client.post_form("/v1/subscription_items/" + alice_item + "/usage_records",
                               {{"quantity", "100"}}, "extra-usage-record"));
  ASSERT_TRUE(client.post_form(
      "/v1/billing/meter_events",
      {{"event_name", kMeter}, {"payload[stripe_customer_id]", alice}, {"payload[value]", "100"}},
      "extra-meter-event"));
  const ReconciliationReport report = reconcile_today(config);
  EXPECT_FALSE(report.matches());
  EXPECT_FALSE(report.matches(99));
  EXPECT_TRUE(report.matches(100));
  EXPECT_EQ(row(report, "meter", alice)->difference(), 100);
  EXPECT_EQ(row(report, "usage_record", alice)->difference(), 100);
  EXPECT_EQ(row(report, "meter", bob)->difference(), 0);
  EXPECT_EQ(row(report, "usage_record", bob)->difference(), 0);
}

TEST_F(ReconciliationTest, AMeterMissingAtStripeIsAnErrorNamingIt) {
  add_customer("alice");
  Config config = dual_config();
  config.meter_event_name = "not_a_meter";
  bill_calls(config);
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized);
  auto report = reconcile(*finalized, 0, 4'000'000'000);
  ASSERT_FALSE(report);
  EXPECT_NE(report.error().message.find("not_a_meter"), std::string::npos);
}

TEST_F(ReconciliationTest, NothingInTheRangeIsAnEmptyReportThatMatches) {
  add_customer("alice");
  const Config config = dual_config();
  bill_calls(config);
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized);
  auto report = reconcile(*finalized, 0, 1000);
  ASSERT_TRUE(report) << report.error().to_string();
  EXPECT_TRUE(report->rows.empty());
  EXPECT_TRUE(report->matches());
}

TEST_F(ReconciliationTest, AMissingOutboxIsAnErrorAndIsNotCreated) {
  Config config = dual_config();
  config.outbox_path = dir_.file("never-written.db");
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized);
  auto report = reconcile(*finalized, 0, 1000);
  ASSERT_FALSE(report);
  EXPECT_EQ(report.error().code, ErrorCode::kStorage);
  EXPECT_FALSE(std::filesystem::exists(dir_.file("never-written.db")));
}

TEST_F(ReconciliationTest, OnlyWhatTheConfigurationBillsIsCompared) {
  std::string alice;
  add_customer("alice", &alice);
  bill_calls(dual_config());
  Config records_only = EmulatorTest::config();  // the same outbox, usage records only
  const ReconciliationReport report = reconcile_today(records_only);
  ASSERT_EQ(report.rows.size(), 1u);
  EXPECT_EQ(report.rows[0].kind, "usage_record");
  EXPECT_TRUE(report.matches());
}

// ---- Answers that are not what Stripe documents ----------------------------------------------

// Forwards every request to the emulator; a request whose URL contains `path` gets `body` back
// (status 200) instead of the emulator's answer.
class RewritingTransport final : public HttpTransport {
 public:
  RewritingTransport(std::string path, std::string body)
      : path_(std::move(path)), body_(std::move(body)) {}

  Expected<HttpResponse> send(const HttpRequest& request) override {
    Expected<HttpResponse> response = real_->send(request);
    if (response && request.url.find(path_) != std::string::npos) {
      response->status = 200;
      response->body = body_;
    }
    return response;
  }
  void abort_in_flight() override { real_->abort_in_flight(); }

 private:
  std::string path_;
  std::string body_;
  std::unique_ptr<HttpTransport> real_ = make_curl_transport();
};

struct WrongAnswer {
  const char* name;
  const char* mode;  // usage_records or meter_events: which side of the ledger is compared
  const char* path;  // the request whose answer is replaced
  const char* body;
  const char* mentions;  // what the error message must name
};

void PrintTo(const WrongAnswer& answer, std::ostream* out) { *out << answer.name; }

class WronglyShapedAnswerTest : public ReconciliationTest,
                                public ::testing::WithParamInterface<WrongAnswer> {};

TEST_P(WronglyShapedAnswerTest, IsAnInvalidResponseNamingWhatIsWrong) {
  add_customer("alice");
  Config config = EmulatorTest::config();
  config.billing_mode = GetParam().mode;
  if (config.billing_mode != "usage_records") config.meter_event_name = kMeter;
  auto logger = make_logger(config);
  logger->log_success_event(for_customer("call-1", 7));
  ASSERT_TRUE(logger->shutdown(in_seconds(30)));
  auto finalized = finalize_config(config);
  ASSERT_TRUE(finalized) << finalized.error().message;

  const Expected<ReconciliationReport> report =
      reconcile(*finalized, 0, 4'000'000'000,
                {std::make_shared<RewritingTransport>(GetParam().path, GetParam().body)});

  ASSERT_FALSE(report) << "accepted " << GetParam().body;
  EXPECT_EQ(report.error().code, ErrorCode::kInvalidResponse) << report.error().to_string();
  EXPECT_NE(report.error().message.find(GetParam().mentions), std::string::npos)
      << report.error().message;
}

constexpr const char* kSummaries = "/usage_record_summaries";
constexpr const char* kEventSummaries = "/event_summaries";
constexpr const char* kMeters = "/v1/billing/meters?";

INSTANTIATE_TEST_SUITE_P(
    Table, WronglyShapedAnswerTest,
    ::testing::Values(
        WrongAnswer{"DataNotAList", "usage_records", kSummaries,
                    R"({"object":"list","data":"nope","has_more":false})", "data"},
        WrongAnswer{"DataEntryNotAnObject", "usage_records", kSummaries,
                    R"({"object":"list","data":[5],"has_more":false})", "data"},
        WrongAnswer{"HasMoreNotABoolean", "usage_records", kSummaries,
                    R"({"object":"list","data":[],"has_more":"yes"})", "has_more"},
        WrongAnswer{"NextPageWithoutAStringId", "usage_records", kSummaries,
                    R"({"data":[{"id":7,"total_usage":1,"period":{"start":0,"end":1}}],)"
                    R"("has_more":true})",
                    "id"},
        WrongAnswer{"TotalUsageAString", "usage_records", kSummaries,
                    R"({"data":[{"id":"sis_1","total_usage":"12","period":{"start":0,)"
                    R"("end":4000000000}}],"has_more":false})",
                    "total_usage"},
        WrongAnswer{"TotalUsageBeyondAnInt64", "usage_records", kSummaries,
                    R"({"data":[{"id":"sis_1","total_usage":1e300,"period":{"start":0,)"
                    R"("end":4000000000}}],"has_more":false})",
                    "total_usage"},
        WrongAnswer{"TotalUsageNegative", "usage_records", kSummaries,
                    R"({"data":[{"id":"sis_1","total_usage":-3,"period":{"start":0,)"
                    R"("end":4000000000}}],"has_more":false})",
                    "total_usage"},
        WrongAnswer{"PeriodNotAnObject", "usage_records", kSummaries,
                    R"({"data":[{"id":"sis_1","total_usage":1,"period":"now"}],"has_more":false})",
                    "period"},
        WrongAnswer{"PeriodStartBeyondAnInt64", "usage_records", kSummaries,
                    R"({"data":[{"id":"sis_1","total_usage":1,"period":{"start":1e300,)"
                    R"("end":4000000000}}],"has_more":false})",
                    "period.start"},
        WrongAnswer{"PeriodEndAString", "usage_records", kSummaries,
                    R"({"data":[{"id":"sis_1","total_usage":1,"period":{"start":0,"end":"x"}}],)"
                    R"("has_more":false})",
                    "period.end"},
        WrongAnswer{"AggregatedValueTooLarge", "meter_events", kEventSummaries,
                    R"({"data":[{"id":"mtrusg_1","aggregated_value":1e300}],"has_more":false})",
                    "aggregated_value"},
        WrongAnswer{"AggregatedValueAString", "meter_events", kEventSummaries,
                    R"({"data":[{"id":"mtrusg_1","aggregated_value":"NaN"}],"has_more":false})",
                    "aggregated_value"},
        WrongAnswer{"AggregatedValueNegative", "meter_events", kEventSummaries,
                    R"({"data":[{"id":"mtrusg_1","aggregated_value":-5}],"has_more":false})",
                    "aggregated_value"},
        WrongAnswer{"AggregatedValueMissing", "meter_events", kEventSummaries,
                    R"({"data":[{"id":"mtrusg_1"}],"has_more":false})", "aggregated_value"},
        WrongAnswer{"MeterIdNotAString", "meter_events", kMeters,
                    R"({"data":[{"id":5,"event_name":"llm_tokens","status":"active"}],)"
                    R"("has_more":false})",
                    "id"},
        WrongAnswer{"MeterEventNameNotAString", "meter_events", kMeters,
                    R"({"data":[{"id":"mtr_1","event_name":["llm_tokens"],"status":"active"}],)"
                    R"("has_more":false})",
                    "event_name"},
        WrongAnswer{"MeterStatusNotAString", "meter_events", kMeters,
                    R"({"data":[{"id":"mtr_1","event_name":"llm_tokens","status":1}],)"
                    R"("has_more":false})",
                    "status"},
        WrongAnswer{"AnEndlessListThatRepeatsItsLastId", "meter_events", kMeters,
                    R"({"data":[{"id":"mtr_1","event_name":"llm_tokens","status":"active"}],)"
                    R"("has_more":true})",
                    "has_more"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace stripe_billing
