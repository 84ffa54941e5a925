// The Stripe emulator's behaviour, exercised over real HTTP on loopback: what a client of Stripe
// sees (status, body, headers) and what the emulator recorded.
#include "stripe_emulator/emulator.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

extern char** environ;

namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using stripe_emulator::Emulator;
using stripe_emulator::EmulatorOptions;
using stripe_emulator::Fault;
using stripe_emulator::FaultKind;

constexpr char kApiKey[] = "sk_test_emulator_0000000000000000";
constexpr char kForm[] = "application/x-www-form-urlencoded";
constexpr std::int64_t kNow = 1'700'000'000;
constexpr std::int64_t kDay = 86'400;
constexpr auto kDeadline = seconds(10);

std::string percent_encoded(const std::string& text) {
  std::string encoded;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      encoded += static_cast<char>(c);
    } else {
      char escape[4];
      std::snprintf(escape, sizeof(escape), "%%%02X", c);
      encoded += escape;
    }
  }
  return encoded;
}

// A value quoted for Stripe's search language.
std::string search_quoted(const std::string& value) {
  std::string quoted = "'";
  for (const char c : value) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "'";
}

bool is_stripe_id(const std::string& id, const std::string& prefix, std::size_t suffix_length) {
  return id.size() == prefix.size() + suffix_length && id.rfind(prefix, 0) == 0 &&
         std::all_of(id.begin() + static_cast<std::ptrdiff_t>(prefix.size()), id.end(),
                     [](unsigned char c) { return std::isalnum(c); });
}

json body_of(const httplib::Result& result) { return json::parse(result->body); }
json error_of(const httplib::Result& result) { return body_of(result).at("error"); }

// Sends `request` on a fresh connection and returns every byte the server sent until it closed.
std::string raw_exchange(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  EXPECT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string received;
  pollfd readable{fd, POLLIN, 0};
  char buffer[4096];
  while (poll(&readable, 1, static_cast<int>(milliseconds(kDeadline).count())) == 1) {
    const auto n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    received.append(buffer, static_cast<std::size_t>(n));
  }
  close(fd);
  return received;
}

class EmulatorTest : public ::testing::Test {
 protected:
  EmulatorTest() : emulator_(options()) {
    customer_ = emulator_.create_customer({{"litellm_customer_id", "alice"}}, "a@example.com");
    product_ = emulator_.create_product("LLM tokens");
    price_ = emulator_.create_metered_price(product_);
    const auto ids = emulator_.create_subscription(customer_, price_);
    subscription_ = ids.subscription_id;
    item_ = ids.item_id;
  }

  EmulatorOptions options() {
    EmulatorOptions options;
    options.api_keys = {kApiKey, "sk_test_second_key_000000000000"};
    options.clock = [this] { return now_.load(); };
    return options;
  }

  httplib::Client client(const std::string& api_key = kApiKey) const {
    httplib::Client client("127.0.0.1", emulator_.port());
    client.set_read_timeout(kDeadline);
    if (!api_key.empty()) client.set_bearer_token_auth(api_key.c_str());
    return client;
  }

  httplib::Result post(const std::string& path, const std::string& form,
                       const httplib::Headers& headers = {}) const {
    return client().Post(path.c_str(), headers, form, kForm);
  }

  httplib::Result get(const std::string& path) const { return client().Get(path.c_str()); }

  std::string usage_path(const std::string& item) const {
    return "/v1/subscription_items/" + item + "/usage_records";
  }

  httplib::Result record_usage(const std::string& form, const std::string& idempotency_key = "") {
    httplib::Headers headers;
    if (!idempotency_key.empty()) headers.emplace("Idempotency-Key", idempotency_key);
    return post(usage_path(item_), form, headers);
  }

  httplib::Result search(const std::string& query) const {
    return get("/v1/customers/search?query=" + percent_encoded(query));
  }

  std::atomic<std::int64_t> now_{kNow};
  Emulator emulator_;
  std::string customer_, product_, price_, subscription_, item_;
};

// --- Authentication -------------------------------------------------------------------------

TEST_F(EmulatorTest, AnswersAMissingApiKeyWith401) {
  const auto result = client("").Get("/v1/customers");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 401);
  EXPECT_EQ(error_of(result)["type"], "invalid_request_error");
  EXPECT_NE(error_of(result)["message"].get<std::string>().find("You did not provide an API key"),
            std::string::npos);
}

TEST_F(EmulatorTest, AnswersAnUnknownApiKeyWith401ShowingOnlyItsLastFourCharacters) {
  const auto result = client("sk_test_wrongwrongwrongabcd").Get("/v1/customers");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 401);
  EXPECT_EQ(body_of(result),
            json::parse(R"({"error":{"message":"Invalid API Key provided: sk_test_****abcd",
                                     "type":"invalid_request_error"}})"));
}

TEST_F(EmulatorTest, RefusesAPublishableKey) {
  const auto result = client("pk_test_publishable_0000000000").Get("/v1/customers");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 401);
  EXPECT_NE(error_of(result)["message"].get<std::string>().find("publishable"), std::string::npos);
}

TEST_F(EmulatorTest, EveryAnswerCarriesARequestIdAndJsonContentType) {
  emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/prices", {}});
  std::vector<httplib::Result> results;
  results.push_back(record_usage("quantity=1"));
  results.push_back(record_usage("quantity=abc"));
  results.push_back(client("").Get("/v1/customers"));
  results.push_back(get("/v1/nothing_here"));
  results.push_back(get("/v1/prices/" + price_));
  for (const auto& result : results) {
    ASSERT_TRUE(result);
    EXPECT_TRUE(is_stripe_id(result->get_header_value("Request-Id"), "req_", 14)) << result->status;
    EXPECT_EQ(result->get_header_value("Content-Type"), "application/json") << result->status;
  }
}

TEST_F(EmulatorTest, IdsCarryStripesPrefixesAndAlphanumericSuffixes) {
  const auto record = body_of(record_usage("quantity=1"));
  EXPECT_TRUE(is_stripe_id(customer_, "cus_", 14));
  EXPECT_TRUE(is_stripe_id(product_, "prod_", 14));
  EXPECT_TRUE(is_stripe_id(price_, "price_", 24));
  EXPECT_TRUE(is_stripe_id(subscription_, "sub_", 24));
  EXPECT_TRUE(is_stripe_id(item_, "si_", 14));
  EXPECT_TRUE(is_stripe_id(record["id"].get<std::string>(), "mbur_", 24));
}

TEST_F(EmulatorTest, AnswersAnUnrecognizedUrlWith404) {
  const auto result = get("/v1/nothing_here");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  EXPECT_EQ(error_of(result)["message"].get<std::string>().rfind(
                "Unrecognized request URL (GET: /v1/nothing_here)", 0),
            0u);
}

// --- Parameter validation -------------------------------------------------------------------

TEST_F(EmulatorTest, RejectsMetadataOnUsageRecordsNamingIt) {
  const auto result = record_usage("quantity=1&metadata[model]=gpt-4");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["type"], "invalid_request_error");
  EXPECT_EQ(error_of(result)["message"], "Received unknown parameter: metadata");
  EXPECT_EQ(error_of(result)["param"], "metadata");
  EXPECT_EQ(emulator_.total_usage(item_), 0);
}

TEST_F(EmulatorTest, RejectsAnUnknownNestedParameterWithItsBracketedName) {
  const auto result = post("/v1/prices", "currency=usd&product=" + product_ +
                                             "&recurring[interval]=month&recurring[foo]=1");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["message"], "Received unknown parameter: recurring[foo]");
  EXPECT_EQ(error_of(result)["param"], "recurring[foo]");
}

TEST_F(EmulatorTest, RejectsAQuantityThatIsNotAnInteger) {
  const auto result = record_usage("quantity=abc");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["message"], "Invalid integer: abc");
  EXPECT_EQ(error_of(result)["param"], "quantity");
}

TEST_F(EmulatorTest, RejectsABooleanParameterThatIsNotTrueOrFalse) {
  const auto result = post("/v1/products", "name=Tokens&active=maybe");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["message"], "Invalid boolean: maybe");
  EXPECT_EQ(error_of(result)["param"], "active");
}

TEST_F(EmulatorTest, RejectsAnActionOutsideItsEnum) {
  const auto result = record_usage("quantity=1&action=add");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["message"], "Invalid action: must be one of increment or set");
  EXPECT_EQ(error_of(result)["param"], "action");
}

TEST_F(EmulatorTest, RejectsATimestampThatIsNeitherAnIntegerNorNow) {
  const auto result = record_usage("quantity=1&timestamp=yesterday");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["message"], "Invalid integer: yesterday");
  EXPECT_EQ(error_of(result)["param"], "timestamp");
}

TEST_F(EmulatorTest, RejectsAValueWhereAHashIsExpected) {
  const auto result = post("/v1/customers", "email=a%40example.com&metadata=plain");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["message"], "Invalid hash");
  EXPECT_EQ(error_of(result)["param"], "metadata");
}

TEST_F(EmulatorTest, RejectsAMissingRequiredParameter) {
  const auto result = record_usage("action=set");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["message"], "Missing required param: quantity.");
  EXPECT_EQ(error_of(result)["param"], "quantity");
}

TEST_F(EmulatorTest, RejectsAStringLongerThanItsMaxLength) {
  const auto result =
      post("/v1/products", "name=Tokens&statement_descriptor=" + std::string(23, 'x'));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["param"], "statement_descriptor");
  EXPECT_NE(error_of(result)["message"].get<std::string>().find("at most 22 characters"),
            std::string::npos);
}

TEST_F(EmulatorTest, ValidatesQueryParametersOfGetRequests) {
  const auto result = get("/v1/subscriptions?customer=" + customer_ + "&limit=ten");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["message"], "Invalid integer: ten");
  EXPECT_EQ(error_of(result)["param"], "limit");
}

// --- Usage records --------------------------------------------------------------------------

TEST_F(EmulatorTest, AnswersAUsageRecordInStripesShape) {
  const auto result = record_usage("quantity=100&timestamp=" + std::to_string(kNow - 60));
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200);
  auto record = body_of(result);
  EXPECT_EQ(record["id"].get<std::string>().rfind("mbur_", 0), 0u);
  record.erase("id");
  EXPECT_EQ(record, (json{{"object", "usage_record"},
                          {"livemode", false},
                          {"quantity", 100},
                          {"subscription_item", item_},
                          {"timestamp", kNow - 60}}));
}

TEST_F(EmulatorTest, IncrementsAddUpInTheItemsTotal) {
  ASSERT_EQ(record_usage("quantity=5")->status, 200);
  ASSERT_EQ(record_usage("quantity=7&action=increment")->status, 200);
  EXPECT_EQ(emulator_.total_usage(item_), 12);
  EXPECT_EQ(emulator_.totals_by_customer(), (std::map<std::string, std::int64_t>{{customer_, 12}}));
  EXPECT_EQ(emulator_.usage_records(item_).size(), 2u);
}

TEST_F(EmulatorTest, SetReplacesTheRunningTotal) {
  ASSERT_EQ(record_usage("quantity=5")->status, 200);
  ASSERT_EQ(record_usage("quantity=3&action=set")->status, 200);
  ASSERT_EQ(record_usage("quantity=2")->status, 200);
  EXPECT_EQ(emulator_.total_usage(item_), 5);
}

TEST_F(EmulatorTest, TimestampNowIsTheEmulatorsClock) {
  now_ = kNow + 3600;
  const auto result = record_usage("quantity=1&timestamp=now");
  ASSERT_TRUE(result);
  EXPECT_EQ(body_of(result)["timestamp"], kNow + 3600);
  EXPECT_EQ(emulator_.usage_records(item_).at(0).timestamp, kNow + 3600);
}

TEST_F(EmulatorTest, RejectsATimestampBeforeTheCurrentPeriod) {
  const auto result = record_usage("quantity=1&timestamp=" + std::to_string(kNow - 2 * kDay));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["type"], "invalid_request_error");
  EXPECT_EQ(error_of(result)["param"], "timestamp");
  EXPECT_EQ(emulator_.total_usage(item_), 0);
}

TEST_F(EmulatorTest, RejectsATimestampAfterTheCurrentPeriodEnded) {
  const auto ended =
      emulator_.create_subscription(customer_, price_, kNow - 40 * kDay, kNow - 10 * kDay);
  const auto result =
      post(usage_path(ended.item_id), "quantity=1&timestamp=" + std::to_string(kNow - kDay));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["param"], "timestamp");
}

TEST_F(EmulatorTest, RejectsATimestampInTheFuture) {
  const auto result = record_usage("quantity=1&timestamp=" + std::to_string(kNow + 60));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["param"], "timestamp");
  EXPECT_EQ(emulator_.total_usage(item_), 0);
}

TEST_F(EmulatorTest, UsageRecordSummariesReportTheTotalOfTheCurrentPeriod) {
  ASSERT_EQ(record_usage("quantity=5")->status, 200);
  ASSERT_EQ(record_usage("quantity=6")->status, 200);
  const auto result = get("/v1/subscription_items/" + item_ + "/usage_record_summaries");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200);
  const auto list = body_of(result);
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 1u);
  auto summary = list["data"][0];
  EXPECT_EQ(summary["id"].get<std::string>().rfind("sis_", 0), 0u);
  summary.erase("id");
  EXPECT_EQ(summary, (json{{"object", "usage_record_summary"},
                           {"invoice", nullptr},
                           {"livemode", false},
                           {"period", {{"start", kNow - kDay}, {"end", kNow + 29 * kDay}}},
                           {"subscription_item", item_},
                           {"total_usage", 11}}));
}

TEST_F(EmulatorTest, ADeletedSubscriptionItemAnswers404ResourceMissing) {
  emulator_.delete_subscription_item(item_);
  const auto result = record_usage("quantity=1");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  const auto error = error_of(result);
  EXPECT_EQ(error["code"], "resource_missing");
  EXPECT_EQ(error["message"], "No such subscription_item: '" + item_ + "'");
  EXPECT_EQ(error["param"], "subscription_item");
  EXPECT_EQ(error["type"], "invalid_request_error");
}

TEST_F(EmulatorTest, AnUnknownSubscriptionItemAnswers404ResourceMissing) {
  const auto result = post(usage_path("si_doesnotexist"), "quantity=1");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 404);
  EXPECT_EQ(error_of(result)["code"], "resource_missing");
  EXPECT_EQ(error_of(result)["message"], "No such subscription_item: 'si_doesnotexist'");
}

// --- Idempotency ----------------------------------------------------------------------------

TEST_F(EmulatorTest, ReplaysTheFirstAnswerForTheSameIdempotencyKeyWithoutCountingTwice) {
  const auto first = record_usage("quantity=5", "call-1");
  const auto second = record_usage("quantity=5", "call-1");
  ASSERT_TRUE(first && second);
  ASSERT_EQ(first->status, 200);
  EXPECT_EQ(second->status, 200);
  EXPECT_EQ(second->get_header_value("Idempotent-Replayed"), "true");
  EXPECT_EQ(second->get_header_value("Original-Request"), first->get_header_value("Request-Id"));
  EXPECT_FALSE(first->has_header("Idempotent-Replayed"));
  EXPECT_EQ(body_of(second), body_of(first));
  EXPECT_EQ(emulator_.total_usage(item_), 5);
}

TEST_F(EmulatorTest, RefusesAnIdempotencyKeyReusedWithOtherParameters) {
  ASSERT_EQ(record_usage("quantity=5", "call-1")->status, 200);
  const auto result = record_usage("quantity=6", "call-1");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 400);
  EXPECT_EQ(error_of(result)["type"], "idempotency_error");
  EXPECT_EQ(error_of(result)["message"].get<std::string>().rfind(
                "Keys for idempotent requests can only be used with the same parameters they "
                "were first used with",
                0),
            0u);
  EXPECT_EQ(emulator_.total_usage(item_), 5);
}

TEST_F(EmulatorTest, ScopesIdempotencyKeysToTheApiKey) {
  const httplib::Headers headers = {{"Idempotency-Key", "call-1"}};
  ASSERT_EQ(client().Post(usage_path(item_).c_str(), headers, "quantity=5", kForm)->status, 200);
  const auto other = client("sk_test_second_key_000000000000")
                         .Post(usage_path(item_).c_str(), headers, "quantity=5", kForm);
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 200);
  EXPECT_FALSE(other->has_header("Idempotent-Replayed"));
  EXPECT_EQ(emulator_.total_usage(item_), 10);
}

TEST_F(EmulatorTest, DoesNotStoreAValidationErrorUnderAnIdempotencyKey) {
  ASSERT_EQ(record_usage("quantity=abc", "call-1")->status, 400);
  const auto result = record_usage("quantity=5", "call-1");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_FALSE(result->has_header("Idempotent-Replayed"));
}

TEST_F(EmulatorTest, DoesNotStoreAnInjected500UnderAnIdempotencyKey) {
  emulator_.inject(Fault{FaultKind::kStatus, 500, "", {}});
  ASSERT_EQ(record_usage("quantity=5", "call-1")->status, 500);
  const auto retry = record_usage("quantity=5", "call-1");
  ASSERT_TRUE(retry);
  EXPECT_EQ(retry->status, 200);
  EXPECT_EQ(emulator_.total_usage(item_), 5);
}

TEST_F(EmulatorTest, RefusesARequestWhoseIdempotencyKeyIsStillInFlightWith409) {
  emulator_.inject(Fault{FaultKind::kHang, 500, "", seconds(30)});
  auto first =
      std::async(std::launch::async, [this] { return record_usage("quantity=5", "call-1"); });
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));

  const auto concurrent = record_usage("quantity=5", "call-1");
  emulator_.release_hangs();
  ASSERT_TRUE(concurrent);
  EXPECT_EQ(concurrent->status, 409);
  EXPECT_EQ(error_of(concurrent)["type"], "idempotency_error");
  EXPECT_EQ(error_of(concurrent)["code"], "idempotency_key_in_use");
  const auto first_result = first.get();
  ASSERT_TRUE(first_result);
  EXPECT_EQ(first_result->status, 200);
  EXPECT_EQ(emulator_.total_usage(item_), 5);
}

// --- Faults ---------------------------------------------------------------------------------

TEST_F(EmulatorTest, InjectedStatusAnswersStripes500BeforeDoingAnything) {
  emulator_.inject(Fault{FaultKind::kStatus, 500, "", {}});
  const auto result = record_usage("quantity=5");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 500);
  EXPECT_EQ(error_of(result)["type"], "api_error");
  EXPECT_EQ(emulator_.total_usage(item_), 0);
}

TEST_F(EmulatorTest, Injected429CarriesTheRateLimitedReason) {
  emulator_.inject(Fault{FaultKind::kStatus, 429, "", {}});
  const auto result = record_usage("quantity=5");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 429);
  EXPECT_EQ(result->get_header_value("Stripe-Rate-Limited-Reason"), "global-rate");
  EXPECT_EQ(error_of(result)["code"], "rate_limit");
}

TEST_F(EmulatorTest, Injected409IsALockTimeout) {
  emulator_.inject(Fault{FaultKind::kStatus, 409, "", {}});
  const auto result = record_usage("quantity=5");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 409);
  EXPECT_EQ(error_of(result)["code"], "lock_timeout");
}

TEST_F(EmulatorTest, AFaultAppliesToItsCountOfRequestsUnderItsPathPrefix) {
  emulator_.inject(Fault{FaultKind::kStatus, 503, "/v1/subscription_items/", {}}, 2);
  EXPECT_EQ(get("/v1/prices/" + price_)->status, 200);
  EXPECT_EQ(record_usage("quantity=1")->status, 503);
  EXPECT_EQ(record_usage("quantity=1")->status, 503);
  EXPECT_EQ(record_usage("quantity=1")->status, 200);
}

TEST_F(EmulatorTest, FaultsApplyInTheOrderTheyWereQueued) {
  emulator_.inject(Fault{FaultKind::kStatus, 500, "", {}});
  emulator_.inject(Fault{FaultKind::kStatus, 429, "", {}});
  EXPECT_EQ(record_usage("quantity=1")->status, 500);
  EXPECT_EQ(record_usage("quantity=1")->status, 429);
  EXPECT_EQ(record_usage("quantity=1")->status, 200);
}

TEST_F(EmulatorTest, ClearFaultsDropsQueuedFaults) {
  emulator_.inject(Fault{FaultKind::kStatus, 500, "", {}}, 3);
  emulator_.clear_faults();
  EXPECT_EQ(record_usage("quantity=1")->status, 200);
}

TEST_F(EmulatorTest, RandomFaultsHitRequestsThatNoQueuedFaultMatches) {
  emulator_.set_random_faults({{Fault{FaultKind::kStatus, 503, "", {}}, 1.0}}, 7);
  emulator_.inject(Fault{FaultKind::kStatus, 429, "", {}});
  EXPECT_EQ(record_usage("quantity=1")->status, 429);
  EXPECT_EQ(record_usage("quantity=1")->status, 503);
  emulator_.set_random_faults({}, 0);
  EXPECT_EQ(record_usage("quantity=1")->status, 200);
}

TEST_F(EmulatorTest, AHangHoldsTheRequestUntilReleased) {
  emulator_.inject(Fault{FaultKind::kHang, 500, "", seconds(30)});
  auto held = std::async(std::launch::async, [this] { return record_usage("quantity=5"); });
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  EXPECT_EQ(held.wait_for(milliseconds(0)), std::future_status::timeout);
  emulator_.release_hangs();
  const auto result = held.get();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(emulator_.hung_requests(), 0u);
  EXPECT_EQ(emulator_.total_usage(item_), 5);
}

TEST_F(EmulatorTest, AHangEndsByItselfAfterItsDuration) {
  emulator_.inject(Fault{FaultKind::kHang, 500, "", milliseconds(50)});
  const auto result = record_usage("quantity=5");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
}

TEST_F(EmulatorTest, StopDoesNotWaitForAHang) {
  emulator_.inject(Fault{FaultKind::kHang, 500, "", seconds(60)});
  auto held = std::async(std::launch::async, [this] { return record_usage("quantity=5"); });
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  const auto started = std::chrono::steady_clock::now();
  emulator_.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(5));
  held.get();
}

TEST_F(EmulatorTest, CloseConnectionDropsItWithoutSendingAByteOrDoingTheWork) {
  emulator_.inject(Fault{FaultKind::kCloseConnection, 500, "", {}});
  const std::string form = "quantity=5";
  const auto received =
      raw_exchange(emulator_.port(),
                   "POST " + usage_path(item_) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                       "Authorization: Bearer " + kApiKey + "\r\nContent-Type: " + kForm +
                       "\r\nContent-Length: " + std::to_string(form.size()) + "\r\n\r\n" + form);
  EXPECT_EQ(received, "");
  EXPECT_EQ(emulator_.total_usage(item_), 0);
  ASSERT_EQ(emulator_.requests().size(), 1u);
  EXPECT_EQ(emulator_.requests()[0].status, 0);
}

TEST_F(EmulatorTest, CloseConnectionIsAFailedRequestForAnHttpClient) {
  emulator_.inject(Fault{FaultKind::kCloseConnection, 500, "", {}});
  const auto result = record_usage("quantity=5");
  EXPECT_FALSE(result);
  EXPECT_EQ(record_usage("quantity=5")->status, 200);
}

TEST_F(EmulatorTest, CloseAfterCommitDoesTheWorkThenDropsTheConnection) {
  emulator_.inject(Fault{FaultKind::kCloseAfterCommit, 500, "", {}});
  const auto result = record_usage("quantity=5", "call-1");
  EXPECT_FALSE(result);
  EXPECT_EQ(emulator_.total_usage(item_), 5);
}

TEST_F(EmulatorTest, ARetryAfterCloseAfterCommitReplaysTheStoredSuccess) {
  emulator_.inject(Fault{FaultKind::kCloseAfterCommit, 500, "", {}});
  ASSERT_FALSE(record_usage("quantity=5", "call-1"));
  const auto retry = record_usage("quantity=5", "call-1");
  ASSERT_TRUE(retry);
  EXPECT_EQ(retry->status, 200);
  EXPECT_EQ(retry->get_header_value("Idempotent-Replayed"), "true");
  EXPECT_EQ(emulator_.total_usage(item_), 5);
  EXPECT_EQ(emulator_.usage_records(item_).size(), 1u);
}

TEST_F(EmulatorTest, RateLimitAnswers429WithTheRateLimitedReason) {
  emulator_.set_rate_limit(1);
  std::optional<httplib::Result> limited;
  for (int attempt = 0; attempt < 5 && !limited; ++attempt) {
    auto result = record_usage("quantity=1");
    if (result && result->status == 429) limited = std::move(result);
  }
  ASSERT_TRUE(limited);
  EXPECT_EQ((*limited)->get_header_value("Stripe-Rate-Limited-Reason"), "global-rate");
  EXPECT_EQ(error_of(*limited)["code"], "rate_limit");
  emulator_.set_rate_limit(0);
  EXPECT_EQ(record_usage("quantity=1")->status, 200);
}

TEST_F(EmulatorTest, FaultsAndRateLimitsLeaveControlRequestsAlone) {
  emulator_.set_rate_limit(1);
  emulator_.inject(Fault{FaultKind::kStatus, 500, "", {}}, 10);
  httplib::Client control("127.0.0.1", emulator_.port());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(control.Get("/_emulator/totals")->status, 200);
}

// --- Customers and search -------------------------------------------------------------------

TEST_F(EmulatorTest, SearchFindsACustomerByMetadata) {
  emulator_.create_customer({{"litellm_customer_id", "bob"}}, "b@example.com");
  const auto result = search("metadata['litellm_customer_id']:'alice'");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200);
  const auto found = body_of(result);
  EXPECT_EQ(found["object"], "search_result");
  EXPECT_EQ(found["has_more"], false);
  EXPECT_EQ(found["next_page"], nullptr);
  EXPECT_EQ(found["url"], "/v1/customers/search");
  ASSERT_EQ(found["data"].size(), 1u);
  EXPECT_EQ(found["data"][0]["id"], customer_);
  EXPECT_EQ(found["data"][0]["object"], "customer");
}

TEST_F(EmulatorTest, SearchFindsACustomerByEmail) {
  const auto result = search("email:'a@example.com'");
  ASSERT_TRUE(result);
  ASSERT_EQ(body_of(result)["data"].size(), 1u);
  EXPECT_EQ(body_of(result)["data"][0]["id"], customer_);
}

TEST_F(EmulatorTest, SearchMatchesHostileMetadataValuesExactly) {
  const std::vector<std::string> hostile = {"o'brien",     "a&b=c",  "with space",
                                            "100%",        "%41",    "\"double\"",
                                            "back\\slash", "+plus+", "\xff\xfe\x80 not utf-8",
                                            "semi;colon",  "end\\"};
  std::map<std::string, std::string> customer_of;
  for (const auto& value : hostile) {
    customer_of[value] = emulator_.create_customer({{"litellm_customer_id", value}});
  }
  for (const auto& value : hostile) {
    const auto result = search("metadata['litellm_customer_id']:" + search_quoted(value));
    ASSERT_TRUE(result) << value;
    ASSERT_EQ(result->status, 200) << value << result->body;
    const auto data = body_of(result)["data"];
    ASSERT_EQ(data.size(), 1u) << value;
    EXPECT_EQ(data[0]["id"], customer_of[value]) << value;
  }
}

TEST_F(EmulatorTest, SearchFindsMetadataThatCameInFormEncoded) {
  const std::string value = "o'brien & co = 100% \xff";
  const auto created =
      post("/v1/customers", "metadata[litellm_customer_id]=" + percent_encoded(value));
  ASSERT_EQ(created->status, 200);
  const auto result = search("metadata['litellm_customer_id']:" + search_quoted(value));
  ASSERT_EQ(body_of(result)["data"].size(), 1u);
  EXPECT_EQ(body_of(result)["data"][0]["id"], body_of(created)["id"]);
}

TEST_F(EmulatorTest, SearchRejectsUnsupportedSyntaxNamingTheQuery) {
  for (const auto* query :
       {"metadata['litellm_customer_id']='alice'", "nickname:'x'", "email:unquoted",
        "email:'a' AND name:'b' OR phone:'c'", "metadata['k':'v'", "email:'unterminated"}) {
    const auto result = search(query);
    ASSERT_TRUE(result) << query;
    EXPECT_EQ(result->status, 400) << query;
    EXPECT_EQ(error_of(result)["type"], "invalid_request_error") << query;
    EXPECT_EQ(error_of(result)["param"], "query") << query;
  }
}

TEST_F(EmulatorTest, SearchCombinesClausesWithAndOr) {
  const auto bob = emulator_.create_customer({{"team", "x"}}, "bob@example.com");
  const auto both = search("email:'bob@example.com' AND metadata['team']:'x'");
  ASSERT_EQ(body_of(both)["data"].size(), 1u);
  EXPECT_EQ(body_of(both)["data"][0]["id"], bob);
  const auto either = search("email:'a@example.com' OR metadata['team']:'x'");
  EXPECT_EQ(body_of(either)["data"].size(), 2u);
}

TEST_F(EmulatorTest, CreatesAndRetrievesACustomer) {
  const auto created =
      post("/v1/customers", "email=c%40example.com&name=Carol&metadata[tier]=gold");
  ASSERT_EQ(created->status, 200);
  const auto id = body_of(created)["id"].get<std::string>();
  const auto retrieved = get("/v1/customers/" + id);
  ASSERT_EQ(retrieved->status, 200);
  EXPECT_EQ(body_of(retrieved)["email"], "c@example.com");
  EXPECT_EQ(body_of(retrieved)["metadata"], (json{{"tier", "gold"}}));
  EXPECT_EQ(get("/v1/customers/cus_unknown")->status, 404);
}

// --- Products, prices, subscriptions --------------------------------------------------------

TEST_F(EmulatorTest, SubscribesACustomerToAMeteredPriceOverHttp) {
  const auto product = body_of(post("/v1/products", "name=Tokens"))["id"].get<std::string>();
  EXPECT_EQ(body_of(get("/v1/products/" + product))["name"], "Tokens");
  const auto price =
      post("/v1/prices", "currency=usd&unit_amount=2&product=" + product +
                             "&recurring[interval]=month&recurring[usage_type]=metered");
  ASSERT_EQ(price->status, 200);
  const auto price_id = body_of(price)["id"].get<std::string>();
  EXPECT_EQ(body_of(get("/v1/prices/" + price_id))["recurring"]["aggregate_usage"], "sum");

  const auto created =
      post("/v1/subscriptions", "customer=" + customer_ + "&items[0][price]=" + price_id);
  ASSERT_EQ(created->status, 200);
  const auto subscription = body_of(created);
  EXPECT_EQ(subscription["status"], "active");
  EXPECT_EQ(subscription["current_period_start"], kNow);

  const auto listed = body_of(
      get("/v1/subscriptions?customer=" + customer_ + "&price=" + price_id + "&status=active"));
  ASSERT_EQ(listed["data"].size(), 1u);
  const auto item = listed["data"][0]["items"]["data"][0];
  EXPECT_EQ(item["object"], "subscription_item");
  EXPECT_EQ(item["price"]["id"], price_id);
  EXPECT_EQ(item["subscription"], subscription["id"]);

  const auto items =
      body_of(get("/v1/subscription_items?subscription=" + subscription["id"].get<std::string>()));
  ASSERT_EQ(items["data"].size(), 1u);
  EXPECT_EQ(items["data"][0]["id"], item["id"]);
  EXPECT_EQ(post(usage_path(item["id"]), "quantity=3")->status, 200);
  EXPECT_EQ(emulator_.total_usage(item["id"]), 3);
}

TEST_F(EmulatorTest, RefusesASubscriptionForAnUnknownCustomerOrPrice) {
  const auto no_customer =
      post("/v1/subscriptions", "customer=cus_nobody&items[0][price]=" + price_);
  EXPECT_EQ(no_customer->status, 404);
  EXPECT_EQ(error_of(no_customer)["param"], "customer");
  const auto no_price =
      post("/v1/subscriptions", "customer=" + customer_ + "&items[0][price]=price_none");
  EXPECT_EQ(no_price->status, 404);
  EXPECT_EQ(error_of(no_price)["param"], "items[0][price]");
}

TEST_F(EmulatorTest, ListsSubscriptionsNewestFirstWithCursors) {
  const auto second = emulator_.create_subscription(customer_, price_).subscription_id;
  const auto first_page = body_of(get("/v1/subscriptions?customer=" + customer_ + "&limit=1"));
  ASSERT_EQ(first_page["data"].size(), 1u);
  EXPECT_EQ(first_page["data"][0]["id"], second);
  EXPECT_EQ(first_page["has_more"], true);
  const auto next_page =
      body_of(get("/v1/subscriptions?customer=" + customer_ + "&limit=1&starting_after=" + second));
  ASSERT_EQ(next_page["data"].size(), 1u);
  EXPECT_EQ(next_page["data"][0]["id"], subscription_);
  EXPECT_EQ(next_page["has_more"], false);
}

// --- Observation ----------------------------------------------------------------------------

TEST_F(EmulatorTest, LogsEachApiRequestWithWhatItWasAnswered) {
  post(usage_path(item_) + "?expand[]=x%20y", "quantity=5", {{"Idempotency-Key", "call-1"}});
  const auto requests = emulator_.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].method, "POST");
  EXPECT_EQ(requests[0].path, usage_path(item_));
  EXPECT_EQ(requests[0].raw_target, usage_path(item_) + "?expand[]=x%20y");
  EXPECT_EQ(requests[0].headers.at("idempotency-key"), "call-1");
  EXPECT_EQ(requests[0].headers.at("authorization"), std::string("Bearer ") + kApiKey);
  EXPECT_EQ(requests[0].body, "quantity=5");
  EXPECT_EQ(requests[0].status, 200);
  emulator_.clear_requests();
  EXPECT_TRUE(emulator_.requests().empty());
}

// --- Control endpoints ----------------------------------------------------------------------

class ControlEndpointsTest : public EmulatorTest {
 protected:
  httplib::Client control() const { return httplib::Client("127.0.0.1", emulator_.port()); }
  httplib::Result control_post(const std::string& path, const json& body) const {
    return control().Post(path.c_str(), body.dump(), "application/json");
  }
};

TEST_F(ControlEndpointsTest, TotalsReportUsageByItemAndByCustomer) {
  ASSERT_EQ(record_usage("quantity=7")->status, 200);
  const auto result = control().Get("/_emulator/totals");
  ASSERT_EQ(result->status, 200);
  EXPECT_EQ(
      body_of(result),
      (json{{"items", {{item_, 7}}}, {"customers", {{customer_, 7}}}, {"meters", json::object()}}));
}

TEST_F(ControlEndpointsTest, FaultsQueueOverHttpAndDeleteClearsThem) {
  ASSERT_EQ(control_post("/_emulator/faults", {{"kind", "status"}, {"status", 503}, {"count", 2}})
                ->status,
            200);
  EXPECT_EQ(record_usage("quantity=1")->status, 503);
  ASSERT_EQ(control().Delete("/_emulator/faults")->status, 200);
  EXPECT_EQ(record_usage("quantity=1")->status, 200);
}

TEST_F(ControlEndpointsTest, CloseFaultsQueueOverHttp) {
  ASSERT_EQ(control_post("/_emulator/faults", {{"kind", "close_after_commit"}})->status, 200);
  EXPECT_FALSE(record_usage("quantity=1"));
  EXPECT_EQ(emulator_.total_usage(item_), 1);
  ASSERT_EQ(control_post("/_emulator/faults", {{"kind", "close"}})->status, 200);
  EXPECT_FALSE(record_usage("quantity=1"));
  EXPECT_EQ(emulator_.total_usage(item_), 1);
}

TEST_F(ControlEndpointsTest, AnUnknownFaultKindIsRefused) {
  EXPECT_EQ(control_post("/_emulator/faults", {{"kind", "explode"}})->status, 400);
  EXPECT_EQ(control().Post("/_emulator/faults", "not json", "application/json")->status, 400);
}

TEST_F(ControlEndpointsTest, RateLimitIsSetOverHttp) {
  ASSERT_EQ(control_post("/_emulator/rate_limit", {{"rps", 1}})->status, 200);
  int limited = 0;
  for (int attempt = 0; attempt < 5; ++attempt)
    limited += record_usage("quantity=1")->status == 429;
  EXPECT_GT(limited, 0);
}

TEST_F(ControlEndpointsTest, ReleaseHangsReleasesAHeldRequest) {
  ASSERT_EQ(control_post("/_emulator/faults", {{"kind", "hang"}, {"hang_ms", 30000}})->status, 200);
  auto held = std::async(std::launch::async, [this] { return record_usage("quantity=5"); });
  ASSERT_TRUE(emulator_.wait_for_hung_requests(1, kDeadline));
  ASSERT_EQ(control().Post("/_emulator/release_hangs")->status, 200);
  EXPECT_EQ(held.get()->status, 200);
}

TEST_F(ControlEndpointsTest, RequestsListsTheApiRequestLog) {
  ASSERT_EQ(record_usage("quantity=5")->status, 200);
  const auto log = body_of(control().Get("/_emulator/requests"))["requests"];
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0]["method"], "POST");
  EXPECT_EQ(log[0]["path"], usage_path(item_));
  EXPECT_EQ(log[0]["body"], "quantity=5");
  EXPECT_EQ(log[0]["status"], 200);
}

// --- The stripe-emulator binary -------------------------------------------------------------

class ChildProcess {
 public:
  explicit ChildProcess(std::vector<std::string> arguments) {
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    std::vector<char*> argv;
    for (auto& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    const auto spawned = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(pipe_fds[1]);
    stdout_ = pipe_fds[0];
    if (spawned != 0) throw std::runtime_error("cannot start " + arguments[0]);
  }
  ~ChildProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(stdout_);
  }

  // Reads stdout until `done` says so, the process closes it (true), or the deadline passes.
  bool read_stdout_until(const std::function<bool(const std::string&)>& done) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    pollfd readable{stdout_, POLLIN, 0};
    char buffer[4096];
    while (!done(output_)) {
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || poll(&readable, 1, static_cast<int>(left.count())) != 1) {
        return false;
      }
      const auto n = read(stdout_, buffer, sizeof(buffer));
      if (n <= 0) return true;
      output_.append(buffer, static_cast<std::size_t>(n));
    }
    return false;
  }

  const std::string& output() const { return output_; }

  // The exit code once the process has exited, judged by its closing stdout; -1 past the deadline.
  int wait_for_exit() {
    if (!read_stdout_until([](const std::string&) { return false; })) return -1;
    int status = 0;
    if (waitpid(pid_, &status, 0) != pid_) return -1;
    pid_ = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  void signal(int number) const { kill(pid_, number); }

 private:
  pid_t pid_ = 0;
  int stdout_ = -1;
  std::string output_;
};

TEST(StripeEmulatorBinary, ServesItsSeedAnnouncesItsStateAndStopsOnSigterm) {
  const std::string binary = STRIPE_BILLING_BINARY_DIR "/emulator/stripe-emulator";
  ASSERT_EQ(access(binary.c_str(), X_OK), 0) << binary << " is not built";
  const auto directory =
      testing::TempDir() + "stripe_emulator_binary_test_" + std::to_string(getpid());
  std::filesystem::create_directories(directory);
  const auto seed_file = directory + "/seed.json";
  const auto state_file = directory + "/state.json";
  std::ofstream(seed_file)
      << R"({"price":{"product_name":"LLM tokens","unit_amount":1,"currency":"usd"},
      "customers":[{"email":"a@example.com","metadata":{"litellm_customer_id":"alice"}},
                   {"email":"b@example.com","metadata":{"litellm_customer_id":"bob"}}],
      "meters":[{"event_name":"llm_tokens"}]})";
  std::remove(state_file.c_str());

  ChildProcess child({binary, "--port", "0", "--seed", seed_file, "--state-file", state_file});
  child.read_stdout_until(
      [](const std::string& output) { return output.find('\n') != std::string::npos; });
  const auto line = child.output();
  ASSERT_NE(line.find('\n'), std::string::npos) << "no state line: " << line;
  const auto announced = json::parse(line.substr(0, line.find('\n')));
  EXPECT_EQ(json::parse(std::ifstream(state_file)), announced);

  ASSERT_EQ(announced["customers"].size(), 2u);
  const auto alice = announced["customers"][0];
  EXPECT_EQ(alice["email"], "a@example.com");
  EXPECT_EQ(alice["metadata"], (json{{"litellm_customer_id", "alice"}}));
  EXPECT_EQ(announced["price_id"].get<std::string>().rfind("price_", 0), 0u);
  ASSERT_EQ(announced["meters"].size(), 1u);
  EXPECT_EQ(announced["meters"][0]["id"].get<std::string>().rfind("mtr_", 0), 0u);
  EXPECT_EQ(announced["meters"][0]["event_name"], "llm_tokens");
  EXPECT_EQ(announced["meters"][0]["customer_payload_key"], "stripe_customer_id");
  EXPECT_EQ(announced["meters"][0]["value_payload_key"], "value");
  EXPECT_EQ(announced["meters"][0]["formula"], "sum");

  httplib::Client client(announced["base_url"].get<std::string>());
  client.set_bearer_token_auth(kApiKey);
  const auto found = client.Get(
      ("/v1/customers/search?query=" + percent_encoded("metadata['litellm_customer_id']:'alice'"))
          .c_str());
  ASSERT_TRUE(found);
  EXPECT_EQ(json::parse(found->body)["data"][0]["id"], alice["id"]);
  const auto item = alice["subscription_item"].get<std::string>();
  EXPECT_EQ(
      client
          .Post(("/v1/subscription_items/" + item + "/usage_records").c_str(), "quantity=42", kForm)
          ->status,
      200);
  EXPECT_EQ(client
                .Post("/v1/billing/meter_events",
                      "event_name=llm_tokens&payload[value]=9&payload[stripe_customer_id]=" +
                          alice["id"].get<std::string>(),
                      kForm)
                ->status,
            200);
  const auto totals = json::parse(client.Get("/_emulator/totals")->body);
  EXPECT_EQ(totals["customers"][alice["id"].get<std::string>()], 42);
  EXPECT_EQ(totals["items"][item], 42);
  EXPECT_EQ(totals["meters"]["llm_tokens"][alice["id"].get<std::string>()], 9);

  child.signal(SIGTERM);
  EXPECT_EQ(child.wait_for_exit(), 0);
}

}  // namespace
