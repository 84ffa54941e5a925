// The Stripe emulator's token billing surface, over real HTTP on loopback: POST
// /v2/billing/meter_events (one event, validated synchronously, counted like v1 and stream events),
// restricted keys and Stripe's permission error, and meters with dimension payload keys whose
// totals are split per customer and dimension values, in C++ and over /_emulator/meter_dimensions.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "stripe_emulator/emulator.h"

namespace {

using nlohmann::json;
using stripe_emulator::Emulator;
using stripe_emulator::EmulatorOptions;
using DimensionTotals = std::map<std::vector<std::string>, double>;

constexpr char kApiKey[] = "sk_test_emulator_0000000000000000";
// A restricted key as long as Stripe's (rk_test_ and 99 characters).
const std::string kRestrictedKey = "rk_test_" + std::string(93, 'r') + "Xy12Zq";
constexpr char kForm[] = "application/x-www-form-urlencoded";
constexpr char kJson[] = "application/json";
constexpr char kEventName[] = "llm_tokens";
constexpr char kMeterEventsPath[] = "/v2/billing/meter_events";
constexpr std::int64_t kDay = 86'400;
constexpr std::int64_t kNow = 1'699'999'200;                 // 2023-11-14T22:00:00Z
constexpr char kNowRfc3339[] = "2023-11-14T22:00:00.000Z";   // kNow as the v2 API writes it
constexpr char kHalfHourAgo[] = "2023-11-14T21:30:00.000Z";  // kNow - 1800
constexpr auto kDeadline = std::chrono::seconds(10);

json body_of(const httplib::Result& result) { return json::parse(result->body); }
json error_of(const httplib::Result& result) { return body_of(result).at("error"); }

// A v2 refusal: `status`, the v2 error shape ({"type","code","message"}, no "param") and `code`.
::testing::AssertionResult v2_refusal(const httplib::Result& result, int status,
                                      const std::string& code) {
  if (!result) return ::testing::AssertionFailure() << "no answer";
  const auto body = json::parse(result->body, nullptr, false);
  if (result->status != status || body.is_discarded() || !body.contains("error")) {
    return ::testing::AssertionFailure() << result->status << " " << result->body;
  }
  const auto& error = body["error"];
  if (error.value("code", "") != code || !error.contains("type") || !error.contains("message") ||
      error.contains("param")) {
    return ::testing::AssertionFailure() << result->body;
  }
  return ::testing::AssertionSuccess();
}

class TokenBillingTest : public ::testing::Test {
 protected:
  TokenBillingTest() : emulator_(options()) {
    alice_ = emulator_.create_customer({{"litellm_customer_id", "alice"}});
    bob_ = emulator_.create_customer({{"litellm_customer_id", "bob"}});
    meter_ = emulator_.create_meter(kEventName, "stripe_customer_id", "value", "sum",
                                    {"token_type", "model"});
  }

  EmulatorOptions options() {
    EmulatorOptions options;
    options.api_keys = {kApiKey};
    options.clock = [this] { return now_.load(); };
    options.restricted_keys = {{kRestrictedKey, {"rak_billing_meter_event_write"}}};
    return options;
  }

  httplib::Client client(const std::string& bearer = kApiKey) const {
    httplib::Client client("127.0.0.1", emulator_.port());
    client.set_read_timeout(kDeadline);
    if (!bearer.empty()) client.set_bearer_token_auth(bearer.c_str());
    return client;
  }

  httplib::Result post_event(const json& event, const std::string& key = kApiKey,
                             const httplib::Headers& headers = {}) const {
    return client(key).Post(kMeterEventsPath, headers, event.dump(), kJson);
  }

  httplib::Result post_raw(const std::string& body) const {
    return client().Post(kMeterEventsPath, body, kJson);
  }

  json event(const std::string& customer, const std::string& value,
             const std::string& token_type = "input",
             const std::string& model = "openai/gpt-4.1") const {
    return {{"event_name", kEventName},
            {"payload",
             {{"stripe_customer_id", customer},
              {"value", value},
              {"token_type", token_type},
              {"model", model}}}};
  }

  json event_with(const std::string& identifier, const std::string& value = "1") const {
    auto with = event(alice_, value);
    with["identifier"] = identifier;
    return with;
  }

  std::string v1_form(const std::string& customer, const std::string& value,
                      const std::string& token_type, const std::string& model) const {
    return std::string("event_name=") + kEventName + "&payload[stripe_customer_id]=" + customer +
           "&payload[value]=" + value + "&payload[token_type]=" + token_type +
           "&payload[model]=" + model;
  }

  std::string session_token() const {
    const auto session = client().Post("/v2/billing/meter_event_session", "{}", kJson);
    return body_of(session).at("authentication_token").get<std::string>();
  }

  // The same event over `channel`: "v1" (as `form`), "stream" (with the session `token`) or "v2".
  httplib::Result send(const std::string& channel, const std::string& token, const json& sent,
                       const std::string& form) const {
    if (channel == "v1") return client().Post("/v1/billing/meter_events", form, kForm);
    if (channel == "stream") {
      return client(token).Post("/v2/billing/meter_event_stream",
                                json{{"events", json::array({sent})}}.dump(), kJson);
    }
    return post_event(sent);
  }

  double total(const std::string& customer) const {
    const auto totals = emulator_.meter_totals_by_customer(kEventName);
    const auto found = totals.find(customer);
    return found == totals.end() ? 0 : found->second;
  }

  std::size_t recorded_events() const { return emulator_.meter_events().size(); }

  std::atomic<std::int64_t> now_{kNow};
  Emulator emulator_;
  std::string alice_, bob_, meter_;
};

// --- POST /v2/billing/meter_events: accepted and counted ----------------------------------

TEST_F(TokenBillingTest, AV2MeterEventIsAnsweredInStripesShapeAndCounted) {
  auto sent = event(alice_, "25");
  sent["identifier"] = "call-1";
  sent["timestamp"] = kHalfHourAgo;
  const auto result = post_event(sent);
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(body_of(result), (json{{"object", "v2.billing.meter_event"},
                                   {"created", kNowRfc3339},
                                   {"event_name", kEventName},
                                   {"identifier", "call-1"},
                                   {"livemode", false},
                                   {"payload", sent["payload"]},
                                   {"timestamp", kHalfHourAgo}}));
  EXPECT_EQ(total(alice_), 25);
  const auto events = emulator_.meter_events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].source, "v2_event");
  EXPECT_EQ(events[0].timestamp, kNow - 1800);
  EXPECT_EQ(events[0].error_code, "");
}

TEST_F(TokenBillingTest, AnEventWithoutIdentifierOrTimestampGetsAGeneratedOneAndNow) {
  const auto result = post_event(event(alice_, "3"));
  ASSERT_EQ(result->status, 200) << result->body;
  const auto answered = body_of(result);
  EXPECT_EQ(answered["timestamp"], kNowRfc3339);
  EXPECT_FALSE(answered["identifier"].get<std::string>().empty());
  EXPECT_EQ(emulator_.meter_events().at(0).identifier, answered["identifier"]);
}

TEST_F(TokenBillingTest, EventsOverV1TheStreamAndV2MeterEventsAddUp) {
  ASSERT_EQ(
      client().Post("/v1/billing/meter_events", v1_form(alice_, "10", "input", "m"), kForm)->status,
      200);
  const json stream_event = {
      {"event_name", kEventName},
      {"payload",
       {{"stripe_customer_id", alice_}, {"value", "20"}, {"token_type", "input"}, {"model", "m"}}}};
  ASSERT_EQ(client(session_token())
                .Post("/v2/billing/meter_event_stream",
                      json{{"events", json::array({stream_event})}}.dump(), kJson)
                ->status,
            200);
  ASSERT_EQ(post_event(event(alice_, "30", "input", "m"))->status, 200);
  EXPECT_EQ(total(alice_), 10 + 20 + 30);
  std::vector<std::string> sources;
  for (const auto& recorded : emulator_.meter_events()) sources.push_back(recorded.source);
  EXPECT_EQ(sources, (std::vector<std::string>{"v1", "v2", "v2_event"}));
}

TEST_F(TokenBillingTest, AnyStripeVersionIsAcceptedAndRecorded) {
  const auto result =
      post_event(event(alice_, "1"), kApiKey, {{"Stripe-Version", "2025-03-31.preview"}});
  ASSERT_EQ(result->status, 200) << result->body;
  const auto requests = emulator_.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].headers.at("stripe-version"), "2025-03-31.preview");
  EXPECT_EQ(requests[0].path, kMeterEventsPath);
}

// --- Synchronous refusals (400) -----------------------------------------------------------

TEST_F(TokenBillingTest, ATimestampOlderThan35DaysIsRefused) {
  auto sent = event(alice_, "1");
  sent["timestamp"] = kNowRfc3339;
  now_ = kNow + 35 * kDay;  // exactly 35 days old: still accepted
  ASSERT_EQ(post_event(sent)->status, 200);
  now_ = kNow + 35 * kDay + 1;
  EXPECT_TRUE(v2_refusal(post_event(sent), 400, "timestamp_too_far_in_past"));
  EXPECT_EQ(recorded_events(), 1u);
}

TEST_F(TokenBillingTest, ATimestampMoreThanFiveMinutesAheadIsRefused) {
  auto sent = event(alice_, "1");
  sent["timestamp"] = kNowRfc3339;
  now_ = kNow - 300;  // exactly five minutes ahead: still accepted
  ASSERT_EQ(post_event(sent)->status, 200);
  now_ = kNow - 301;
  EXPECT_TRUE(v2_refusal(post_event(sent), 400, "timestamp_in_future"));
  EXPECT_EQ(recorded_events(), 1u);
}

TEST_F(TokenBillingTest, AValueWithMoreThan15SignificantDigitsIsRefused) {
  ASSERT_EQ(post_event(event(alice_, "123456789012345"))->status, 200);
  EXPECT_TRUE(
      v2_refusal(post_event(event(alice_, "1234567890123456")), 400, "payload_invalid_value"));
  EXPECT_TRUE(
      v2_refusal(post_event(event(alice_, "1.234567890123456")), 400, "payload_invalid_value"));
  EXPECT_EQ(total(alice_), 123456789012345.0);
}

TEST_F(TokenBillingTest, AValueThatIsNotANumberIsRefused) {
  EXPECT_TRUE(v2_refusal(post_event(event(alice_, "twelve")), 400, "payload_invalid_value"));
  EXPECT_EQ(recorded_events(), 0u);
}

TEST_F(TokenBillingTest, AnIdentifierUsedWithin24HoursIsRefusedAsADuplicate) {
  ASSERT_EQ(post_event(event_with("req-1", "5"))->status, 200);
  now_ = kNow + kDay - 1;
  const auto again = post_event(event_with("req-1", "5"));
  EXPECT_TRUE(v2_refusal(again, 400, "duplicate_meter_event"));
  EXPECT_NE(error_of(again)["message"].get<std::string>().find(
                "An event already exists with identifier req-1"),
            std::string::npos)
      << again->body;
  EXPECT_EQ(again->get_header_value("Stripe-Should-Retry"), "false");
  EXPECT_EQ(total(alice_), 5);
}

TEST_F(TokenBillingTest, AnIdentifierIsAcceptedAgainAfter24Hours) {
  ASSERT_EQ(post_event(event_with("req-1", "5"))->status, 200);
  now_ = kNow + kDay;
  const auto again = post_event(event_with("req-1", "5"));
  ASSERT_EQ(again->status, 200) << again->body;
  EXPECT_EQ(total(alice_), 5 + 5);
}

TEST_F(TokenBillingTest, AnIdentifierUsedOverV1IsADuplicateOnV2) {
  ASSERT_EQ(client()
                .Post("/v1/billing/meter_events",
                      v1_form(alice_, "1", "input", "m") + "&identifier=shared-1", kForm)
                ->status,
            200);
  EXPECT_TRUE(v2_refusal(post_event(event_with("shared-1")), 400, "duplicate_meter_event"));
}

TEST_F(TokenBillingTest, MalformedBodiesAreRefusedInTheV2Shape) {
  auto without_name = event(alice_, "1");
  without_name.erase("event_name");
  auto without_payload = event(alice_, "1");
  without_payload.erase("payload");
  auto numeric_payload = event(alice_, "1");
  numeric_payload["payload"]["value"] = 1;
  auto unknown_field = event(alice_, "1");
  unknown_field["quantity"] = "1";
  auto long_name = event(alice_, "1");
  long_name["event_name"] = std::string(101, 'e');
  auto long_identifier = event_with(std::string(101, 'i'));
  auto bad_timestamp = event(alice_, "1");
  bad_timestamp["timestamp"] = kNow;  // unix seconds, not RFC 3339
  for (const auto& body : {without_name, without_payload, numeric_payload, unknown_field, long_name,
                           long_identifier, bad_timestamp}) {
    EXPECT_TRUE(v2_refusal(post_event(body), 400, "invalid_fields")) << body.dump();
  }
  EXPECT_TRUE(v2_refusal(post_raw("not json"), 400, "invalid_json"));
  EXPECT_TRUE(v2_refusal(post_raw("[]"), 400, "invalid_json"));
  EXPECT_EQ(recorded_events(), 0u);
}

TEST_F(TokenBillingTest, AHundredCharacterNameAndIdentifierAreAccepted) {
  auto sent = event_with(std::string(100, 'i'));
  ASSERT_EQ(post_event(sent)->status, 200);
  sent["event_name"] = std::string(100, 'e');
  sent["identifier"] = "other";
  EXPECT_EQ(post_event(sent)->status, 200);
}

// --- Asynchronous checks: accepted, not counted -------------------------------------------

TEST_F(TokenBillingTest, EventsStripeRejectsLaterAreAcceptedButNotCounted) {
  auto no_meter = event(alice_, "1");
  no_meter["event_name"] = "no_such_meter";
  auto unknown_customer = event("cus_unknown", "1");
  auto no_customer = event(alice_, "1");
  no_customer["payload"].erase("stripe_customer_id");
  auto no_dimension = event(alice_, "1");
  no_dimension["payload"].erase("model");
  const std::vector<std::pair<json, std::string>> cases = {
      {no_meter, "no_meter"},
      {unknown_customer, "meter_event_customer_not_found"},
      {no_customer, "meter_event_no_customer_defined"},
      {no_dimension, "missing_dimension_payload_keys"}};
  for (const auto& [body, code] : cases) {
    const auto result = post_event(body);
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 200) << result->body;
    EXPECT_EQ(emulator_.meter_events().back().error_code, code) << body.dump();
  }
  EXPECT_TRUE(emulator_.meter_totals_by_customer(kEventName).empty());
}

// --- Authentication and restricted keys ---------------------------------------------------

TEST_F(TokenBillingTest, AStreamSessionTokenIsNotAKeyForMeterEvents) {
  const auto token = session_token();
  EXPECT_TRUE(v2_refusal(post_event(event(alice_, "1"), token), 401, "invalid_api_key"));
  EXPECT_EQ(
      error_of(post_event(event(alice_, "1"), token))["message"].get<std::string>().find(token),
      std::string::npos);
  EXPECT_EQ(recorded_events(), 0u);
}

TEST_F(TokenBillingTest, WithoutAKeyMeterEventsAnswer401) {
  const auto result = client("").Post(kMeterEventsPath, event(alice_, "1").dump(), kJson);
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 401);
  EXPECT_EQ(recorded_events(), 0u);
}

TEST_F(TokenBillingTest, ARestrictedKeyWithTheMeterEventPermissionRecordsEvents) {
  ASSERT_EQ(post_event(event(alice_, "4"), kRestrictedKey)->status, 200);
  const auto v1 =
      client(kRestrictedKey)
          .Post("/v1/billing/meter_events", v1_form(alice_, "6", "input", "openai/gpt-4.1"), kForm);
  ASSERT_EQ(v1->status, 200) << v1->body;
  EXPECT_EQ(total(alice_), 4 + 6);
}

TEST_F(TokenBillingTest, ARestrictedKeyWithoutThePermissionGetsStripes403) {
  const auto result =
      client(kRestrictedKey).Get("/v1/customers/search?query=metadata%5B%27k%27%5D%3A%27v%27");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 403);
  const auto error = error_of(result);
  EXPECT_EQ(error["type"], "invalid_request_error");
  const auto masked = "rk_test_" + std::string(kRestrictedKey.size() - 8 - 6, '*') +
                      kRestrictedKey.substr(kRestrictedKey.size() - 6);
  EXPECT_EQ(error["message"],
            "The provided key '" + masked +
                "' does not have the required permissions for this endpoint on account "
                "'acct_emulator'. Having the 'rak_customer_read' permission would allow this "
                "request to continue.");
  EXPECT_EQ(result->body.find(kRestrictedKey), std::string::npos);
}

TEST_F(TokenBillingTest, EachOperationNamesItsOwnPermission) {
  auto restricted = client(kRestrictedKey);
  const auto permission_in = [](const httplib::Result& result) {
    const auto message = json::parse(result->body)["error"]["message"].get<std::string>();
    const auto start = message.find("Having the '") + 12;
    return message.substr(start, message.find('\'', start) - start);
  };
  EXPECT_EQ(permission_in(restricted.Get("/v1/subscriptions")), "rak_subscription_read");
  EXPECT_EQ(permission_in(restricted.Get("/v1/billing/meters")), "rak_billing_meter_read");
  EXPECT_EQ(permission_in(restricted.Post("/v1/customers", "", kForm)), "rak_customer_write");
  const auto session = restricted.Post("/v2/billing/meter_event_session", "{}", kJson);
  EXPECT_EQ(session->status, 403);
  EXPECT_EQ(permission_in(session), "rak_billing_meter_event_session_write");
  EXPECT_EQ(emulator_.meter_sessions_created(), 0u);
}

TEST_F(TokenBillingTest, AWritePermissionGrantsItsReadAndKeysCanBeAddedAtRuntime) {
  const std::string key = "rk_test_runtime_key_0123456789abcdef";
  EXPECT_EQ(client(key).Get("/v1/customers")->status, 401);
  emulator_.add_restricted_key(key, {"customer_write", "rak_subscription_read"});
  const auto listed = client(key).Get("/v1/customers");
  ASSERT_EQ(listed->status, 200) << listed->body;
  EXPECT_EQ(body_of(listed)["data"].size(), 2u);
  EXPECT_EQ(client(key).Get("/v1/subscriptions")->status, 200);
  EXPECT_EQ(post_event(event(alice_, "1"), key)->status, 403);
}

TEST_F(TokenBillingTest, UnknownPermissionsAndKeysThatAreNotRestrictedAreRefused) {
  EXPECT_THROW(emulator_.add_restricted_key("rk_test_x0123456789", {"rak_everything"}),
               std::invalid_argument);
  EXPECT_THROW(emulator_.add_restricted_key("sk_test_x0123456789", {"rak_customer_read"}),
               std::invalid_argument);
  EmulatorOptions options;
  options.restricted_keys = {{"rk_test_y0123456789", {"customers_read_typo"}}};
  EXPECT_THROW({ Emulator refused(options); }, std::invalid_argument);
}

// --- Dimensions ---------------------------------------------------------------------------

struct SentEvent {
  std::string channel;  // v1 | stream | v2
  std::string customer;
  std::string token_type;
  std::string model;
  int value;
};

TEST_F(TokenBillingTest, TotalsAreSplitByCustomerAndDimensionAcrossEveryChannel) {
  const std::vector<SentEvent> sent = {
      {"v1", alice_, "input", "openai/gpt-4.1", 100},
      {"stream", alice_, "input", "openai/gpt-4.1", 50},
      {"v2", alice_, "output", "openai/gpt-4.1", 20},
      {"v2", alice_, "input", "anthropic/claude-sonnet-4", 7},
      {"stream", bob_, "output", "anthropic/claude-sonnet-4", 9},
      {"v1", bob_, "output", "anthropic/claude-sonnet-4", 1},
      {"v2", bob_, "input", "openai/gpt-4.1", 300},
  };
  const auto token = session_token();
  DimensionTotals expected;
  for (const auto& one : sent) {
    const auto value = std::to_string(one.value);
    const auto result =
        send(one.channel, token, event(one.customer, value, one.token_type, one.model),
             v1_form(one.customer, value, one.token_type, one.model));
    ASSERT_TRUE(result);
    ASSERT_EQ(result->status, 200) << result->body;
    expected[{one.customer, one.token_type, one.model}] += one.value;
  }
  EXPECT_EQ(emulator_.meter_totals_by_dimension(kEventName, "", {"token_type", "model"}), expected);

  DimensionTotals bobs;
  for (const auto& [group, value] : expected) {
    if (group[0] == bob_) bobs[group] = value;
  }
  EXPECT_EQ(emulator_.meter_totals_by_dimension(kEventName, bob_, {"token_type", "model"}), bobs);

  DimensionTotals by_type;
  for (const auto& [group, value] : expected) by_type[{group[0], group[1]}] += value;
  EXPECT_EQ(emulator_.meter_totals_by_dimension(kEventName, "", {"token_type"}), by_type);
}

TEST_F(TokenBillingTest, CancelledAndRejectedEventsAreNotInTheDimensionTotals) {
  ASSERT_EQ(post_event(event_with("keep", "5"))->status, 200);
  ASSERT_EQ(post_event(event_with("cancel-me", "7"))->status, 200);
  auto no_model = event_with("no-model", "11");
  no_model["payload"].erase("model");
  ASSERT_EQ(post_event(no_model)->status, 200);
  ASSERT_EQ(client()
                .Post("/v1/billing/meter_event_adjustments",
                      std::string("event_name=") + kEventName +
                          "&type=cancel&cancel[identifier]=cancel-me",
                      kForm)
                ->status,
            200);
  EXPECT_EQ(emulator_.meter_totals_by_dimension(kEventName, "", {"token_type", "model"}),
            (DimensionTotals{{{alice_, "input", "openai/gpt-4.1"}, 5}}));
}

TEST_F(TokenBillingTest, TheControlEndpointAnswersTheDimensionTotalsAsJson) {
  ASSERT_EQ(post_event(event(alice_, "12", "input", "openai/gpt-4.1"))->status, 200);
  ASSERT_EQ(post_event(event(alice_, "3", "output", "openai/gpt-4.1"))->status, 200);
  ASSERT_EQ(post_event(event(bob_, "8", "input", "openai/gpt-4.1"))->status, 200);
  httplib::Client control("127.0.0.1", emulator_.port());
  const auto result = control.Get(std::string("/_emulator/meter_dimensions?event_name=") +
                                  kEventName + "&keys=token_type,model");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  json expected = json::array();
  for (const auto& [group, value] :
       emulator_.meter_totals_by_dimension(kEventName, "", {"token_type", "model"})) {
    expected.push_back({{"customer", group[0]},
                        {"dimensions", {{"token_type", group[1]}, {"model", group[2]}}},
                        {"value", value}});
  }
  EXPECT_EQ(body_of(result), (json{{"totals", expected}}));
  ASSERT_EQ(expected.size(), 3u);
  const auto only_bob = control.Get(std::string("/_emulator/meter_dimensions?event_name=") +
                                    kEventName + "&keys=model&customer=" + bob_);
  const json bobs_total = {
      {"customer", bob_}, {"dimensions", {{"model", "openai/gpt-4.1"}}}, {"value", 8}};
  EXPECT_EQ(body_of(only_bob), (json{{"totals", json::array({bobs_total})}}));
  EXPECT_EQ(control.Get("/_emulator/meter_dimensions?keys=model")->status, 400);
}

TEST_F(TokenBillingTest, AV1MeterTakesDimensionPayloadKeys) {
  const auto created =
      client().Post("/v1/billing/meters",
                    "display_name=Tokens&event_name=tokens_v1&default_aggregation[formula]=sum"
                    "&dimension_payload_keys[]=token_type&dimension_payload_keys[]=model",
                    kForm);
  ASSERT_TRUE(created);
  ASSERT_EQ(created->status, 200) << created->body;
  EXPECT_EQ(body_of(created)["dimension_payload_keys"], (json{"token_type", "model"}));
  auto sent = event(alice_, "2");
  sent["event_name"] = "tokens_v1";
  ASSERT_EQ(post_event(sent)->status, 200);
  sent["payload"].erase("token_type");
  ASSERT_EQ(post_event(sent)->status, 200);
  EXPECT_EQ(emulator_.meter_events().back().error_code, "missing_dimension_payload_keys");
  EXPECT_EQ(emulator_.meter_totals_by_dimension("tokens_v1", "", {"token_type", "model"}),
            (DimensionTotals{{{alice_, "input", "openai/gpt-4.1"}, 2}}));
}

TEST_F(TokenBillingTest, AMeterWithoutDimensionsKeepsStripesPublicShape) {
  const auto created =
      client().Post("/v1/billing/meters",
                    "display_name=Calls&event_name=calls&default_aggregation[formula]=sum", kForm);
  ASSERT_EQ(created->status, 200) << created->body;
  EXPECT_FALSE(body_of(created).contains("dimension_payload_keys"));
}

}  // namespace
