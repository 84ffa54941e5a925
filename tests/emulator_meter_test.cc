// The Stripe emulator's billing meters, exercised over real HTTP on loopback: meters, v1 meter
// events with their synchronous and asynchronous validation, Stripe's one-request-at-a-time rule
// per customer and meter, event summaries, cancellations, and the v2 meter event session and
// stream, under the same faults as every other request.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "stripe_emulator/emulator.h"

namespace {

using nlohmann::json;
using std::chrono::seconds;
using stripe_emulator::Emulator;
using stripe_emulator::EmulatorOptions;
using stripe_emulator::Fault;
using stripe_emulator::FaultKind;
using Totals = std::map<std::string, double>;

constexpr char kApiKey[] = "sk_test_emulator_0000000000000000";
constexpr char kForm[] = "application/x-www-form-urlencoded";
constexpr char kJson[] = "application/json";
constexpr char kEventName[] = "llm_tokens";
constexpr std::int64_t kHour = 3'600;
constexpr std::int64_t kDay = 86'400;
constexpr std::int64_t kNow = 1'699'999'200;  // 2023-11-14T22:00:00Z, on an hour boundary
constexpr auto kDeadline = seconds(10);

json body_of(const httplib::Result& result) { return json::parse(result->body); }
json error_of(const httplib::Result& result) { return body_of(result).at("error"); }

// Stripe's synchronous refusal of a parameter: a 400 invalid_request_error naming it.
::testing::AssertionResult refused_naming(const httplib::Result& result, const std::string& param) {
  if (!result) return ::testing::AssertionFailure() << "no answer";
  if (result->status == 400 && error_of(result).value("type", "") == "invalid_request_error" &&
      error_of(result).value("param", "") == param) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << result->status << " " << result->body;
}

class MeterTest : public ::testing::Test {
 protected:
  MeterTest() : emulator_(options()) {
    customer_ = emulator_.create_customer({{"litellm_customer_id", "alice"}});
    meter_ = emulator_.create_meter(kEventName);
  }

  EmulatorOptions options() {
    EmulatorOptions options;
    options.api_keys = {kApiKey};
    options.clock = [this] { return now_.load(); };
    return options;
  }

  httplib::Client client(const std::string& bearer = kApiKey) const {
    httplib::Client client("127.0.0.1", emulator_.port());
    client.set_read_timeout(kDeadline);
    if (!bearer.empty()) client.set_bearer_token_auth(bearer.c_str());
    return client;
  }

  httplib::Result post(const std::string& path, const std::string& form,
                       const httplib::Headers& headers = {}) const {
    return client().Post(path.c_str(), headers, form, kForm);
  }

  httplib::Result get(const std::string& path) const { return client().Get(path.c_str()); }

  // A v1 meter event for the fixture's customer; `extra` is appended to the form.
  httplib::Result send_event(const std::string& value, const std::string& extra = "") const {
    return post("/v1/billing/meter_events", std::string("event_name=") + kEventName +
                                                "&payload[stripe_customer_id]=" + customer_ +
                                                "&payload[value]=" + value + extra);
  }

  std::string event_form(const std::string& value) const {
    return std::string("event_name=") + kEventName + "&payload[stripe_customer_id]=" + customer_ +
           "&payload[value]=" + value;
  }

  // Sends the meter event `form` and holds it (a kHang fault) until release_hangs().
  std::future<httplib::Result> send_held_event(const std::string& form) {
    emulator_.inject(Fault{FaultKind::kHang, 500, "/v1/billing/meter_events", seconds(30)});
    return std::async(std::launch::async,
                      [this, form] { return post("/v1/billing/meter_events", form); });
  }

  httplib::Result summaries(const std::string& query) const {
    return get("/v1/billing/meters/" + meter_ + "/event_summaries?customer=" + customer_ + "&" +
               query);
  }

  httplib::Result cancel(const std::string& identifier) const {
    return post(
        "/v1/billing/meter_event_adjustments",
        std::string("event_name=") + kEventName + "&type=cancel&cancel[identifier]=" + identifier);
  }

  httplib::Result create_session(const std::string& api_key = kApiKey) const {
    return client(api_key).Post("/v2/billing/meter_event_session", "{}", kJson);
  }

  std::string session_token() const {
    return body_of(create_session())["authentication_token"].get<std::string>();
  }

  httplib::Result stream(const std::string& token, const std::string& body) const {
    return client(token).Post("/v2/billing/meter_event_stream", body, kJson);
  }

  httplib::Result stream(const std::string& token, const std::vector<json>& events) const {
    return stream(token, json{{"events", events}}.dump());
  }

  json v2_event(const std::string& identifier, const std::string& value = "1") const {
    return {{"event_name", kEventName},
            {"identifier", identifier},
            {"payload", {{"stripe_customer_id", customer_}, {"value", value}}},
            {"timestamp", "2023-11-14T21:30:00.000Z"}};
  }

  Totals totals() const { return emulator_.meter_totals_by_customer(kEventName); }

  std::string last_error_code() const { return emulator_.meter_events().back().error_code; }

  std::atomic<std::int64_t> now_{kNow};
  Emulator emulator_;
  std::string customer_, meter_;
};

// --- Meters ---------------------------------------------------------------------------------

TEST_F(MeterTest, CreatesAMeterOverHttpInStripesShape) {
  const auto created = post("/v1/billing/meters",
                            "display_name=Tokens&event_name=api_calls&default_aggregation[formula]="
                            "count&customer_mapping[event_payload_key]=customer&customer_mapping["
                            "type]=by_id&value_settings[event_payload_key]=calls");
  ASSERT_TRUE(created);
  ASSERT_EQ(created->status, 200) << created->body;
  auto meter = body_of(created);
  const auto id = meter["id"].get<std::string>();
  EXPECT_EQ(id.rfind("mtr_", 0), 0u);
  EXPECT_EQ(body_of(get("/v1/billing/meters/" + id)), meter);
  meter.erase("id");
  EXPECT_EQ(meter,
            (json{{"object", "billing.meter"},
                  {"created", kNow},
                  {"customer_mapping", {{"event_payload_key", "customer"}, {"type", "by_id"}}},
                  {"default_aggregation", {{"formula", "count"}}},
                  {"display_name", "Tokens"},
                  {"event_name", "api_calls"},
                  {"event_time_window", nullptr},
                  {"livemode", false},
                  {"status", "active"},
                  {"status_transitions", {{"deactivated_at", nullptr}}},
                  {"updated", kNow},
                  {"value_settings", {{"event_payload_key", "calls"}}}}));
}

TEST_F(MeterTest, AMeterDefaultsToStripesPayloadKeys) {
  const auto created = post("/v1/billing/meters",
                            "display_name=Calls&event_name=calls&default_aggregation[formula]=sum");
  ASSERT_EQ(created->status, 200);
  EXPECT_EQ(body_of(created)["customer_mapping"]["event_payload_key"], "stripe_customer_id");
  EXPECT_EQ(body_of(created)["value_settings"]["event_payload_key"], "value");
}

TEST_F(MeterTest, RefusesASecondActiveMeterOnTheSameEventName) {
  const auto result =
      post("/v1/billing/meters", std::string("display_name=Again&event_name=") + kEventName +
                                     "&default_aggregation[formula]=sum");
  EXPECT_TRUE(refused_naming(result, "event_name"));
  EXPECT_THROW(emulator_.create_meter(kEventName), std::invalid_argument);
}

TEST_F(MeterTest, ListsMetersFilteredByStatus) {
  const auto active = body_of(get("/v1/billing/meters?status=active"));
  EXPECT_EQ(active["object"], "list");
  EXPECT_EQ(active["url"], "/v1/billing/meters");
  ASSERT_EQ(active["data"].size(), 1u);
  EXPECT_EQ(active["data"][0]["id"], meter_);
  EXPECT_TRUE(body_of(get("/v1/billing/meters?status=inactive"))["data"].empty());
}

TEST_F(MeterTest, AnUnknownMeterAnswers404ResourceMissing) {
  const auto result = get("/v1/billing/meters/mtr_unknown");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  EXPECT_EQ(error_of(result)["code"], "resource_missing");
}

// --- v1 meter events: what is accepted and counted ----------------------------------------

TEST_F(MeterTest, AcceptsAMeterEventInStripesShapeAndCountsIt) {
  const auto result = send_event("25", "&identifier=call-1&timestamp=" + std::to_string(kNow - 60));
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(body_of(result),
            (json{{"object", "billing.meter_event"},
                  {"created", kNow},
                  {"event_name", kEventName},
                  {"identifier", "call-1"},
                  {"livemode", false},
                  {"payload", {{"stripe_customer_id", customer_}, {"value", "25"}}},
                  {"timestamp", kNow - 60}}));
  EXPECT_EQ(totals(), (Totals{{customer_, 25}}));
  const auto events = emulator_.meter_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].source, "v1");
  EXPECT_EQ(events[0].error_code, "");
  EXPECT_FALSE(events[0].cancelled);
}

TEST_F(MeterTest, AnEventWithoutTimestampOrIdentifierGetsNowAndAGeneratedIdentifier) {
  const auto event = body_of(send_event("1"));
  EXPECT_EQ(event["timestamp"], kNow);
  EXPECT_FALSE(event["identifier"].get<std::string>().empty());
  EXPECT_EQ(emulator_.meter_events().at(0).identifier, event["identifier"]);
}

TEST_F(MeterTest, SumsDecimalValues) {
  ASSERT_EQ(send_event("1.25")->status, 200);
  ASSERT_EQ(send_event("2.5")->status, 200);
  EXPECT_EQ(totals(), (Totals{{customer_, 3.75}}));
}

TEST_F(MeterTest, CountsWithTheMetersOwnPayloadKeys) {
  emulator_.create_meter("custom", "account", "tokens");
  const auto result =
      post("/v1/billing/meter_events",
           "event_name=custom&payload[account]=" + customer_ + "&payload[tokens]=7");
  ASSERT_EQ(result->status, 200);
  EXPECT_EQ(emulator_.meter_totals_by_customer("custom"), (Totals{{customer_, 7}}));
}

TEST_F(MeterTest, ACountMeterCountsEventsWhateverTheirValue) {
  emulator_.create_meter("calls", "stripe_customer_id", "value", "count");
  const auto form = "event_name=calls&payload[stripe_customer_id]=" + customer_;
  ASSERT_EQ(post("/v1/billing/meter_events", form + "&payload[value]=40")->status, 200);
  ASSERT_EQ(post("/v1/billing/meter_events", form)->status, 200);
  EXPECT_EQ(emulator_.meter_totals_by_customer("calls"), (Totals{{customer_, 2}}));
}

TEST_F(MeterTest, ALastMeterKeepsTheValueWithTheLatestTimestamp) {
  emulator_.create_meter("seats", "stripe_customer_id", "value", "last");
  const auto form = "event_name=seats&payload[stripe_customer_id]=" + customer_;
  ASSERT_EQ(post("/v1/billing/meter_events",
                 form + "&payload[value]=5&timestamp=" + std::to_string(kNow - 10))
                ->status,
            200);
  ASSERT_EQ(post("/v1/billing/meter_events",
                 form + "&payload[value]=3&timestamp=" + std::to_string(kNow - 20))
                ->status,
            200);
  EXPECT_EQ(emulator_.meter_totals_by_customer("seats"), (Totals{{customer_, 5}}));
}

TEST_F(MeterTest, TotalsCanBeLimitedToEventsWithAPayloadValue) {
  ASSERT_EQ(send_event("10", "&payload[model]=gpt-4")->status, 200);
  ASSERT_EQ(send_event("3", "&payload[model]=gpt-3.5")->status, 200);
  EXPECT_EQ(emulator_.meter_totals_by_customer(kEventName, "model", "gpt-4"),
            (Totals{{customer_, 10}}));
  EXPECT_EQ(totals(), (Totals{{customer_, 13}}));
}

// --- v1 meter events: synchronous refusals --------------------------------------------------

TEST_F(MeterTest, RefusesARepeatedIdentifierWithin24HoursWithShouldRetryFalse) {
  ASSERT_EQ(send_event("5", "&identifier=call-1")->status, 200);
  now_ += kDay - 1;
  const auto result = send_event("5", "&identifier=call-1");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["type"], "invalid_request_error");
  EXPECT_EQ(error_of(result)["message"], "An event already exists with identifier call-1.");
  EXPECT_EQ(result->get_header_value("Stripe-Should-Retry"), "false");
  EXPECT_EQ(totals(), (Totals{{customer_, 5}}));
}

TEST_F(MeterTest, RefusesATimestampOlderThan35Days) {
  ASSERT_EQ(send_event("1", "&timestamp=" + std::to_string(kNow - 35 * kDay))->status, 200);
  const auto result = send_event("1", "&timestamp=" + std::to_string(kNow - 35 * kDay - 1));
  EXPECT_TRUE(refused_naming(result, "timestamp"));
  EXPECT_EQ(emulator_.meter_events().size(), 1u);
}

TEST_F(MeterTest, RefusesATimestampMoreThanFiveMinutesAhead) {
  ASSERT_EQ(send_event("1", "&timestamp=" + std::to_string(kNow + 300))->status, 200);
  const auto result = send_event("1", "&timestamp=" + std::to_string(kNow + 301));
  EXPECT_TRUE(refused_naming(result, "timestamp"));
  EXPECT_EQ(emulator_.meter_events().size(), 1u);
}

TEST_F(MeterTest, RefusesAValueWithMoreThan15SignificantDigits) {
  ASSERT_EQ(send_event("123456789.012345")->status, 200);
  const auto result = send_event("1234567890.123456");
  EXPECT_TRUE(refused_naming(result, "payload[value]"));
  EXPECT_EQ(emulator_.meter_events().size(), 1u);
}

TEST_F(MeterTest, RefusesAValueThatIsNotANumber) {
  const auto result = send_event("lots");
  EXPECT_TRUE(refused_naming(result, "payload[value]"));
  EXPECT_TRUE(emulator_.meter_events().empty());
}

TEST_F(MeterTest, RejectsAnUnknownParameterOnMeterEventsNamingIt) {
  const auto result = send_event("1", "&metadata[model]=gpt-4");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["message"], "Received unknown parameter: metadata");
  EXPECT_EQ(error_of(result)["param"], "metadata");
  EXPECT_TRUE(emulator_.meter_events().empty());
}

// --- v1 meter events: asynchronous error reports --------------------------------------------

TEST_F(MeterTest, AcceptsButDoesNotCountAnEventWithoutAMeter) {
  const auto result =
      post("/v1/billing/meter_events",
           "event_name=unmetered&payload[stripe_customer_id]=" + customer_ + "&payload[value]=1");
  ASSERT_EQ(result->status, 200);
  EXPECT_EQ(last_error_code(), "no_meter");
  EXPECT_TRUE(emulator_.meter_totals_by_customer("unmetered").empty());
}

TEST_F(MeterTest, AcceptsButDoesNotCountAnEventWithoutTheCustomerKey) {
  const auto result = post("/v1/billing/meter_events",
                           std::string("event_name=") + kEventName + "&payload[value]=1");
  ASSERT_EQ(result->status, 200);
  EXPECT_EQ(last_error_code(), "meter_event_no_customer_defined");
  EXPECT_TRUE(totals().empty());
}

TEST_F(MeterTest, AcceptsButDoesNotCountAnEventForAnUnknownCustomer) {
  const auto result = post("/v1/billing/meter_events",
                           std::string("event_name=") + kEventName +
                               "&payload[stripe_customer_id]=cus_nobody&payload[value]=1");
  ASSERT_EQ(result->status, 200);
  EXPECT_EQ(last_error_code(), "meter_event_customer_not_found");
  EXPECT_TRUE(totals().empty());
}

TEST_F(MeterTest, AcceptsButDoesNotCountAnEventWithoutAValue) {
  const auto result =
      post("/v1/billing/meter_events",
           std::string("event_name=") + kEventName + "&payload[stripe_customer_id]=" + customer_);
  ASSERT_EQ(result->status, 200);
  EXPECT_EQ(last_error_code(), "meter_event_invalid_value");
  EXPECT_TRUE(totals().empty());
}

// --- Event summaries ------------------------------------------------------------------------

TEST_F(MeterTest, ASummaryAggregatesTheEventsFromStartTimeUpToButExcludingEndTime) {
  ASSERT_EQ(send_event("2", "&timestamp=" + std::to_string(kNow - kHour))->status, 200);
  ASSERT_EQ(send_event("3", "&timestamp=" + std::to_string(kNow - 1))->status, 200);
  ASSERT_EQ(send_event("100", "&timestamp=" + std::to_string(kNow))->status, 200);
  const auto result =
      summaries("start_time=" + std::to_string(kNow - kHour) + "&end_time=" + std::to_string(kNow));
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const auto list = body_of(result);
  EXPECT_EQ(list["object"], "list");
  EXPECT_EQ(list["url"], "/v1/billing/meters/" + meter_ + "/event_summaries");
  ASSERT_EQ(list["data"].size(), 1u);
  auto summary = list["data"][0];
  EXPECT_EQ(summary["id"].get<std::string>().rfind("mtrusg_", 0), 0u);
  summary.erase("id");
  EXPECT_EQ(summary, (json{{"object", "billing.meter_event_summary"},
                           {"aggregated_value", 5.0},
                           {"end_time", kNow},
                           {"livemode", false},
                           {"meter", meter_},
                           {"start_time", kNow - kHour}}));
}

TEST_F(MeterTest, ASummaryWithoutEventsIsZero) {
  const auto list = body_of(summaries("start_time=" + std::to_string(kNow - kHour) +
                                      "&end_time=" + std::to_string(kNow)));
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["aggregated_value"], 0.0);
}

TEST_F(MeterTest, SummariesRequireAMinuteAlignedStartTime) {
  const auto result =
      summaries("start_time=" + std::to_string(kNow - 30) + "&end_time=" + std::to_string(kNow));
  EXPECT_TRUE(refused_naming(result, "start_time"));
}

TEST_F(MeterTest, SummariesRequireAMinuteAlignedEndTime) {
  const auto result = summaries("start_time=" + std::to_string(kNow - kHour) +
                                "&end_time=" + std::to_string(kNow + 1));
  EXPECT_TRUE(refused_naming(result, "end_time"));
}

TEST_F(MeterTest, SummariesRequireAnExistingCustomer) {
  const auto result =
      get("/v1/billing/meters/" + meter_ + "/event_summaries?customer=cus_nobody&start_time=" +
          std::to_string(kNow - kHour) + "&end_time=" + std::to_string(kNow));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["code"], "resource_missing");
  EXPECT_EQ(error_of(result)["param"], "customer");
}

TEST_F(MeterTest, HourlySummariesGiveOneSummaryPerHourWithEventsNewestFirst) {
  ASSERT_EQ(send_event("1", "&timestamp=" + std::to_string(kNow - 3 * kHour + 5))->status, 200);
  ASSERT_EQ(send_event("2", "&timestamp=" + std::to_string(kNow - 3 * kHour + 50))->status, 200);
  ASSERT_EQ(send_event("4", "&timestamp=" + std::to_string(kNow - kHour + 10))->status, 200);
  const auto list =
      body_of(summaries("start_time=" + std::to_string(kNow - 4 * kHour) +
                        "&end_time=" + std::to_string(kNow) + "&value_grouping_window=hour"));
  ASSERT_EQ(list["data"].size(), 2u) << list.dump();
  EXPECT_EQ(list["data"][0]["start_time"], kNow - kHour);
  EXPECT_EQ(list["data"][0]["end_time"], kNow);
  EXPECT_EQ(list["data"][0]["aggregated_value"], 4.0);
  EXPECT_EQ(list["data"][1]["start_time"], kNow - 3 * kHour);
  EXPECT_EQ(list["data"][1]["end_time"], kNow - 2 * kHour);
  EXPECT_EQ(list["data"][1]["aggregated_value"], 3.0);
}

TEST_F(MeterTest, HourlySummariesRequireHourAlignedTimes) {
  const auto result =
      summaries("start_time=" + std::to_string(kNow - 60) + "&end_time=" + std::to_string(kNow) +
                "&value_grouping_window=hour");
  EXPECT_TRUE(refused_naming(result, "start_time"));
}

TEST_F(MeterTest, DailySummariesGiveOneSummaryPerUtcDayWithEvents) {
  const std::int64_t today = kNow / kDay * kDay;
  ASSERT_EQ(send_event("1", "&timestamp=" + std::to_string(today - 2 * kDay + 7))->status, 200);
  ASSERT_EQ(send_event("6", "&timestamp=" + std::to_string(today + 60))->status, 200);
  const auto list = body_of(summaries("start_time=" + std::to_string(today - 3 * kDay) +
                                      "&end_time=" + std::to_string(today + kDay) +
                                      "&value_grouping_window=day"));
  ASSERT_EQ(list["data"].size(), 2u) << list.dump();
  EXPECT_EQ(list["data"][0]["start_time"], today);
  EXPECT_EQ(list["data"][0]["aggregated_value"], 6.0);
  EXPECT_EQ(list["data"][1]["start_time"], today - 2 * kDay);
  EXPECT_EQ(list["data"][1]["end_time"], today - kDay);
  EXPECT_EQ(list["data"][1]["aggregated_value"], 1.0);
}

// --- Cancellation ---------------------------------------------------------------------------

TEST_F(MeterTest, CancellingAnEventStopsItBeingCounted) {
  ASSERT_EQ(send_event("5", "&identifier=call-1")->status, 200);
  ASSERT_EQ(send_event("2", "&identifier=call-2")->status, 200);
  const auto result = cancel("call-1");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(body_of(result), (json{{"object", "billing.meter_event_adjustment"},
                                   {"cancel", {{"identifier", "call-1"}}},
                                   {"event_name", kEventName},
                                   {"livemode", false},
                                   {"status", "pending"},
                                   {"type", "cancel"}}));
  EXPECT_EQ(totals(), (Totals{{customer_, 2}}));
  EXPECT_TRUE(emulator_.meter_events().at(0).cancelled);
}

TEST_F(MeterTest, RefusesToCancelAnEventReceivedMoreThan24HoursAgo) {
  ASSERT_EQ(send_event("5", "&identifier=call-1")->status, 200);
  now_ += kDay;
  const auto result = cancel("call-1");
  EXPECT_TRUE(refused_naming(result, "cancel[identifier]"));
  EXPECT_EQ(totals(), (Totals{{customer_, 5}}));
}

TEST_F(MeterTest, RefusesToCancelAnUnknownIdentifier) {
  const auto result = cancel("never-sent");
  EXPECT_TRUE(refused_naming(result, "cancel[identifier]"));
}

// --- v2 meter event sessions ----------------------------------------------------------------

TEST_F(MeterTest, AMeterEventSessionHasATokenThatLives15MinutesByTheEmulatorClock) {
  const auto result = create_session();
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  auto session = body_of(result);
  EXPECT_EQ(session["id"].get<std::string>().rfind("mes_", 0), 0u);
  EXPECT_FALSE(session["authentication_token"].get<std::string>().empty());
  session.erase("id");
  session.erase("authentication_token");
  EXPECT_EQ(session, (json{{"object", "v2.billing.meter_event_session"},
                           {"created", "2023-11-14T22:00:00.000Z"},
                           {"expires_at", "2023-11-14T22:15:00.000Z"},
                           {"livemode", false}}));
  EXPECT_EQ(emulator_.meter_sessions_created(), 1u);
}

TEST_F(MeterTest, AMeterEventSessionRequiresASecretKey) {
  const auto result = create_session("sk_test_wrongwrongwrongabcd");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 401);
  EXPECT_EQ(error_of(result)["type"], "invalid_request_error");
  EXPECT_EQ(emulator_.meter_sessions_created(), 0u);
}

// --- v2 meter event stream ------------------------------------------------------------------

TEST_F(MeterTest, TheStreamAcceptsAHundredEventsAndCountsThem) {
  std::vector<json> events;
  for (int i = 0; i < 100; ++i) events.push_back(v2_event("event-" + std::to_string(i)));
  const auto result = stream(session_token(), events);
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(body_of(result), json::object());
  EXPECT_EQ(totals(), (Totals{{customer_, 100}}));
  const auto recorded = emulator_.meter_events();
  ASSERT_EQ(recorded.size(), 100u);
  EXPECT_EQ(recorded[0].source, "v2");
  EXPECT_EQ(recorded[0].identifier, "event-0");
  EXPECT_EQ(recorded[0].timestamp, kNow - 30 * 60);
}

TEST_F(MeterTest, TheStreamRefuses101EventsAndCountsNone) {
  std::vector<json> events;
  for (int i = 0; i < 101; ++i) events.push_back(v2_event("event-" + std::to_string(i)));
  const auto result = stream(session_token(), events);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  const auto error = error_of(result);
  EXPECT_EQ(error["type"], "invalid_request_error");
  EXPECT_TRUE(error.contains("code"));
  EXPECT_TRUE(error.contains("message"));
  EXPECT_FALSE(error.contains("param"));
  EXPECT_TRUE(emulator_.meter_events().empty());
}

TEST_F(MeterTest, TheStreamRefusesABodyThatIsNotJson) {
  const auto result = stream(session_token(), std::string("events=1"));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["type"], "invalid_request_error");
}

TEST_F(MeterTest, TheStreamRefusesAPayloadValueThatIsNotAString) {
  auto event = v2_event("event-1");
  event["payload"]["value"] = 1;
  const auto result = stream(session_token(), std::vector<json>{event});
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_TRUE(emulator_.meter_events().empty());
}

TEST_F(MeterTest, TheStreamRefusesAnEventWithoutEventName) {
  auto event = v2_event("event-1");
  event.erase("event_name");
  const auto result = stream(session_token(), std::vector<json>{event});
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
}

TEST_F(MeterTest, AnExpiredTokenAnswers401SessionExpired) {
  const auto token = session_token();
  now_ += 15 * 60;
  const auto result = stream(token, std::vector<json>{v2_event("event-1")});
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 401);
  EXPECT_EQ(error_of(result)["code"], "billing_meter_event_session_expired");
  EXPECT_EQ(error_of(result)["type"], "temporary_session_expired");
  EXPECT_TRUE(emulator_.meter_events().empty());
}

TEST_F(MeterTest, ExpireMeterSessionsExpiresEveryTokenNow) {
  const auto token = session_token();
  emulator_.expire_meter_sessions();
  const auto result = stream(token, std::vector<json>{v2_event("event-1")});
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 401);
  EXPECT_EQ(error_of(result)["code"], "billing_meter_event_session_expired");
  EXPECT_EQ(stream(session_token(), std::vector<json>{v2_event("event-1")})->status, 200);
}

TEST_F(MeterTest, AnUnknownTokenAnswers401) {
  const auto result = stream("not_a_session_token", std::vector<json>{v2_event("event-1")});
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 401);
  EXPECT_NE(error_of(result)["code"], "billing_meter_event_session_expired");
  EXPECT_FALSE(error_of(result).contains("param"));
}

TEST_F(MeterTest, TheSecretKeyIsNotAStreamToken) {
  const auto result = stream(kApiKey, std::vector<json>{v2_event("event-1")});
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 401);
}

TEST_F(MeterTest, TheStreamIgnoresAnIdentifierAlreadyRecordedOverV2) {
  const auto token = session_token();
  ASSERT_EQ(stream(token, std::vector<json>{v2_event("event-1", "4")})->status, 200);
  ASSERT_EQ(stream(token, std::vector<json>{v2_event("event-1", "4")})->status, 200);
  EXPECT_EQ(totals(), (Totals{{customer_, 4}}));
  EXPECT_EQ(emulator_.meter_events().size(), 1u);
}

TEST_F(MeterTest, TheStreamIgnoresAnIdentifierAlreadyRecordedOverV1) {
  ASSERT_EQ(send_event("4", "&identifier=event-1")->status, 200);
  ASSERT_EQ(stream(session_token(), std::vector<json>{v2_event("event-1", "4")})->status, 200);
  EXPECT_EQ(totals(), (Totals{{customer_, 4}}));
}

TEST_F(MeterTest, StreamedEventsAreValidatedAsynchronously) {
  auto unmetered = v2_event("event-1");
  unmetered["event_name"] = "unmetered";
  auto too_old = v2_event("event-2");
  too_old["timestamp"] = "2023-10-01T00:00:00Z";
  auto huge = v2_event("event-3", "1234567890.123456");
  const auto result = stream(session_token(), std::vector<json>{unmetered, too_old, huge});
  ASSERT_EQ(result->status, 200);
  const auto events = emulator_.meter_events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].error_code, "no_meter");
  EXPECT_EQ(events[1].error_code, "timestamp_too_far_in_past");
  EXPECT_EQ(events[2].error_code, "meter_event_invalid_value");
  EXPECT_TRUE(totals().empty());
}

TEST_F(MeterTest, StreamTimestampsMayCarryAnOffset) {
  auto event = v2_event("event-1");
  event["timestamp"] = "2023-11-14T22:30:00+01:00";
  ASSERT_EQ(stream(session_token(), std::vector<json>{event})->status, 200);
  EXPECT_EQ(emulator_.meter_events().at(0).timestamp, kNow - 30 * 60);
}

// --- Faults and the request log -------------------------------------------------------------

TEST_F(MeterTest, AnInjectedFaultAppliesToV1MeterEvents) {
  emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/billing/meter_events", {}});
  const auto result = send_event("5");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 500);
  EXPECT_EQ(error_of(result)["type"], "api_error");
  EXPECT_TRUE(emulator_.meter_events().empty());
}

TEST_F(MeterTest, AnInjectedFaultAppliesToTheStreamInTheV2Shape) {
  const auto token = session_token();
  emulator_.inject(Fault{FaultKind::kStatus, 429, "/v2/billing/meter_event_stream", {}});
  const auto result = stream(token, std::vector<json>{v2_event("event-1")});
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_EQ(result->get_header_value("Stripe-Rate-Limited-Reason"), "global-rate");
  EXPECT_EQ(error_of(result)["code"], "rate_limit");
  EXPECT_FALSE(error_of(result).contains("param"));
  EXPECT_TRUE(emulator_.meter_events().empty());
}

TEST_F(MeterTest, CloseConnectionOnTheStreamRecordsNothing) {
  const auto token = session_token();
  emulator_.inject(Fault{FaultKind::kCloseConnection, 500, "/v2/", {}});
  EXPECT_FALSE(stream(token, std::vector<json>{v2_event("event-1")}));
  EXPECT_TRUE(emulator_.meter_events().empty());
}

TEST_F(MeterTest, CloseAfterCommitOnTheStreamRecordsTheEventsAndARetryIsIgnored) {
  const auto token = session_token();
  emulator_.inject(Fault{FaultKind::kCloseAfterCommit, 500, "/v2/billing/meter_event_stream", {}});
  EXPECT_FALSE(stream(token, std::vector<json>{v2_event("event-1", "3")}));
  EXPECT_EQ(stream(token, std::vector<json>{v2_event("event-1", "3")})->status, 200);
  EXPECT_EQ(totals(), (Totals{{customer_, 3}}));
}

TEST_F(MeterTest, RandomFaultsApplyToTheStream) {
  const auto token = session_token();
  emulator_.set_random_faults({{Fault{FaultKind::kStatus, 503, "", {}}, 1.0}}, 7);
  EXPECT_EQ(stream(token, std::vector<json>{v2_event("event-1")})->status, 503);
  emulator_.set_random_faults({}, 0);
  EXPECT_EQ(stream(token, std::vector<json>{v2_event("event-1")})->status, 200);
}

TEST_F(MeterTest, AHangHoldsAStreamRequestUntilReleased) {
  const auto token = session_token();
  emulator_.inject(Fault{FaultKind::kHang, 500, "/v2/", seconds(30)});
  auto held = std::async(std::launch::async,
                         [&] { return stream(token, std::vector<json>{v2_event("event-1")}); });
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  EXPECT_TRUE(emulator_.meter_events().empty());
  emulator_.release_hangs();
  const auto result = held.get();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(totals(), (Totals{{customer_, 1}}));
}

TEST_F(MeterTest, TheRateLimitAppliesToTheStream) {
  const auto token = session_token();
  emulator_.set_rate_limit(1);
  int limited = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    limited += stream(token, std::vector<json>{v2_event("event-1")})->status == 429;
  }
  EXPECT_GT(limited, 0);
}

TEST_F(MeterTest, V2RequestsAreLoggedWithTheirAnswers) {
  const auto token = session_token();
  ASSERT_EQ(stream(token, std::vector<json>{v2_event("event-1")})->status, 200);
  const auto requests = emulator_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].path, "/v2/billing/meter_event_session");
  EXPECT_EQ(requests[1].path, "/v2/billing/meter_event_stream");
  EXPECT_EQ(requests[1].headers.at("authorization"), "Bearer " + token);
  EXPECT_EQ(requests[1].status, 200);
}

TEST_F(MeterTest, AnUnknownV2UrlAnswers404InTheV2Shape) {
  const auto result = client().Post("/v2/billing/nothing_here", "{}", kJson);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  EXPECT_EQ(error_of(result)["type"], "invalid_request_error");
}

// --- One request at a time per customer and meter -------------------------------------------

TEST_F(MeterTest, AMeterEventWhileAnotherForTheSameCustomerAndMeterRunsIsRefused429) {
  auto first = send_held_event(event_form("1"));
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  const auto second = send_event("2");
  emulator_.release_hangs();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 429);
  EXPECT_EQ(second->get_header_value("Stripe-Rate-Limited-Reason"), "resource-specific");
  EXPECT_FALSE(second->has_header("Retry-After"));
  EXPECT_EQ(error_of(second)["type"], "invalid_request_error");
  EXPECT_EQ(error_of(second)["code"], "rate_limit");
  EXPECT_NE(error_of(second)["message"].get<std::string>().find(
                "Concurrent requests for the same customer and meter are not allowed"),
            std::string::npos);
  EXPECT_EQ(first.get()->status, 200);
}

TEST_F(MeterTest, TheRefusedConcurrentMeterEventIsNotRecorded) {
  auto first = send_held_event(event_form("1"));
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  const auto second = send_event("2");
  emulator_.release_hangs();
  ASSERT_EQ(first.get()->status, 200);
  ASSERT_EQ(second->status, 429);
  EXPECT_EQ(emulator_.meter_events().size(), 1u);
  EXPECT_EQ(totals(), (Totals{{customer_, 1}}));
}

TEST_F(MeterTest, ConcurrentMeterEventRefusalsAreCounted) {
  auto first = send_held_event(event_form("1"));
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  EXPECT_EQ(emulator_.concurrent_meter_event_refusals(), 0u);
  const auto second = send_event("2");
  const auto third = send_event("3");
  emulator_.release_hangs();
  ASSERT_EQ(first.get()->status, 200);
  ASSERT_EQ(second->status, 429);
  ASSERT_EQ(third->status, 429);
  EXPECT_EQ(emulator_.concurrent_meter_event_refusals(), 2u);
}

TEST_F(MeterTest, AMeterEventForAnotherCustomerRunsAlongside) {
  const auto bob = emulator_.create_customer({{"litellm_customer_id", "bob"}});
  auto first = send_held_event(event_form("1"));
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  const auto other = post("/v1/billing/meter_events", std::string("event_name=") + kEventName +
                                                          "&payload[stripe_customer_id]=" + bob +
                                                          "&payload[value]=2");
  emulator_.release_hangs();
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 200);
  EXPECT_EQ(first.get()->status, 200);
  EXPECT_EQ(emulator_.concurrent_meter_event_refusals(), 0u);
}

TEST_F(MeterTest, AMeterEventForAnotherMeterRunsAlongside) {
  emulator_.create_meter("api_calls");
  auto first = send_held_event(event_form("1"));
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  const auto other =
      post("/v1/billing/meter_events",
           "event_name=api_calls&payload[stripe_customer_id]=" + customer_ + "&payload[value]=2");
  emulator_.release_hangs();
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 200);
  EXPECT_EQ(first.get()->status, 200);
}

TEST_F(MeterTest, TheCustomerIsTheValueUnderTheMetersCustomerKey) {
  emulator_.create_meter("api_calls", "customer", "calls");
  const auto form = "event_name=api_calls&payload[customer]=" + customer_ + "&payload[calls]=1";
  auto first = send_held_event(form + "&payload[stripe_customer_id]=cus_first");
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  const auto second =
      post("/v1/billing/meter_events", form + "&payload[stripe_customer_id]=cus_second");
  emulator_.release_hangs();
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 429);
  EXPECT_EQ(first.get()->status, 200);
}

TEST_F(MeterTest, AMeterEventAfterTheFirstWasAnsweredIsAccepted) {
  auto first = send_held_event(event_form("1"));
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  emulator_.release_hangs();
  ASSERT_EQ(first.get()->status, 200);
  const auto next = send_event("2");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
  EXPECT_EQ(totals(), (Totals{{customer_, 3}}));
}

TEST_F(MeterTest, ARetryUnderTheSameIdempotencyKeyWhileTheFirstRunsIsRefusedAsConcurrent) {
  emulator_.inject(Fault{FaultKind::kHang, 500, "/v1/billing/meter_events", seconds(30)});
  const httplib::Headers key = {{"Idempotency-Key", "event-1"}};
  auto first = std::async(std::launch::async,
                          [&] { return post("/v1/billing/meter_events", event_form("1"), key); });
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  const auto retry = post("/v1/billing/meter_events", event_form("1"), key);
  emulator_.release_hangs();
  ASSERT_TRUE(retry);
  EXPECT_EQ(retry->status, 429);
  EXPECT_EQ(retry->get_header_value("Stripe-Rate-Limited-Reason"), "resource-specific");
  EXPECT_EQ(first.get()->status, 200);
}

TEST_F(MeterTest, TheStreamIsNotHeldToTheV1Rule) {
  const auto token = session_token();
  auto first = send_held_event(event_form("1"));
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  const auto streamed = stream(token, std::vector<json>{v2_event("event-2")});
  emulator_.release_hangs();
  ASSERT_TRUE(streamed);
  EXPECT_EQ(streamed->status, 200);
  EXPECT_EQ(first.get()->status, 200);
  EXPECT_EQ(emulator_.concurrent_meter_event_refusals(), 0u);
}

// --- Control endpoints ----------------------------------------------------------------------

TEST_F(MeterTest, ControlTotalsReportCountedMeterTotalsByEventName) {
  ASSERT_EQ(send_event("7")->status, 200);
  httplib::Client control("127.0.0.1", emulator_.port());
  const auto totals = body_of(control.Get("/_emulator/totals"));
  EXPECT_EQ(totals["meters"], (json{{kEventName, {{customer_, 7.0}}}}));
}

}  // namespace
