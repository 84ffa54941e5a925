// Stripe's webhooks: verify_stripe_signature() and split_meter_identifier() directly, then
// StripeLogger::handle_stripe_webhook() end to end, mounted on a small HTTP server in this test to
// which the emulator delivers real, signed events: not configured, forged, stale, replayed (also
// after a restart on the same outbox file), retried after an answer the host lost, not an event,
// of an unknown type; meter error reports marking the sampled rows dead; credit grants and credit
// balance transactions refreshing the credit balance that admission reads; the secret kept out of
// the logs and the metrics. Nothing sleeps: the tests wait on the emulator's deliveries, on
// flush() and on conditions with deadlines.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../emulator/src/webhook_signature.h"  // the emulator's signer (as Stripe signs)
#include "hmac_reference.h"
#include "meter_event.h"
#include "outbox.h"
#include "stripe_billing/metrics.h"
#include "stripe_billing/secret.h"
#include "stripe_billing/stripe_logger.h"
#include "test_support.h"
#include "webhooks.h"

namespace stripe_billing {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using stripe_emulator::Emulator;
using stripe_emulator::EmulatorOptions;
using stripe_emulator::WebhookDelivery;
using testing::CapturedLog;
using testing::eventually;
using testing::in_seconds;
using testing::kEmulatorKey;
using testing::TempDir;

constexpr char kSecret[] = "whsec_test_9c4e1a7b2d5f8e0c3b6a9d2f5e8b1c4a";
constexpr char kOtherSecret[] = "whsec_test_0000aaaa1111bbbb2222cccc3333dddd";
constexpr char kMeter[] = "llm_tokens";
constexpr std::int64_t kNow = 1'700'000'000;
constexpr std::int64_t kTolerance = 300;
constexpr auto kDeadline = milliseconds(10'000);

std::string v1_of(std::int64_t t, const std::string& body, const std::string& secret) {
  return testing::reference_hmac_sha256_hex(secret, std::to_string(t) + "." + body);
}

// For failure messages: each delivery's event, kind and answer.
std::string describe(const std::vector<WebhookDelivery>& deliveries) {
  std::string out;
  for (const auto& d : deliveries) {
    out += "\n  " + d.event_id + " " + d.type + " " + d.kind + " #" + std::to_string(d.attempt) +
           " -> " + std::to_string(d.status);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// verify_stripe_signature

class SignatureTest : public ::testing::Test {
 protected:
  SignatureCheck check(const std::string& body, const std::string& header,
                       std::int64_t now = kNow) const {
    return verify_stripe_signature(body, header, secret_, now, kTolerance);
  }
  std::string signed_header(std::int64_t t, const std::string& body) const {
    return "t=" + std::to_string(t) + ",v1=" + v1_of(t, body, kSecret);
  }

  Secret secret_{kSecret};
  std::string body_ = R"({"id":"evt_1","object":"event","type":"billing.credit_grant.created"})";
};

TEST_F(SignatureTest, TheEmulatorsSignerAgreesWithOpenSsl) {
  // The end-to-end tests below rely on the emulator's signer: it is checked against an HMAC
  // computed here once, so a broken signer cannot make a broken verifier pass.
  EXPECT_EQ(stripe_emulator::stripe_signature_header(kNow, body_, kSecret),
            "t=" + std::to_string(kNow) + ",v1=" + v1_of(kNow, body_, kSecret));
}

TEST_F(SignatureTest, AValidSignatureIsAccepted) {
  EXPECT_EQ(check(body_, signed_header(kNow, body_)), SignatureCheck::kValid);
  EXPECT_EQ(check(body_, stripe_emulator::stripe_signature_header(kNow, body_, kSecret)),
            SignatureCheck::kValid);
  EXPECT_EQ(check("", signed_header(kNow, "")), SignatureCheck::kValid) << "an empty body";
  // The order of the items does not matter.
  EXPECT_EQ(check(body_, "v1=" + v1_of(kNow, body_, kSecret) + ",t=" + std::to_string(kNow)),
            SignatureCheck::kValid);
  EXPECT_STREQ(to_string(SignatureCheck::kValid), "valid");
}

TEST_F(SignatureTest, AnyOfSeveralV1SignaturesMayMatchWhileASecretIsRolled) {
  const std::string t = "t=" + std::to_string(kNow);
  const std::string right = v1_of(kNow, body_, kSecret);
  const std::string old = v1_of(kNow, body_, kOtherSecret);
  EXPECT_EQ(check(body_, t + ",v1=" + old + ",v1=" + right), SignatureCheck::kValid);
  EXPECT_EQ(check(body_, t + ",v1=" + right + ",v1=" + old), SignatureCheck::kValid);
  EXPECT_EQ(check(body_, t + ",v1=" + old + ",v1=" + std::string(64, '0') + ",v1=" + right),
            SignatureCheck::kValid);
  EXPECT_EQ(check(body_, t + ",v1=" + old + ",v1=" + std::string(64, '0')),
            SignatureCheck::kMismatch);
  // The verifier's own secret being the other one: the other entry matches.
  const Secret other{kOtherSecret};
  EXPECT_EQ(
      verify_stripe_signature(body_, t + ",v1=" + right + ",v1=" + old, other, kNow, kTolerance),
      SignatureCheck::kValid);
}

TEST_F(SignatureTest, V0SignaturesAreIgnored) {
  const std::string t = "t=" + std::to_string(kNow);
  const std::string right = v1_of(kNow, body_, kSecret);
  // A correct HMAC under the v0 scheme name proves nothing: only v1 counts.
  EXPECT_EQ(check(body_, t + ",v0=" + right), SignatureCheck::kMalformed);
  EXPECT_EQ(check(body_, t + ",v0=" + right + ",v1=" + std::string(64, 'a')),
            SignatureCheck::kMismatch);
  EXPECT_EQ(check(body_, t + ",v0=" + std::string(64, 'a') + ",v1=" + right),
            SignatureCheck::kValid);
  EXPECT_EQ(check(body_, t + ",v1=" + right + ",v0=zz,extra=1,noequals"), SignatureCheck::kValid);
}

TEST_F(SignatureTest, MalformedHeadersAreMalformed) {
  const std::string right = v1_of(kNow, body_, kSecret);
  const std::string t = std::to_string(kNow);
  for (const std::string& header : {
           std::string(),                                       // empty
           std::string(","),                                    // nothing in it
           "v1=" + right,                                       // no t
           "t=" + t,                                            // no v1
           "t=" + t + ",v1",                                    // v1 without '='
           "t=,v1=" + right,                                    // empty t
           "t=17e8,v1=" + right,                                // not digits
           "t=-" + t + ",v1=" + right,                          // a sign
           "t= " + t + ",v1=" + right,                          // a space
           "t=" + t + "x,v1=" + right,                          // trailing junk
           "t=1234567890123,v1=" + right,                       // more than 12 digits
           "t=" + t + ",t=" + t + ",v1=" + right,               // t twice
           "t=" + t + ",v1=" + right + std::string(4096, ','),  // longer than 4096
           std::string("garbage"),
       }) {
    EXPECT_EQ(check(body_, header), SignatureCheck::kMalformed) << header.substr(0, 120);
  }
  // No secret: nothing can be verified.
  EXPECT_EQ(verify_stripe_signature(body_, "t=" + t + ",v1=" + right, Secret(), kNow, kTolerance),
            SignatureCheck::kMalformed);
  EXPECT_STREQ(to_string(SignatureCheck::kMalformed), "malformed_signature");
}

TEST_F(SignatureTest, AWrongSignatureOrAChangedBodyIsAMismatch) {
  const std::string header = signed_header(kNow, body_);
  EXPECT_EQ(check(body_, "t=" + std::to_string(kNow) + ",v1=" + v1_of(kNow, body_, kOtherSecret)),
            SignatureCheck::kMismatch);
  // One byte changed, added or removed.
  std::string changed = body_;
  changed[10] = static_cast<char>(changed[10] ^ 1);
  EXPECT_EQ(check(changed, header), SignatureCheck::kMismatch);
  EXPECT_EQ(check(body_ + " ", header), SignatureCheck::kMismatch);
  EXPECT_EQ(check(body_.substr(0, body_.size() - 1), header), SignatureCheck::kMismatch);
  // The timestamp is signed too: the same v1 with another t does not verify.
  EXPECT_EQ(
      check(body_, "t=" + std::to_string(kNow + 1) + ",v1=" + v1_of(kNow, body_, kSecret), kNow),
      SignatureCheck::kMismatch);
  // Hex in upper case is not what Stripe sends.
  std::string upper = v1_of(kNow, body_, kSecret);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(check(body_, "t=" + std::to_string(kNow) + ",v1=" + upper), SignatureCheck::kMismatch);
  EXPECT_STREQ(to_string(SignatureCheck::kMismatch), "bad_signature");
}

TEST_F(SignatureTest, TimestampsOutsideTheToleranceAreStale) {
  EXPECT_EQ(check(body_, signed_header(kNow - kTolerance, body_)), SignatureCheck::kValid);
  EXPECT_EQ(check(body_, signed_header(kNow - kTolerance - 1, body_)), SignatureCheck::kStale);
  EXPECT_EQ(check(body_, signed_header(kNow - 86'400, body_)), SignatureCheck::kStale);
  EXPECT_EQ(check(body_, signed_header(0, body_)), SignatureCheck::kStale);
  // From the future (a clock far off, or a forged t): refused as well.
  EXPECT_EQ(check(body_, signed_header(kNow + kTolerance, body_)), SignatureCheck::kValid);
  EXPECT_EQ(check(body_, signed_header(kNow + kTolerance + 1, body_)), SignatureCheck::kStale);
  EXPECT_EQ(check(body_, signed_header(999'999'999'999, body_)), SignatureCheck::kStale);
  EXPECT_STREQ(to_string(SignatureCheck::kStale), "stale_timestamp");
}

TEST_F(SignatureTest, SignaturesOfAnyLengthAreComparedWithoutHarm) {
  const std::string right = v1_of(kNow, body_, kSecret);
  const std::string t = "t=" + std::to_string(kNow);
  for (std::size_t length : {0u, 1u, 31u, 32u, 63u, 65u, 128u, 1000u}) {
    EXPECT_EQ(check(body_, t + ",v1=" + std::string(length, 'f')), SignatureCheck::kMismatch)
        << length;
  }
  // A prefix or an extension of the right signature is not the right signature.
  EXPECT_EQ(check(body_, t + ",v1=" + right.substr(0, 63)), SignatureCheck::kMismatch);
  EXPECT_EQ(check(body_, t + ",v1=" + right + "0"), SignatureCheck::kMismatch);
  EXPECT_EQ(check(body_, t + ",v1=" + right + std::string("\0", 1)), SignatureCheck::kMismatch);
  // Bytes that are not text, in the body and the header.
  const std::string binary("\0\xff\x80\n\r", 5);
  EXPECT_EQ(check(binary, signed_header(kNow, binary)), SignatureCheck::kValid);
  EXPECT_EQ(check(body_, t + ",v1=" + binary), SignatureCheck::kMismatch);
}

TEST(MeterIdentifierTest, SplitsAtTheLastColon) {
  using Split = std::optional<std::pair<std::string, std::string>>;
  EXPECT_EQ(split_meter_identifier("call-1:total_tokens"), Split({"call-1", "total_tokens"}));
  EXPECT_EQ(split_meter_identifier("ns:call:7:prompt_tokens"),
            Split({"ns:call:7", "prompt_tokens"}));
  EXPECT_EQ(split_meter_identifier("a:b"), Split({"a", "b"}));
  EXPECT_EQ(split_meter_identifier("no-colon"), std::nullopt);
  EXPECT_EQ(split_meter_identifier(""), std::nullopt);
  EXPECT_EQ(split_meter_identifier(":total_tokens"), std::nullopt) << "no call id";
  EXPECT_EQ(split_meter_identifier("call-1:"), std::nullopt) << "no dimension";
  EXPECT_EQ(split_meter_identifier("sbh-0123456789abcdef"), std::nullopt);
  EXPECT_EQ(split_meter_identifier("sbh-abc:total_tokens"), std::nullopt) << "hashed: no row";
}

TEST(MeterIdentifierTest, UndoesWhatTheMeterEventIdentifierJoined) {
  EXPECT_EQ(
      split_meter_identifier(meter_event_identifier("chatcmpl-42", "total_tokens")),
      std::make_optional(std::make_pair(std::string("chatcmpl-42"), std::string("total_tokens"))));
  // An id that cannot go to Stripe as it is gets hashed: it names no row by itself.
  const std::string hashed = meter_event_identifier("call with spaces/and?odd#chars", "input");
  ASSERT_EQ(hashed.rfind("sbh-", 0), 0u) << hashed;
  EXPECT_EQ(split_meter_identifier(hashed), std::nullopt);
}

// ---------------------------------------------------------------------------------------------
// End to end: the emulator delivers to a route that calls handle_stripe_webhook().

// The host's webhook route: POST /stripe/webhook -> logger->handle_stripe_webhook(). Answers 503
// while no logger is attached (between a stop and a restart).
class WebhookRoute {
 public:
  WebhookRoute() {
    server_.Post("/stripe/webhook",
                 [this](const httplib::Request& request, httplib::Response& response) {
                   std::lock_guard lock(mutex_);
                   if (logger_ == nullptr) {
                     response.status = 503;
                     response.set_content(R"({"error":"starting"})", "application/json");
                     return;
                   }
                   const WebhookResponse answer = logger_->handle_stripe_webhook(
                       request.body, request.get_header_value("Stripe-Signature"));
                   answers_.push_back(answer.status);
                   response.status = answer.status;
                   response.set_content(answer.body, "application/json");
                   if (lose_answers_ > 0) {  // the host failed after the library stored the event
                     --lose_answers_;
                     response.status = 500;
                     response.set_content(R"({"error":"proxy"})", "application/json");
                   }
                 });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("cannot bind the webhook route");
    listener_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::yield();  // stop() needs it listening
  }
  ~WebhookRoute() {
    server_.stop();
    listener_.join();
  }
  WebhookRoute(const WebhookRoute&) = delete;
  WebhookRoute& operator=(const WebhookRoute&) = delete;

  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/stripe/webhook";
  }
  void attach(StripeLogger* logger) {
    std::lock_guard lock(mutex_);
    logger_ = logger;
  }
  // The next `count` answers of the library reach Stripe as 500 (the library did store them).
  void lose_answers(int count) {
    std::lock_guard lock(mutex_);
    lose_answers_ = count;
  }
  std::vector<int> library_answers() const {
    std::lock_guard lock(mutex_);
    return answers_;
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  mutable std::mutex mutex_;
  StripeLogger* logger_ = nullptr;
  int lose_answers_ = 0;
  std::vector<int> answers_;
  std::thread listener_;
};

class WebhookEndToEndTest : public ::testing::Test {
 protected:
  WebhookEndToEndTest() : WebhookEndToEndTest(EmulatorOptions{}) {}
  explicit WebhookEndToEndTest(EmulatorOptions options) {
    options.api_keys = {kEmulatorKey};
    options.webhook_retry_delays = {milliseconds(20), milliseconds(40), milliseconds(80)};
    emulator_ = std::make_unique<Emulator>(std::move(options));
    emulator_->add_webhook_endpoint(route_.url(), kSecret);
    emulator_->create_meter(kMeter);
    alice_ = emulator_->create_customer({{"litellm_customer_id", "alice"}});
  }
  ~WebhookEndToEndTest() override {
    route_.attach(nullptr);
    emulator_->stop();  // no delivery may reach a logger being destroyed
    loggers_.clear();
  }

  // meter_events mode, alice mapped to her cus_, webhooks configured.
  Config config(bool with_secret = true) const {
    Config config;
    config.api_key = kEmulatorKey;
    config.api_base = emulator_->base_url();
    config.meter_stream_base = emulator_->base_url();
    config.billing_mode = "meter_events";
    config.meter_event_name = kMeter;
    config.customer_map = "alice=" + alice_;
    config.trust_request_user = "lookup";
    config.timeout_ms = "2000";
    config.connect_timeout_ms = "1000";
    config.outbox_path = dir_.file("outbox.db");
    config.aggregation_window_ms = "0";
    config.rate_limit = "1000";
    if (with_secret) config.webhook_secret = kSecret;
    return config;
  }

  // A logger mounted on the route, owned by the fixture (a late retry may still reach the route
  // after the test's body ended: the route is detached before any logger is destroyed).
  StripeLogger* start(const Config& config) {
    auto made = make_stripe_logger(config, {nullptr, log_.logger(), nullptr, {}});
    if (!made) throw std::runtime_error(made.error().to_string());
    loggers_.push_back(std::move(made.value()));
    route_.attach(loggers_.back().get());
    return loggers_.back().get();
  }
  // Shuts the logger down and destroys it (its outbox file is free for the next one).
  void stop(StripeLogger* logger) {
    route_.attach(nullptr);
    EXPECT_TRUE(logger->shutdown(in_seconds(10)));
    for (auto it = loggers_.begin(); it != loggers_.end(); ++it) {
      if (it->get() == logger) {
        loggers_.erase(it);
        break;
      }
    }
  }
  std::size_t count_get_event(const std::string& id) const {
    std::size_t count = 0;
    for (const auto& request : emulator_->requests()) {
      count += request.method == "GET" && request.path == "/v2/core/events/" + id;
    }
    return count;
  }

  static UsageEvent call(const std::string& call_id, std::int64_t tokens, double cost = 0.001) {
    UsageEvent event;
    event.call_id = call_id;
    event.model = "gpt-test";
    event.prompt_tokens = tokens / 2;
    event.completion_tokens = tokens - tokens / 2;
    event.total_tokens = tokens;
    event.response_cost = cost;
    event.end_time = std::chrono::system_clock::now();
    event.request_user = "alice";
    return event;
  }

  // Waits for `count` more deliveries than `before` and returns the new ones.
  std::vector<WebhookDelivery> deliveries_after(std::size_t before, std::size_t count) const {
    EXPECT_TRUE(emulator_->wait_for_webhook_deliveries(before + count, kDeadline))
        << "expected " << count << " deliveries after " << before;
    auto all = emulator_->webhook_deliveries();
    return std::vector<WebhookDelivery>(
        all.begin() + static_cast<std::ptrdiff_t>(std::min(before, all.size())), all.end());
  }
  std::size_t delivered() const { return emulator_->webhook_deliveries().size(); }

  // A grant for alice: one billing.credit_grant.created, delivered once with `status`.
  std::string grant_event(int status = 200) {
    const std::size_t before = delivered();
    emulator_->create_credit_grant(alice_, 500);
    const auto sent = deliveries_after(before, 1);
    EXPECT_EQ(sent.size(), 1u);
    if (sent.empty()) return "";
    EXPECT_EQ(sent[0].type, "billing.credit_grant.created");
    EXPECT_EQ(sent[0].status, status) << sent[0].body;
    return sent[0].event_id;
  }

  static std::uint64_t counted(const StripeLoggerStats& stats, const std::string& outcome) {
    const auto found = stats.webhooks.find(outcome);
    return found == stats.webhooks.end() ? 0 : found->second;
  }
  static std::uint64_t rejected(const StripeLoggerStats& stats, const std::string& reason) {
    const auto found = stats.rejected.find(reason);
    return found == stats.rejected.end() ? 0 : found->second;
  }

  // A body signed with the endpoint's secret, as Stripe would sign it now.
  static std::string signed_now(const std::string& body) {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    return stripe_emulator::stripe_signature_header(now, body, kSecret);
  }

  TempDir dir_;
  CapturedLog log_;
  WebhookRoute route_;
  std::unique_ptr<Emulator> emulator_;
  std::string alice_;
  std::vector<std::unique_ptr<StripeLogger>> loggers_;
};

TEST_F(WebhookEndToEndTest, WithoutASecretTheRouteAnswers404) {
  StripeLogger* logger = start(config(false));
  ASSERT_NE(logger, nullptr);
  const std::size_t before = delivered();
  emulator_->create_credit_grant(alice_, 100);
  // The first try and its three retries, each refused.
  const auto sent = deliveries_after(before, 4);
  ASSERT_EQ(sent.size(), 4u);
  for (const auto& delivery : sent) EXPECT_EQ(delivery.status, 404) << delivery.kind;
  const auto direct = logger->handle_stripe_webhook(sent[0].body, sent[0].signature_header);
  EXPECT_EQ(direct.status, 404);
  EXPECT_NE(direct.body.find("STRIPE_WEBHOOK_SECRET"), std::string::npos) << direct.body;
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  // stats().webhooks documents the outcome not_configured: every refusal counted.
  EXPECT_EQ(counted(logger->stats(), "not_configured"), 5u)
      << "stats().webhooks: " << json(logger->stats().webhooks).dump();
}

TEST_F(WebhookEndToEndTest, AForgedEventIsRefusedCountedAndNotProcessed) {
  StripeLogger* logger = start(config());
  const std::size_t before = delivered();
  emulator_->create_credit_grant(alice_, 100);
  const auto first = deliveries_after(before, 1);
  ASSERT_EQ(first.size(), 1u);
  const std::string id = first[0].event_id;
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto baseline = logger->stats();
  ASSERT_EQ(counted(baseline, "billing.credit_grant.created"), 1u);

  emulator_->deliver_forged(id);
  emulator_->deliver_forged(id);
  const auto forged = deliveries_after(before + 1, 2);
  ASSERT_EQ(forged.size(), 2u);
  for (const auto& delivery : forged) {
    EXPECT_EQ(delivery.kind, "forged");
    EXPECT_EQ(delivery.status, 400);
  }
  // The body the library answered says why.
  const auto direct = logger->handle_stripe_webhook(forged[0].body, forged[0].signature_header);
  EXPECT_EQ(direct.status, 400);
  EXPECT_EQ(json::parse(direct.body).value("error", ""), "bad_signature");
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "bad_signature"), 3u);
  EXPECT_EQ(counted(stats, "received"), 1u);
  EXPECT_EQ(counted(stats, "duplicate"), 0u) << "a forged event never reaches de-duplication";
  EXPECT_EQ(counted(stats, "billing.credit_grant.created"), 1u) << "nothing processed again";
}

TEST_F(WebhookEndToEndTest, AForgedCopyArrivingFirstDoesNotBlockTheGenuineEvent) {
  // A forged copy must not be remembered under the event's id. The route stays detached (503,
  // the emulator retries in vain); the copies reach the library directly, the forged one first.
  StripeLogger* logger = start(config());
  route_.attach(nullptr);
  const std::size_t before = delivered();
  emulator_->create_credit_grant(alice_, 100);
  const auto first = deliveries_after(before, 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].status, 503);
  const std::string& body = first[0].body;
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  const auto forged = logger->handle_stripe_webhook(
      body, stripe_emulator::stripe_signature_header(now, body, kOtherSecret));
  EXPECT_EQ(forged.status, 400);
  const auto stale = logger->handle_stripe_webhook(
      body, stripe_emulator::stripe_signature_header(now - 301, body, kSecret));
  EXPECT_EQ(stale.status, 400);
  const auto genuine = logger->handle_stripe_webhook(body, signed_now(body));
  EXPECT_EQ(genuine.status, 200);
  EXPECT_EQ(json::parse(genuine.body), json({{"received", true}}));
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "bad_signature"), 1u);
  EXPECT_EQ(counted(stats, "stale_timestamp"), 1u);
  EXPECT_EQ(counted(stats, "received"), 1u);
  EXPECT_EQ(counted(stats, "duplicate"), 0u);
  EXPECT_EQ(counted(stats, "billing.credit_grant.created"), 1u);
}

TEST_F(WebhookEndToEndTest, AStaleDeliveryIsRefused) {
  StripeLogger* logger = start(config());
  const std::string id = grant_event();
  ASSERT_FALSE(id.empty());
  const std::size_t before = delivered();
  emulator_->deliver_stale(id, std::chrono::seconds(600));  // the default tolerance is 300 s
  const auto stale = deliveries_after(before, 1);
  ASSERT_EQ(stale.size(), 1u);
  EXPECT_EQ(stale[0].kind, "stale");
  EXPECT_EQ(stale[0].status, 400);
  const auto direct = logger->handle_stripe_webhook(stale[0].body, stale[0].signature_header);
  EXPECT_EQ(direct.status, 400);
  EXPECT_EQ(json::parse(direct.body).value("error", ""), "stale_timestamp");
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "stale_timestamp"), 2u);
  EXPECT_EQ(counted(stats, "duplicate"), 0u);
  EXPECT_EQ(counted(stats, "billing.credit_grant.created"), 1u);
}

TEST_F(WebhookEndToEndTest, ARedeliveredEventIsAcknowledgedAndProcessedOnce) {
  StripeLogger* logger = start(config());
  const std::string id = grant_event();
  ASSERT_FALSE(id.empty());
  const std::size_t before = delivered();
  emulator_->redeliver_event(id);
  emulator_->redeliver_event(id);
  const auto again = deliveries_after(before, 2);
  ASSERT_EQ(again.size(), 2u);
  for (const auto& delivery : again) {
    EXPECT_EQ(delivery.kind, "redelivery");
    EXPECT_EQ(delivery.event_id, id);
    EXPECT_EQ(delivery.status, 200) << "a duplicate is acknowledged, or Stripe retries it";
  }
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "received"), 1u);
  EXPECT_EQ(counted(stats, "duplicate"), 2u);
  EXPECT_EQ(counted(stats, "billing.credit_grant.created"), 1u);
}

TEST_F(WebhookEndToEndTest, ARedeliveryAfterARestartOnTheSameOutboxIsADuplicate) {
  StripeLogger* logger = start(config());
  const std::string id = grant_event();
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  ASSERT_EQ(counted(logger->stats(), "billing.credit_grant.created"), 1u);
  stop(logger);

  StripeLogger* restarted = start(config());
  ASSERT_NE(restarted, nullptr);
  const std::size_t before = delivered();
  emulator_->redeliver_event(id);
  const auto again = deliveries_after(before, 1);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].status, 200);
  ASSERT_TRUE(restarted->flush(in_seconds(10)));
  const auto stats = restarted->stats();
  EXPECT_EQ(counted(stats, "duplicate"), 1u);
  EXPECT_EQ(counted(stats, "received"), 0u);
  EXPECT_EQ(counted(stats, "billing.credit_grant.created"), 0u) << "processed before the restart";

  // A new event after the restart is still taken.
  const std::string fresh = grant_event();
  EXPECT_NE(fresh, id);
  ASSERT_TRUE(restarted->flush(in_seconds(10)));
  EXPECT_EQ(counted(restarted->stats(), "billing.credit_grant.created"), 1u);
}

TEST_F(WebhookEndToEndTest, RetriesAfterALostAnswerAreDeduplicated) {
  StripeLogger* logger = start(config());
  route_.lose_answers(2);  // stored once by the library, then seen twice more as duplicates
  const std::size_t before = delivered();
  emulator_->create_credit_grant(alice_, 100);
  // First try and first retry end in 500 at Stripe; the second retry gets the library's 200.
  const auto sent = deliveries_after(before, 3);
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[0].status, 500);
  EXPECT_EQ(sent[1].status, 500);
  EXPECT_EQ(sent[1].kind, "retry");
  EXPECT_EQ(sent[2].status, 200);
  EXPECT_EQ(sent[2].kind, "retry");
  EXPECT_EQ(route_.library_answers(), (std::vector<int>{200, 200, 200}));
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "received"), 1u);
  EXPECT_EQ(counted(stats, "duplicate"), 2u);
  EXPECT_EQ(counted(stats, "billing.credit_grant.created"), 1u);
}

TEST_F(WebhookEndToEndTest, ABodyThatIsNotAnEventIsRefused) {
  StripeLogger* logger = start(config());
  for (const std::string& body :
       {std::string("not json"), std::string("[1,2,3]"), std::string(R"({"object":"event"})"),
        std::string(R"({"id":"evt_1"})"), std::string(R"({"type":"customer.created"})"),
        std::string(R"({"id":42,"type":"customer.created"})"),
        std::string(R"({"id":"","type":"customer.created"})"),
        R"({"id":")" + std::string(300, 'e') + R"(","type":"customer.created"})"}) {
    const auto answer = logger->handle_stripe_webhook(body, signed_now(body));
    EXPECT_EQ(answer.status, 400) << body.substr(0, 80);
  }
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "invalid_event"), 8u);
  EXPECT_EQ(counted(stats, "received"), 0u);
  // Unsigned, the same bodies are refused for the signature first.
  const auto unsigned_answer = logger->handle_stripe_webhook("not json", "");
  EXPECT_EQ(unsigned_answer.status, 400);
  EXPECT_EQ(json::parse(unsigned_answer.body).value("error", ""), "malformed_signature");
  EXPECT_EQ(counted(logger->stats(), "malformed_signature"), 1u);
}

TEST_F(WebhookEndToEndTest, ATooLargeBodyIsRefusedBeforeAnythingElse) {
  StripeLogger* logger = start(config());
  const std::string big(std::size_t{1} << 21, 'x');
  const auto answer = logger->handle_stripe_webhook(big, signed_now(big));
  EXPECT_EQ(answer.status, 413);
  EXPECT_EQ(counted(logger->stats(), "received"), 0u);
}

TEST_F(WebhookEndToEndTest, AnUnknownEventTypeIsAcknowledgedAndCounted) {
  StripeLogger* logger = start(config());
  const std::string body =
      R"({"id":"evt_test_unknown_1","object":"event","type":"customer.subscription.paused",)"
      R"("data":{"object":{"id":"sub_1","customer":")" +
      alice_ + R"("}}})";
  httplib::Client client(route_.url().substr(0, route_.url().find("/stripe")));
  httplib::Headers headers = {{"Stripe-Signature", signed_now(body)}};
  auto posted = client.Post("/stripe/webhook", headers, body, "application/json");
  ASSERT_TRUE(posted);
  EXPECT_EQ(posted->status, 200);
  EXPECT_EQ(json::parse(posted->body), json({{"received", true}}));
  auto again = client.Post("/stripe/webhook", headers, body, "application/json");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  const auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "unhandled"), 1u);
  EXPECT_EQ(counted(stats, "received"), 1u);
  EXPECT_EQ(counted(stats, "duplicate"), 1u);
}

// ---------------------------------------------------------------------------------------------
// Meter error reports

class MeterErrorReportTest : public WebhookEndToEndTest {
 protected:
  MeterErrorReportTest() : WebhookEndToEndTest(options_with_samples(3)) {}
  static EmulatorOptions options_with_samples(std::size_t samples) {
    EmulatorOptions options;
    options.error_report_samples = samples;
    return options;
  }

  // Logs calls call-1..call-n (10 tokens each) and waits until Stripe recorded them.
  void bill(StripeLogger& logger, int n) {
    for (int i = 1; i <= n; ++i) logger.log_success_event(call("call-" + std::to_string(i), 10));
    ASSERT_TRUE(logger.flush(in_seconds(20)));
    ASSERT_EQ(logger.stats().delivered, static_cast<std::uint64_t>(n));
  }

  // The call ids of the delivered rows, read from the outbox file once the logger stopped.
  std::set<std::string> delivered_calls() const {
    std::set<std::string> calls;
    auto outbox = Outbox::open_for_reading(dir_.file("outbox.db"));
    EXPECT_TRUE(outbox) << outbox.error().message;
    if (!outbox) return calls;
    auto rows = (*outbox)->ledger_rows(0, std::numeric_limits<std::int64_t>::max());
    EXPECT_TRUE(rows) << rows.error().message;
    if (!rows) return calls;
    for (const auto& row : *rows) calls.insert(row.call_id);
    return calls;
  }
  std::map<std::string, std::int64_t> dead_reasons() const {
    std::map<std::string, std::int64_t> reasons;
    auto outbox = Outbox::open_for_reading(dir_.file("outbox.db"));
    EXPECT_TRUE(outbox) << outbox.error().message;
    if (!outbox) return reasons;
    auto counts = (*outbox)->reason_counts();
    EXPECT_TRUE(counts) << counts.error().message;
    if (!counts) return reasons;
    for (const auto& count : *counts) {
      if (count.state == EventState::kDead) reasons[count.reason] += count.events;
    }
    return reasons;
  }

  // Triggers the report for kMeter and waits for its delivery and its processing.
  std::string report(StripeLogger& logger) {
    const std::size_t before = delivered();
    const std::string id = emulator_->trigger_meter_error_report(kMeter);
    EXPECT_FALSE(id.empty());
    const auto sent = deliveries_after(before, 1);
    EXPECT_EQ(sent.size(), 1u);
    if (!sent.empty()) {
      EXPECT_EQ(sent[0].type, "v1.billing.meter.error_report_triggered");
      EXPECT_EQ(sent[0].status, 200) << sent[0].body;
    }
    EXPECT_TRUE(logger.flush(in_seconds(20)));
    return id;
  }
};

TEST_F(MeterErrorReportTest, TheReportedRowsBecomeDeadWithStripesCode) {
  StripeLogger* logger = start(config());
  bill(*logger, 5);
  emulator_->reject_meter_event_async("call-2:total_tokens", "meter_event_customer_not_found");
  emulator_->reject_meter_event_async("call-4:total_tokens", "meter_event_customer_not_found");
  emulator_->reject_meter_event_async("call-5:total_tokens", "meter_event_no_customer_defined");
  const std::string id = report(*logger);

  auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "received"), 1u);
  EXPECT_EQ(counted(stats, "meter_error_report"), 1u);
  EXPECT_EQ(counted(stats, "meter_errors_reported"), 3u);
  EXPECT_EQ(counted(stats, "meter_rows_rejected"), 3u);
  EXPECT_EQ(counted(stats, "meter_identifiers_unmatched"), 0u);
  EXPECT_EQ(counted(stats, "fetch_failed"), 0u);
  EXPECT_EQ(stats.dead, 3u);
  EXPECT_EQ(rejected(stats, "stripe_meter_event_customer_not_found"), 2u);
  EXPECT_EQ(rejected(stats, "stripe_meter_event_no_customer_defined"), 1u);
  EXPECT_EQ(count_get_event(id), 1u) << "the thin event is fetched once";

  // The same report delivered again changes nothing.
  const std::size_t before = delivered();
  emulator_->redeliver_event(id);
  ASSERT_EQ(deliveries_after(before, 1).size(), 1u);
  ASSERT_TRUE(logger->flush(in_seconds(10)));
  stats = logger->stats();
  EXPECT_EQ(counted(stats, "duplicate"), 1u);
  EXPECT_EQ(counted(stats, "meter_rows_rejected"), 3u);
  EXPECT_EQ(stats.dead, 3u);
  stop(logger);

  EXPECT_EQ(delivered_calls(), (std::set<std::string>{"call-1", "call-3"}));
  EXPECT_EQ(dead_reasons(),
            (std::map<std::string, std::int64_t>{{"stripe_meter_event_customer_not_found", 2},
                                                 {"stripe_meter_event_no_customer_defined", 1}}));
}

TEST_F(MeterErrorReportTest, OnlyTheSampledRowsAreMarkedAndEveryErrorIsCounted) {
  StripeLogger* logger = start(config());
  bill(*logger, 8);
  std::set<std::string> refused;
  for (int i = 1; i <= 7; ++i) {  // 7 errors of one code; the report samples 3
    emulator_->reject_meter_event_async("call-" + std::to_string(i) + ":total_tokens",
                                        "meter_event_customer_not_found");
    refused.insert("call-" + std::to_string(i));
  }
  report(*logger);
  const auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "meter_errors_reported"), 7u);
  EXPECT_EQ(counted(stats, "meter_rows_rejected"), 3u);
  EXPECT_EQ(stats.dead, 3u);
  EXPECT_EQ(rejected(stats, "stripe_meter_event_customer_not_found"), 3u);
  stop(logger);

  const auto still = delivered_calls();
  EXPECT_EQ(still.size(), 5u);
  EXPECT_EQ(still.count("call-8"), 1u) << "never refused";
  std::size_t marked = 0;
  for (const std::string& call_id : refused) marked += still.count(call_id) == 0;
  EXPECT_EQ(marked, 3u) << "exactly the sampled rows are dead, all of them refused ones";
}

TEST_F(MeterErrorReportTest, SamplesNamingNoRowHereMarkNothing) {
  // Another gateway's event (its own outbox) on the same meter, and a call whose id had to be
  // hashed (sbh-…, which names no row by itself), both refused by Stripe with one of ours.
  StripeLogger* logger = start(config());
  bill(*logger, 2);
  logger->log_success_event(call("call 3/hashed", 10));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  ASSERT_EQ(logger->stats().delivered, 3u);
  const std::string hashed = meter_event_identifier("call 3/hashed", "total_tokens");
  ASSERT_EQ(hashed.rfind("sbh-", 0), 0u) << hashed;
  Config other = config(false);
  other.outbox_path = dir_.file("other.db");
  {
    auto made = make_stripe_logger(other);
    ASSERT_TRUE(made) << made.error().to_string();
    (*made)->log_success_event(call("elsewhere-1", 10));
    ASSERT_TRUE((*made)->shutdown(in_seconds(20)));
  }
  emulator_->reject_meter_event_async("elsewhere-1:total_tokens", "meter_event_customer_not_found");
  emulator_->reject_meter_event_async("call-1:total_tokens", "meter_event_customer_not_found");
  emulator_->reject_meter_event_async(hashed, "meter_event_customer_not_found");
  report(*logger);
  const auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "meter_errors_reported"), 3u);
  EXPECT_EQ(counted(stats, "meter_rows_rejected"), 1u);
  EXPECT_EQ(counted(stats, "meter_identifiers_unmatched"), 1u);
  EXPECT_EQ(stats.dead, 1u);
  stop(logger);
  EXPECT_EQ(delivered_calls(), (std::set<std::string>{"call-2", "call 3/hashed"}));
}

TEST_F(MeterErrorReportTest, AReportThatCouldNotBeFetchedIsProcessedAfterARestart) {
  StripeLogger* logger = start(config());
  bill(*logger, 3);
  emulator_->reject_meter_event_async("call-2:total_tokens", "meter_event_customer_not_found");
  stripe_emulator::Fault missing;
  missing.status = 404;
  missing.path_prefix = "/v2/core/events/";
  emulator_->inject(missing);
  report(*logger);
  auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "received"), 1u);
  EXPECT_EQ(counted(stats, "fetch_failed"), 1u);
  EXPECT_EQ(counted(stats, "meter_rows_rejected"), 0u);
  EXPECT_EQ(stats.dead, 0u);
  stop(logger);

  // Stored, not processed: the next start fetches it again and marks the row.
  StripeLogger* restarted = start(config());
  ASSERT_TRUE(restarted->flush(in_seconds(20)));
  stats = restarted->stats();
  EXPECT_EQ(counted(stats, "received"), 0u);
  EXPECT_EQ(counted(stats, "meter_error_report"), 1u);
  EXPECT_EQ(counted(stats, "meter_rows_rejected"), 1u);
  EXPECT_EQ(stats.dead, 1u);
  EXPECT_EQ(rejected(stats, "stripe_meter_event_customer_not_found"), 1u);
  stop(restarted);
  EXPECT_EQ(delivered_calls(), (std::set<std::string>{"call-1", "call-3"}));
}

TEST_F(MeterErrorReportTest, NoMeterFoundIsCounted) {
  // Events sent to an event name no meter has: Stripe accepts them, then reports no_meter.
  Config config = this->config();
  config.meter_event_name = "no_such_meter";
  StripeLogger* logger = start(config);
  bill(*logger, 2);
  const std::size_t before = delivered();
  const std::string id = emulator_->trigger_no_meter_found();
  ASSERT_FALSE(id.empty());
  const auto sent = deliveries_after(before, 1);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, "v1.billing.meter.no_meter_found");
  EXPECT_EQ(sent[0].status, 200);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  const auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "no_meter_found"), 1u);
  EXPECT_EQ(counted(stats, "meter_errors_reported"), 2u);
  EXPECT_EQ(counted(stats, "unhandled"), 0u);
  EXPECT_EQ(count_get_event(id), 1u);
}

// ---------------------------------------------------------------------------------------------
// Credit events refresh the balance admission reads

class CreditWebhookTest : public WebhookEndToEndTest {
 protected:
  Config credits_config() const {
    Config config = this->config();
    config.admission = "credits";
    config.quantity = "cost";  // response_cost x 100: cents
    config.admission_unestimable = "reserve";
    config.admission_reserve = "100";      // each call holds 100 cents until it settles
    config.credit_balance_ttl_s = "3600";  // only a webhook refreshes the balance
    config.admission_wait_ms = "2000";
    return config;
  }
  AdmissionDecision admit(StripeLogger& logger, const std::string& call_id) {
    AdmissionRequest request;
    request.call_id = call_id;
    request.model = "gpt-test";
    request.request_user = "alice";
    request.max_tokens = 100;
    return logger.admit(request);
  }
  // Admits and settles one call of exactly one dollar (100 cents).
  void spend_a_dollar(StripeLogger& logger, const std::string& call_id) {
    const auto decision = admit(logger, call_id);
    ASSERT_TRUE(decision.allowed()) << decision.reason;
    logger.log_success_event(call(call_id, 10, 1.0));
  }
};

TEST_F(CreditWebhookTest, AGrantAfterTheCreditsRanOutLetsCallsThroughAgain) {
  StripeLogger* logger = start(credits_config());
  const std::size_t before = delivered();
  emulator_->create_credit_grant(alice_, 300);
  ASSERT_EQ(deliveries_after(before, 1).size(), 1u);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  for (int i = 1; i <= 3; ++i) spend_a_dollar(*logger, "call-" + std::to_string(i));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  const auto spent = admit(*logger, "call-4");
  ASSERT_FALSE(spent.allowed());
  EXPECT_EQ(spent.reason, "credits_exhausted");
  const auto fetches = logger->stats().credit_balance_fetches;

  const std::size_t mark = delivered();
  emulator_->create_credit_grant(alice_, 500);
  const auto sent = deliveries_after(mark, 1);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, "billing.credit_grant.created");
  EXPECT_EQ(sent[0].status, 200);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(counted(logger->stats(), "billing.credit_grant.created"), 2u)
      << json(logger->stats().webhooks).dump() << describe(emulator_->webhook_deliveries());
  // The refresh itself runs on the admission thread after the webhook queued it.
  ASSERT_TRUE(eventually([&] { return admit(*logger, "call-5").allowed(); }, kDeadline))
      << "the new credits never became admissible";
  EXPECT_GT(logger->stats().credit_balance_fetches, fetches);
  logger->log_failure_event(call("call-5", 0));
}

TEST_F(CreditWebhookTest, AGrantIsAdmissibleRightAfterFlush) {
  // flush() waits for the webhook queue: is the refreshed balance in force when it returns? The
  // balance fetch the grant causes is held by the emulator until it is seen waiting, so a flush
  // that does not wait for it returns first.
  const std::size_t before = delivered();
  StripeLogger* logger = start(credits_config());
  emulator_->create_credit_grant(alice_, 100);
  ASSERT_EQ(deliveries_after(before, 1).size(), 1u);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  spend_a_dollar(*logger, "call-1");
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  ASSERT_EQ(admit(*logger, "call-2").reason, "credits_exhausted");

  stripe_emulator::Fault hold;
  hold.kind = stripe_emulator::FaultKind::kHang;
  hold.path_prefix = "/v1/billing/credit_balance_summary";
  hold.hang = std::chrono::seconds(20);
  emulator_->inject(hold);
  // The held fetch is released once the admit below has decided, or after a second if flush()
  // is still waiting for it (as it should: then it returns once the fetch is answered).
  std::mutex mutex;
  std::condition_variable decided_cv;
  bool decided = false;
  std::thread releaser([&] {
    EXPECT_TRUE(emulator_->wait_for_hung_requests(1, kDeadline)) << "the balance was not fetched";
    std::unique_lock lock(mutex);
    decided_cv.wait_for(lock, std::chrono::seconds(1), [&] { return decided; });
    emulator_->release_hangs();
  });
  const std::size_t mark = delivered();
  emulator_->create_credit_grant(alice_, 500);
  EXPECT_EQ(deliveries_after(mark, 1).size(), 1u);
  const bool flushed = logger->flush(in_seconds(20));
  const auto decision = admit(*logger, "call-3");
  {
    std::lock_guard lock(mutex);
    decided = true;
  }
  decided_cv.notify_all();
  releaser.join();
  ASSERT_TRUE(flushed);
  EXPECT_TRUE(decision.allowed()) << decision.reason
                                  << ": flush() returned before the new balance was in force";
}

TEST_F(CreditWebhookTest, CreditsConsumedByAnInvoiceAreRefusedAfterTheTransactionEvent) {
  const std::size_t before = delivered();
  StripeLogger* logger = start(credits_config());
  const std::string grant = emulator_->create_credit_grant(alice_, 1000);
  ASSERT_EQ(deliveries_after(before, 1).size(), 1u);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  // Admitted while the balance is 10 dollars; released (never billed).
  const auto first = admit(*logger, "call-1");
  ASSERT_TRUE(first.allowed()) << first.reason;
  logger->log_failure_event(call("call-1", 0));
  const auto fetches = logger->stats().credit_balance_fetches;

  // An invoice elsewhere applies 9.50 of them: 0.50 left, less than one call's hold.
  emulator_->clear_requests();
  const std::size_t mark = delivered();
  emulator_->consume_credits(alice_, 950);
  const auto sent = deliveries_after(mark, 1);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, "billing.credit_balance_transaction.created");
  EXPECT_EQ(sent[0].status, 200);
  EXPECT_EQ(json::parse(sent[0].body).value(json::json_pointer("/data/object/customer"), json()),
            json())
      << "the transaction names no customer: the library must look up its grant";
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  const auto stats = logger->stats();
  EXPECT_EQ(counted(stats, "billing.credit_balance_transaction.created"), 1u);
  std::size_t grant_gets = 0;
  for (const auto& request : emulator_->requests()) {
    grant_gets += request.method == "GET" && request.path == "/v1/billing/credit_grants/" + grant;
  }
  EXPECT_EQ(grant_gets, 1u);
  ASSERT_TRUE(
      eventually([&] { return logger->stats().credit_balance_fetches > fetches; }, kDeadline));
  // Once the new balance is read, a call needing 1.00 does not fit 0.50.
  ASSERT_TRUE(eventually([&] { return !admit(*logger, "call-2").allowed(); }, milliseconds(3000)))
      << "credits spent by an invoice stay admissible";
}

// ---------------------------------------------------------------------------------------------
// The secret

TEST_F(WebhookEndToEndTest, TheSecretIsNeverLoggedNorInTheMetrics) {
  StripeLogger* logger = start(config());
  // Every path: accepted, duplicate, forged, stale, malformed, invalid, unhandled, processed.
  const std::string id = grant_event();
  std::size_t before = delivered();
  emulator_->redeliver_event(id);
  emulator_->deliver_forged(id);
  emulator_->deliver_stale(id, std::chrono::seconds(3600));
  ASSERT_EQ(deliveries_after(before, 3).size(), 3u);
  logger->handle_stripe_webhook("{}", signed_now("{}"));
  logger->handle_stripe_webhook("{}", std::string("t=1,v1=") + kSecret);  // the secret as a v1
  logger->handle_stripe_webhook(kSecret, "garbage");
  logger->log_success_event(call("call-1", 10));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  emulator_->reject_meter_event_async("call-1:total_tokens", "meter_event_customer_not_found");
  before = delivered();
  ASSERT_FALSE(emulator_->trigger_meter_error_report(kMeter).empty());
  ASSERT_EQ(deliveries_after(before, 1).size(), 1u);
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  const auto stats = logger->stats();
  EXPECT_GE(counted(stats, "bad_signature"), 1u);
  EXPECT_GE(counted(stats, "meter_rows_rejected"), 1u);
  stop(logger);

  const std::string text = log_.text();
  EXPECT_FALSE(text.empty());
  EXPECT_NE(text.find("bad_signature"), std::string::npos) << "the refusals are logged";
  // Neither whole nor in part: at most a redacted form (prefix and last four characters).
  const std::string secret(kSecret);
  EXPECT_EQ(text.find(secret), std::string::npos) << text;
  EXPECT_EQ(text.find(secret.substr(6, secret.size() - 10)), std::string::npos) << text;
  const std::string metrics = to_json(stats) + "\n" + to_prometheus(stats);
  EXPECT_EQ(metrics.find(secret.substr(6, secret.size() - 10)), std::string::npos);
  EXPECT_EQ(metrics.find("whsec_"), std::string::npos);
  EXPECT_NE(metrics.find("bad_signature"), std::string::npos) << "the webhooks are in the metrics";
}

TEST_F(WebhookEndToEndTest, AMisconfiguredSecretIsRefusedWithoutShowingIt) {
  Config wrong = config();
  wrong.webhook_secret = "sk_test_not_a_webhook_secret_1234";
  auto made = make_stripe_logger(wrong);
  ASSERT_FALSE(made);
  const std::string message = made.error().to_string();
  EXPECT_NE(message.find("STRIPE_WEBHOOK_SECRET"), std::string::npos) << message;
  EXPECT_EQ(message.find("not_a_webhook_secret"), std::string::npos) << message;
}

}  // namespace
}  // namespace stripe_billing
