// The Stripe emulator's billing credits and webhooks, over real HTTP on loopback: credit grants,
// the credit balance summary and the balance transactions of invoices applying credits; events
// POSTed to a receiving server in this test, signed as Stripe signs them (checked here with
// OpenSSL, not with the emulator's code), retried after failures, redelivered, forged and stale;
// thin meter error report events and the full event at GET /v2/core/events/{id}; restricted keys;
// the same controls over /_emulator/. Nothing sleeps: the tests wait on conditions.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hmac_reference.h"
#include "stripe_emulator/emulator.h"

namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using stripe_emulator::Emulator;
using stripe_emulator::EmulatorOptions;
using stripe_emulator::WebhookDelivery;

constexpr char kApiKey[] = "sk_test_emulator_0000000000000000";
const std::string kRestrictedKey = "rk_test_" + std::string(93, 'r') + "Xy12Zq";
constexpr char kSecret[] = "whsec_test_5f2b1c0d9e8a7b6c5d4e3f2a1b0c9d8e";
constexpr char kForm[] = "application/x-www-form-urlencoded";
constexpr char kJson[] = "application/json";
constexpr std::int64_t kNow = 1'700'000'000;                // 2023-11-14T22:13:20Z
constexpr char kNowRfc3339[] = "2023-11-14T22:13:20.000Z";  // kNow as the v2 API writes it
constexpr auto kDeadline = milliseconds(10'000);
// Long enough for a retry that should not come (the test's delays are 10, 20 and 40 ms).
constexpr auto kQuiet = milliseconds(300);

// A Stripe-Signature header read as a receiver reads it: its t and whether its v1 is the HMAC of
// "<t>.<body>" under `secret`.
struct Signature {
  std::int64_t t = -1;
  bool valid = false;
};

Signature check_signature(const std::string& header, const std::string& body,
                          const std::string& secret) {
  Signature signature;
  std::string t_text, v1;
  std::size_t start = 0;
  while (start <= header.size()) {
    const auto end = std::min(header.find(',', start), header.size());
    const auto part = header.substr(start, end - start);
    const auto equals = part.find('=');
    if (equals != std::string::npos) {
      if (part.substr(0, equals) == "t") t_text = part.substr(equals + 1);
      if (part.substr(0, equals) == "v1") v1 = part.substr(equals + 1);
    }
    start = end + 1;
  }
  if (t_text.empty() || v1.empty()) return signature;
  signature.t = std::stoll(t_text);
  signature.valid =
      v1 == stripe_billing::testing::reference_hmac_sha256_hex(secret, t_text + "." + body);
  return signature;
}

// The webhook endpoint: answers each POST to /hooks with the next status of its script (then
// with `fallback`), records what it received, and lets the test wait for a number of requests.
class Receiver {
 public:
  struct Received {
    std::string body;
    std::string signature;
    std::string content_type;
  };

  Receiver() {
    server_.Post("/hooks", [this](const httplib::Request& request, httplib::Response& response) {
      std::lock_guard lock(mutex_);
      received_.push_back({request.body, request.get_header_value("Stripe-Signature"),
                           request.get_header_value("Content-Type")});
      response.status = fallback_;
      if (!script_.empty()) {
        response.status = script_.front();
        script_.pop_front();
      }
      response.set_content("{}", kJson);
      if (on_request_) on_request_();
      changed_.notify_all();
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("cannot bind the webhook receiver");
    listener_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::yield();  // stop() needs it listening
  }
  ~Receiver() {
    server_.stop();
    listener_.join();
  }

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hooks"; }
  void answer(std::deque<int> script, int fallback = 200) {
    std::lock_guard lock(mutex_);
    script_ = std::move(script);
    fallback_ = fallback;
  }
  void on_request(std::function<void()> callback) {
    std::lock_guard lock(mutex_);
    on_request_ = std::move(callback);
  }
  std::vector<Received> received() const {
    std::lock_guard lock(mutex_);
    return received_;
  }
  bool wait_for(std::size_t count) const {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kDeadline, [&] { return received_.size() >= count; });
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::vector<Received> received_;
  std::deque<int> script_;
  int fallback_ = 200;
  std::function<void()> on_request_;
  std::thread listener_;
};

json body_of(const httplib::Result& result) { return json::parse(result->body); }
json error_of(const httplib::Result& result) { return body_of(result).at("error"); }

class WebhookTest : public ::testing::Test {
 protected:
  WebhookTest() : emulator_(options()) {
    emulator_.add_webhook_endpoint(receiver_.url(), kSecret);
    alice_ = emulator_.create_customer({{"litellm_customer_id", "alice"}});
  }

  EmulatorOptions options() {
    EmulatorOptions options;
    options.api_keys = {kApiKey};
    options.clock = [this] { return now_.load(); };
    options.webhook_retry_delays = {milliseconds(10), milliseconds(20), milliseconds(40)};
    return options;
  }

  httplib::Client client(const std::string& bearer = kApiKey) const {
    httplib::Client client("127.0.0.1", emulator_.port());
    client.set_read_timeout(std::chrono::seconds(10));
    if (!bearer.empty()) client.set_bearer_token_auth(bearer.c_str());
    return client;
  }

  httplib::Result get(const std::string& target, const std::string& bearer = kApiKey) const {
    return client(bearer).Get(target.c_str());
  }

  httplib::Result summary(const std::string& customer, const std::string& filter =
                                                           "filter[type]=applicability_scope&"
                                                           "filter[applicability_scope][price_type]"
                                                           "=metered") const {
    return get("/v1/billing/credit_balance_summary?customer=" + customer + "&" + filter);
  }

  // The available balance a summary answers (and checks that the ledger balance is the same).
  std::int64_t summarized_balance(const httplib::Result& result) const {
    const auto balances = body_of(result).at("balances");
    if (balances.size() != 1) throw std::runtime_error("not one balance: " + result->body);
    EXPECT_EQ(balances[0]["ledger_balance"], balances[0]["available_balance"]);
    return balances[0]["available_balance"]["monetary"]["value"].get<std::int64_t>();
  }

  std::vector<WebhookDelivery> deliveries(std::size_t count) const {
    EXPECT_TRUE(emulator_.wait_for_webhook_deliveries(count, kDeadline));
    return emulator_.webhook_deliveries();
  }

  // The events of the deliveries, parsed, in delivery order.
  std::vector<json> delivered_events(std::size_t count) const {
    std::vector<json> events;
    for (const auto& delivery : deliveries(count)) events.push_back(json::parse(delivery.body));
    return events;
  }

  httplib::Result post_meter_event(const std::string& customer, const std::string& identifier,
                                   const std::string& event_name = "llm_tokens") const {
    return client().Post("/v1/billing/meter_events",
                         "event_name=" + event_name + "&identifier=" + identifier +
                             "&payload[stripe_customer_id]=" + customer + "&payload[value]=5",
                         kForm);
  }

  std::atomic<std::int64_t> now_{kNow};
  Receiver receiver_;  // before the emulator: it outlives the deliveries
  Emulator emulator_;
  std::string alice_;
};

// --- Signatures ---------------------------------------------------------------------------

TEST_F(WebhookTest, AnEventIsPostedSignedWithTheEndpointsSecret) {
  const auto grant = emulator_.create_credit_grant(alice_, 1000);
  ASSERT_TRUE(receiver_.wait_for(1));
  const auto received = receiver_.received().at(0);
  EXPECT_EQ(received.content_type.rfind(kJson, 0), 0u) << received.content_type;
  const auto signature = check_signature(received.signature, received.body, kSecret);
  EXPECT_TRUE(signature.valid) << received.signature;
  EXPECT_EQ(signature.t, kNow);
  EXPECT_FALSE(check_signature(received.signature, received.body, "whsec_other").valid);
  EXPECT_EQ(json::parse(received.body)["data"]["object"]["id"], grant);

  const auto delivery = deliveries(1).at(0);
  EXPECT_EQ(delivery.kind, "normal");
  EXPECT_EQ(delivery.attempt, 1);
  EXPECT_EQ(delivery.status, 200);
  EXPECT_EQ(delivery.type, "billing.credit_grant.created");
  EXPECT_EQ(delivery.url, receiver_.url());
  EXPECT_EQ(delivery.signature_header, received.signature);
  EXPECT_EQ(delivery.body, received.body);
}

TEST_F(WebhookTest, AFailedDeliveryIsRetriedWithTheSameEventAndAFreshSignatureUntilA2xx) {
  receiver_.answer({500, 503, 200});
  receiver_.on_request([this] { ++now_; });  // each try sees a later clock
  emulator_.create_credit_grant(alice_, 1000);
  const auto tries = deliveries(3);
  ASSERT_EQ(tries.size(), 3u);
  std::vector<std::string> kinds;
  std::vector<int> statuses, attempts;
  std::set<std::int64_t> times;
  for (const auto& attempt : tries) {
    kinds.push_back(attempt.kind);
    statuses.push_back(attempt.status);
    attempts.push_back(attempt.attempt);
    EXPECT_EQ(attempt.event_id, tries[0].event_id);
    EXPECT_EQ(attempt.body, tries[0].body);
    const auto signature = check_signature(attempt.signature_header, attempt.body, kSecret);
    EXPECT_TRUE(signature.valid);
    times.insert(signature.t);
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"normal", "retry", "retry"}));
  EXPECT_EQ(statuses, (std::vector<int>{500, 503, 200}));
  EXPECT_EQ(attempts, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(times, (std::set<std::int64_t>{kNow, kNow + 1, kNow + 2}));
  EXPECT_EQ(json::parse(tries[0].body)["id"], tries[0].event_id);
  EXPECT_FALSE(emulator_.wait_for_webhook_deliveries(4, kQuiet));  // answered: no more tries
}

TEST_F(WebhookTest, ADeliveryIsGivenUpAfterTheRetryDelays) {
  receiver_.answer({}, 500);
  emulator_.create_credit_grant(alice_, 1000);
  const auto tries = deliveries(4);
  ASSERT_EQ(tries.size(), 4u);
  EXPECT_EQ(tries.back().attempt, 4);
  EXPECT_EQ(tries.back().status, 500);
  EXPECT_FALSE(emulator_.wait_for_webhook_deliveries(5, kQuiet));
  EXPECT_EQ(receiver_.received().size(), 4u);
}

TEST_F(WebhookTest, AnEndpointThatDoesNotAnswerIsRetriedAndRecordedWithStatus0) {
  std::string dead_url;
  {
    Receiver gone;
    dead_url = "http://127.0.0.1:" + std::to_string(gone.port()) + "/hooks";
  }
  emulator_.add_webhook_endpoint(dead_url, kSecret);
  emulator_.create_credit_grant(alice_, 1000);
  std::vector<int> dead_statuses;
  for (const auto& delivery : deliveries(5)) {
    if (delivery.url == dead_url) dead_statuses.push_back(delivery.status);
  }
  EXPECT_EQ(dead_statuses, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(receiver_.received().size(), 1u);  // the live endpoint got it once
}

TEST_F(WebhookTest, AForgedDeliveryDoesNotVerifyAndAStaleOneIsOld) {
  receiver_.answer({200, 400, 400});  // refusals of forged and stale ones are not retried
  emulator_.create_credit_grant(alice_, 1000);
  const auto event_id = deliveries(1).at(0).event_id;
  emulator_.deliver_forged(event_id);
  ASSERT_TRUE(emulator_.wait_for_webhook_deliveries(2, kDeadline));
  emulator_.deliver_stale(event_id, std::chrono::seconds(600));
  const auto all = deliveries(3);
  ASSERT_EQ(all.size(), 3u);

  EXPECT_EQ(all[1].kind, "forged");
  EXPECT_EQ(all[1].event_id, event_id);
  const auto forged = check_signature(all[1].signature_header, all[1].body, kSecret);
  EXPECT_FALSE(forged.valid);
  EXPECT_EQ(forged.t, kNow);

  EXPECT_EQ(all[2].kind, "stale");
  const auto stale = check_signature(all[2].signature_header, all[2].body, kSecret);
  EXPECT_TRUE(stale.valid);
  EXPECT_EQ(stale.t, kNow - 600);
  EXPECT_FALSE(emulator_.wait_for_webhook_deliveries(4, kQuiet));
}

TEST_F(WebhookTest, ARedeliveryIsTheSameEventFreshlySigned) {
  emulator_.create_credit_grant(alice_, 1000);
  const auto first = deliveries(1).at(0);
  now_ += 30;
  emulator_.redeliver_event(first.event_id);
  const auto again = deliveries(2).at(1);
  EXPECT_EQ(again.kind, "redelivery");
  EXPECT_EQ(again.event_id, first.event_id);
  EXPECT_EQ(again.body, first.body);
  const auto signature = check_signature(again.signature_header, again.body, kSecret);
  EXPECT_TRUE(signature.valid);
  EXPECT_EQ(signature.t, kNow + 30);
  EXPECT_THROW(emulator_.redeliver_event("evt_test_unknown"), std::invalid_argument);
}

TEST_F(WebhookTest, StopEndsTheDeliveryThreadWithoutWaitingForRetries) {
  auto options = this->options();
  options.webhook_retry_delays = {std::chrono::minutes(10)};
  Emulator emulator(options);
  emulator.add_webhook_endpoint(receiver_.url(), kSecret);
  receiver_.answer({}, 500);
  emulator.create_credit_grant(emulator.create_customer({}), 1);
  ASSERT_TRUE(emulator.wait_for_webhook_deliveries(1, kDeadline));
  const auto started = std::chrono::steady_clock::now();
  emulator.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
}

TEST_F(WebhookTest, EventsEmittedBeforeAnyEndpointAreNotDelivered) {
  Emulator emulator(options());
  emulator.create_credit_grant(emulator.create_customer({}), 1);
  EXPECT_TRUE(emulator.webhook_deliveries().empty());
  emulator.add_webhook_endpoint(receiver_.url(), kSecret);
  emulator.create_credit_grant(emulator.create_customer({}), 2);
  ASSERT_TRUE(emulator.wait_for_webhook_deliveries(1, kDeadline));
  EXPECT_EQ(json::parse(emulator.webhook_deliveries().at(0).body)["pending_webhooks"], 1);
  EXPECT_THROW(emulator.add_webhook_endpoint("ftp://127.0.0.1/x", kSecret), std::invalid_argument);
  EXPECT_THROW(emulator.add_webhook_endpoint(receiver_.url(), ""), std::invalid_argument);
}

// --- Billing credits ----------------------------------------------------------------------

TEST_F(WebhookTest, TheBalanceSummaryFollowsGrantsAndInvoicesApplyingThem) {
  const auto bob = emulator_.create_customer({{"litellm_customer_id", "bob"}});
  const auto first = emulator_.create_credit_grant(alice_, 1000);
  const auto second = emulator_.create_credit_grant(alice_, 500);
  EXPECT_EQ(summarized_balance(summary(alice_)), 1500);
  emulator_.consume_credits(alice_, 1200);  // all of the first grant, 200 of the second
  EXPECT_EQ(emulator_.credit_balance(alice_), 300);

  const auto result = summary(alice_);
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(
      body_of(result),
      (json{{"object", "billing.credit_balance_summary"},
            {"balances",
             {{{"available_balance",
                {{"monetary", {{"currency", "usd"}, {"value", 300}}}, {"type", "monetary"}}},
               {"ledger_balance",
                {{"monetary", {{"currency", "usd"}, {"value", 300}}}, {"type", "monetary"}}}}}},
            {"customer", alice_},
            {"livemode", false}}));
  EXPECT_EQ(summarized_balance(
                summary(alice_, "filter[type]=credit_grant&filter[credit_grant]=" + first)),
            0);
  EXPECT_EQ(summarized_balance(
                summary(alice_, "filter[type]=credit_grant&filter[credit_grant]=" + second)),
            300);

  emulator_.consume_credits(alice_, 1000);  // more than is left: down to 0, never below
  EXPECT_EQ(emulator_.credit_balance(alice_), 0);
  EXPECT_EQ(summarized_balance(summary(alice_)), 0);
  emulator_.consume_credits(alice_, 10);  // nothing left to apply: no transaction

  EXPECT_EQ(body_of(summary(bob))["balances"], json::array());
  EXPECT_EQ(emulator_.credit_balance(bob), 0);

  std::vector<std::string> types;
  for (const auto& event : delivered_events(5)) types.push_back(event["type"]);
  EXPECT_EQ(types, (std::vector<std::string>{"billing.credit_grant.created",
                                             "billing.credit_grant.created",
                                             "billing.credit_balance_transaction.created",
                                             "billing.credit_balance_transaction.created",
                                             "billing.credit_balance_transaction.created"}));
  EXPECT_FALSE(emulator_.wait_for_webhook_deliveries(6, kQuiet));
}

TEST_F(WebhookTest, TheGrantEventCarriesTheGrantAsRetrieved) {
  const auto grant = emulator_.create_credit_grant(alice_, 1000, "eur");
  const auto event = delivered_events(1).at(0);
  EXPECT_EQ(event["object"], "event");
  EXPECT_EQ(event["api_version"], "2025-02-24.acacia");
  EXPECT_EQ(event["created"], kNow);
  EXPECT_EQ(event["livemode"], false);
  EXPECT_EQ(event["pending_webhooks"], 1);
  EXPECT_EQ(event["request"], (json{{"id", nullptr}, {"idempotency_key", nullptr}}));
  EXPECT_EQ(event["id"].get<std::string>().rfind("evt_test_", 0), 0u);

  const auto retrieved = get("/v1/billing/credit_grants/" + grant);
  ASSERT_EQ(retrieved->status, 200) << retrieved->body;
  const auto object = body_of(retrieved);
  EXPECT_EQ(event["data"]["object"], object);
  EXPECT_EQ(grant.rfind("credgr_test_", 0), 0u);
  EXPECT_EQ(object["object"], "billing.credit_grant");
  EXPECT_EQ(object["customer"], alice_);
  EXPECT_EQ(object["category"], "paid");
  EXPECT_EQ(object["created"], kNow);
  EXPECT_EQ(object["amount"],
            (json{{"monetary", {{"currency", "eur"}, {"value", 1000}}}, {"type", "monetary"}}));
  EXPECT_EQ(object["applicability_config"], (json{{"scope", {{"price_type", "metered"}}}}));

  const auto missing = get("/v1/billing/credit_grants/credgr_test_nope");
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(error_of(missing)["code"], "resource_missing");
  EXPECT_THROW(emulator_.create_credit_grant(alice_, 5, "usd"), std::invalid_argument);
}

TEST_F(WebhookTest, ABalanceTransactionEventNamesTheGrantButNoCustomer) {
  const auto grant = emulator_.create_credit_grant(alice_, 1000);
  emulator_.consume_credits(alice_, 250);
  const auto event = delivered_events(2).at(1);
  EXPECT_EQ(event["type"], "billing.credit_balance_transaction.created");
  const auto& transaction = event["data"]["object"];
  EXPECT_FALSE(transaction.contains("customer")) << transaction.dump();
  EXPECT_EQ(transaction["id"].get<std::string>().rfind("cbtxn_test_", 0), 0u);
  EXPECT_EQ(transaction["object"], "billing.credit_balance_transaction");
  EXPECT_EQ(transaction["credit_grant"], grant);
  EXPECT_EQ(transaction["type"], "debit");
  EXPECT_EQ(transaction["credit"], nullptr);
  EXPECT_EQ(transaction["effective_at"], kNow);
  EXPECT_EQ(transaction["test_clock"], nullptr);
  const auto& debit = transaction["debit"];
  EXPECT_EQ(debit["type"], "credits_applied");
  EXPECT_EQ(debit["amount"],
            (json{{"monetary", {{"currency", "usd"}, {"value", 250}}}, {"type", "monetary"}}));
  EXPECT_EQ(debit["credits_applied"]["invoice"].get<std::string>().rfind("in_test_", 0), 0u);
  EXPECT_EQ(debit["credits_applied"]["invoice_line_item"].get<std::string>().rfind("il_test_", 0),
            0u);
}

TEST_F(WebhookTest, TheBalanceSummaryRefusesUnknownCustomersAndMalformedFilters) {
  const auto unknown = summary("cus_x");
  EXPECT_EQ(unknown->status, 404);
  EXPECT_EQ(error_of(unknown)["code"], "resource_missing");
  EXPECT_EQ(error_of(unknown)["message"], "No such customer: 'cus_x'");
  EXPECT_EQ(error_of(unknown)["param"], "customer");

  const auto no_filter = get("/v1/billing/credit_balance_summary?customer=" + alice_);
  EXPECT_EQ(no_filter->status, 400);
  EXPECT_EQ(error_of(no_filter)["code"], "parameter_missing");
  EXPECT_EQ(error_of(no_filter)["param"], "filter");

  const auto invented = summary(alice_, "filter[type]=applicability_scope&filter[zz]=1");
  EXPECT_EQ(invented->status, 400);
  EXPECT_EQ(error_of(invented)["message"], "Received unknown parameter: filter[zz]");

  const auto bad_type = summary(alice_, "filter[type]=everything");
  EXPECT_EQ(bad_type->status, 400);
  EXPECT_EQ(error_of(bad_type)["param"], "filter[type]");

  const auto no_grant = summary(alice_, "filter[type]=credit_grant");
  EXPECT_EQ(no_grant->status, 400);
  EXPECT_EQ(error_of(no_grant)["code"], "parameter_missing");
  EXPECT_EQ(error_of(no_grant)["param"], "filter[credit_grant]");

  const auto bob = emulator_.create_customer({});
  const auto bobs = emulator_.create_credit_grant(bob, 10);
  const auto others = summary(alice_, "filter[type]=credit_grant&filter[credit_grant]=" + bobs);
  EXPECT_EQ(others->status, 404);
  EXPECT_EQ(error_of(others)["param"], "filter[credit_grant]");
}

TEST_F(WebhookTest, CreditReadsNeedTheirRestrictedKeyPermission) {
  emulator_.add_restricted_key(kRestrictedKey, {"rak_customer_read"});
  const auto grant = emulator_.create_credit_grant(alice_, 1000);
  for (const auto& target :
       {"/v1/billing/credit_balance_summary?customer=" + alice_ + "&filter[type]=credit_grant",
        "/v1/billing/credit_grants/" + grant}) {
    const auto refused = get(target, kRestrictedKey);
    EXPECT_EQ(refused->status, 403) << target;
    EXPECT_NE(error_of(refused)["message"].get<std::string>().find(
                  "Having the 'rak_billing_credit_read' permission would allow this request"),
              std::string::npos)
        << refused->body;
  }
  emulator_.add_restricted_key(kRestrictedKey, {"rak_billing_credit_read"});
  EXPECT_EQ(summarized_balance(get("/v1/billing/credit_balance_summary?customer=" + alice_ +
                                       "&filter[type]=applicability_scope",
                                   kRestrictedKey)),
            1000);
  EXPECT_EQ(get("/v1/billing/credit_grants/" + grant, kRestrictedKey)->status, 200);
  emulator_.add_restricted_key(kRestrictedKey, {"billing_credit_write"});  // implies the read
  EXPECT_EQ(get("/v1/billing/credit_grants/" + grant, kRestrictedKey)->status, 200);
}

// --- Meter error reports: thin events ------------------------------------------------------

class MeterErrorReportTest : public WebhookTest {
 protected:
  MeterErrorReportTest() { meter_ = emulator_.create_meter("llm_tokens"); }
  std::string meter_;
};

TEST_F(MeterErrorReportTest, TheThinEventHasNoDataAndTheFullEventSamplesTheErrors) {
  for (int i = 1; i <= 6; ++i) {
    ASSERT_EQ(post_meter_event("cus_missing", "bad-" + std::to_string(i))->status, 200);
  }
  const json v2_event = {{"event_name", "llm_tokens"},
                         {"identifier", "bad-7"},
                         {"payload", {{"stripe_customer_id", "cus_missing"}, {"value", "5"}}}};
  ASSERT_EQ(client().Post("/v2/billing/meter_events", v2_event.dump(), kJson)->status, 200);
  ASSERT_EQ(post_meter_event(alice_, "good-1")->status, 200);
  ASSERT_EQ(post_meter_event(alice_, "good-2")->status, 200);
  EXPECT_EQ(emulator_.meter_totals_by_customer("llm_tokens").at(alice_), 10);
  emulator_.reject_meter_event_async("good-1", "meter_event_invalid_value");
  EXPECT_EQ(emulator_.meter_totals_by_customer("llm_tokens").at(alice_), 5);
  EXPECT_THROW(emulator_.reject_meter_event_async("good-1", "meter_event_invalid_value"),
               std::invalid_argument);  // no longer counted

  const auto event_id = emulator_.trigger_meter_error_report("llm_tokens");
  ASSERT_EQ(event_id.rfind("evt_test_", 0), 0u) << event_id;
  const auto delivery = deliveries(1).at(0);
  EXPECT_EQ(delivery.event_id, event_id);
  EXPECT_EQ(delivery.type, "v1.billing.meter.error_report_triggered");
  EXPECT_TRUE(check_signature(delivery.signature_header, delivery.body, kSecret).valid);
  const json related = {
      {"id", meter_}, {"type", "billing.meter"}, {"url", "/v1/billing/meters/" + meter_}};
  const json thin = {{"id", event_id},
                     {"object", "v2.core.event"},
                     {"type", "v1.billing.meter.error_report_triggered"},
                     {"created", kNowRfc3339},
                     {"livemode", false},
                     {"context", nullptr},
                     {"reason", nullptr},
                     {"related_object", related}};
  EXPECT_EQ(json::parse(delivery.body), thin);  // no data

  const auto fetched = get("/v2/core/events/" + event_id);
  ASSERT_EQ(fetched->status, 200) << fetched->body;
  auto full = body_of(fetched);
  const auto data = full["data"];
  full.erase("data");
  EXPECT_EQ(full, thin);
  EXPECT_EQ(data["developer_message_summary"], "There are 8 invalid events");
  EXPECT_EQ(data["validation_start"], kNowRfc3339);
  EXPECT_EQ(data["validation_end"], kNowRfc3339);
  EXPECT_EQ(data["reason"]["error_count"], 8);
  const auto& types = data["reason"]["error_types"];
  ASSERT_EQ(types.size(), 2u) << data.dump();
  EXPECT_EQ(types[0]["code"], "meter_event_customer_not_found");
  EXPECT_EQ(types[0]["error_count"], 7);
  ASSERT_EQ(types[0]["sample_errors"].size(), 5u);  // sampled
  for (std::size_t i = 0; i < 5; ++i) {
    const auto& sample = types[0]["sample_errors"][i];
    EXPECT_EQ(sample["request"]["identifier"], "bad-" + std::to_string(i + 1));
    EXPECT_FALSE(sample["error_message"].get<std::string>().empty());
  }
  EXPECT_EQ(types[1]["code"], "meter_event_invalid_value");
  EXPECT_EQ(types[1]["error_count"], 1);
  EXPECT_EQ(types[1]["sample_errors"][0]["request"]["identifier"], "good-1");

  EXPECT_EQ(emulator_.trigger_meter_error_report("llm_tokens"), "");  // all reported
  ASSERT_EQ(post_meter_event("cus_missing", "bad-8")->status, 200);
  EXPECT_NE(emulator_.trigger_meter_error_report("llm_tokens"), "");  // only the new one
  EXPECT_THROW(emulator_.trigger_meter_error_report("no_such_meter"), std::invalid_argument);
}

TEST_F(MeterErrorReportTest, SamplesAreCappedAsTheOptionSays) {
  auto options = this->options();
  options.error_report_samples = 1;
  Emulator emulator(options);
  emulator.create_meter("llm_tokens");
  httplib::Client other("127.0.0.1", emulator.port());
  other.set_bearer_token_auth(kApiKey);
  for (const auto* identifier : {"a", "b", "c"}) {
    ASSERT_EQ(
        other
            .Post("/v1/billing/meter_events",
                  std::string("event_name=llm_tokens&payload[value]=1&identifier=") + identifier,
                  kForm)
            ->status,
        200);
  }
  const auto event_id = emulator.trigger_meter_error_report("llm_tokens");
  const auto fetched = other.Get(("/v2/core/events/" + event_id).c_str());
  const auto reason = body_of(fetched)["data"]["reason"];
  EXPECT_EQ(reason["error_count"], 3);
  EXPECT_EQ(reason["error_types"][0]["code"], "meter_event_no_customer_defined");
  EXPECT_EQ(reason["error_types"][0]["error_count"], 3);
  EXPECT_EQ(reason["error_types"][0]["sample_errors"].size(), 1u);
}

TEST_F(MeterErrorReportTest, EventsWithoutAMeterAreReportedAsNoMeterFound) {
  EXPECT_EQ(emulator_.trigger_no_meter_found(), "");
  ASSERT_EQ(post_meter_event(alice_, "orphan-1", "unmetered_tokens")->status, 200);
  ASSERT_EQ(post_meter_event(alice_, "orphan-2", "other_tokens")->status, 200);
  EXPECT_EQ(emulator_.trigger_meter_error_report("llm_tokens"), "");  // not that meter's

  const auto event_id = emulator_.trigger_no_meter_found();
  ASSERT_NE(event_id, "");
  const auto thin = json::parse(deliveries(1).at(0).body);
  EXPECT_EQ(thin["type"], "v1.billing.meter.no_meter_found");
  EXPECT_EQ(thin["related_object"], nullptr);
  EXPECT_FALSE(thin.contains("data"));

  const auto data = body_of(get("/v2/core/events/" + event_id))["data"];
  EXPECT_EQ(data["reason"]["error_count"], 2);
  EXPECT_EQ(data["reason"]["error_types"][0]["code"], "no_meter");
  EXPECT_EQ(data["reason"]["error_types"][0]["sample_errors"][1]["request"]["identifier"],
            "orphan-2");
  EXPECT_EQ(emulator_.trigger_no_meter_found(), "");
}

TEST_F(MeterErrorReportTest, TheFullEventIsServedOnlyForKnownThinEventsAndPermittedKeys) {
  const auto unknown = get("/v2/core/events/evt_test_unknown");
  EXPECT_EQ(unknown->status, 404);
  EXPECT_EQ(error_of(unknown)["code"], "not_found");
  EXPECT_FALSE(error_of(unknown).contains("param"));

  emulator_.create_credit_grant(alice_, 1);  // a snapshot event: not a v2 event
  const auto snapshot = get("/v2/core/events/" + deliveries(1).at(0).event_id);
  EXPECT_EQ(snapshot->status, 404);

  ASSERT_EQ(post_meter_event("cus_missing", "bad-1")->status, 200);
  const auto event_id = emulator_.trigger_meter_error_report("llm_tokens");
  emulator_.add_restricted_key(kRestrictedKey, {"rak_billing_meter_read"});
  const auto refused = get("/v2/core/events/" + event_id, kRestrictedKey);
  EXPECT_EQ(refused->status, 403);
  EXPECT_NE(refused->body.find("rak_event_read"), std::string::npos) << refused->body;
  EXPECT_FALSE(error_of(refused).contains("param"));
  emulator_.add_restricted_key(kRestrictedKey, {"rak_event_read"});
  EXPECT_EQ(get("/v2/core/events/" + event_id, kRestrictedKey)->status, 200);
}

// --- The same controls over HTTP ------------------------------------------------------------

TEST_F(WebhookTest, ControlEndpointsDriveCreditsReportsAndWebhooks) {
  Emulator emulator(options());
  const auto customer = emulator.create_customer({});
  emulator.create_meter("llm_tokens");
  httplib::Client control("127.0.0.1", emulator.port());
  const auto post = [&](const std::string& what, const json& body) {
    const auto result = control.Post(("/_emulator/" + what).c_str(), body.dump(), kJson);
    EXPECT_TRUE(result && result->status == 200) << what << ": " << (result ? result->body : "");
    return result ? json::parse(result->body) : json();
  };
  post("webhook_endpoints", {{"url", receiver_.url()}, {"secret", kSecret}});
  const auto grant = post("credit_grants", {{"customer", customer}, {"amount", 700}})["id"];
  post("consume_credits", {{"customer", customer}, {"amount", 200}});
  EXPECT_EQ(emulator.credit_balance(customer), 500);

  httplib::Client api("127.0.0.1", emulator.port());
  api.set_bearer_token_auth(kApiKey);
  ASSERT_EQ(api.Post("/v1/billing/meter_events",
                     "event_name=llm_tokens&identifier=e-1&payload[stripe_customer_id]=" +
                         customer + "&payload[value]=3",
                     kForm)
                ->status,
            200);
  post("reject_meter_event", {{"identifier", "e-1"}, {"code", "meter_event_invalid_value"}});
  const auto report = post("meter_error_report", {{"event_name", "llm_tokens"}})["event_id"];
  EXPECT_EQ(post("no_meter_found", json::object())["event_id"], "");
  post("deliver", {{"event_id", report}, {"kind", "stale"}, {"age_seconds", 900}});
  ASSERT_TRUE(emulator.wait_for_webhook_deliveries(4, kDeadline));

  const auto listed = control.Get("/_emulator/webhook_deliveries");
  ASSERT_EQ(listed->status, 200);
  const auto deliveries = body_of(listed)["deliveries"];
  ASSERT_EQ(deliveries.size(), 4u);
  EXPECT_EQ(json::parse(deliveries[0]["body"].get<std::string>())["data"]["object"]["id"], grant);
  EXPECT_EQ(deliveries[1]["type"], "billing.credit_balance_transaction.created");
  EXPECT_EQ(deliveries[2]["event_id"], report);
  EXPECT_EQ(deliveries[3]["kind"], "stale");
  EXPECT_EQ(check_signature(deliveries[3]["signature_header"].get<std::string>(),
                            deliveries[3]["body"].get<std::string>(), kSecret)
                .t,
            kNow - 900);

  const auto refused = control.Post("/_emulator/credit_grants",
                                    json{{"customer", "cus_x"}, {"amount", 1}}.dump(), kJson);
  EXPECT_EQ(refused->status, 400);
  const auto bad_kind =
      control.Post("/_emulator/deliver", json{{"event_id", report}, {"kind", "x"}}.dump(), kJson);
  EXPECT_EQ(bad_kind->status, 400);
}

}  // namespace
