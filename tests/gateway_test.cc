// The example gateway (examples/gateway), driven in-process through
// example_gateway_lib against the in-process Stripe emulator.
#include <gtest/gtest.h>
#include <httplib.h>
#include <stripe_billing/callback.h>

#include <nlohmann/json.hpp>

#include "gateway/echo_model.h"
#include "gateway/gateway_config.h"
#include "gateway/gateway_server.h"
#include "test_support.h"

namespace gateway {
namespace {

using nlohmann::json;
using stripe_billing::testing::CapturedLog;
using stripe_billing::testing::EmulatorTest;
using stripe_billing::testing::in_seconds;

json chat_request(const std::string& prompt) {
  return {
      {"model", "echo-small"},
      {"messages",
       {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", prompt}}}}};
}

TEST(EchoModel, CountsTheWordsOfEveryMessageAsPromptAndOfTheReplyAsCompletion) {
  const json completion = echo_completion(chat_request("  hello\twide \n world "));

  EXPECT_EQ(completion["choices"][0]["message"]["content"], "  hello\twide \n world ");
  EXPECT_EQ(completion["usage"],
            json({{"prompt_tokens", 5}, {"completion_tokens", 3}, {"total_tokens", 8}}));
}

TEST(EchoModel, ReadsTheTextPartsOfAContentArray) {
  const json message = {{"role", "user"},
                        {"content",
                         {{{"type", "text"}, {"text", "two words"}},
                          {{"type", "image_url"}, {"image_url", {{"url", "x"}}}},
                          {{"type", "text"}, {"text", "three more words"}}}}};

  EXPECT_EQ(message_text(message), "two words three more words");
}

TEST(GatewayConfig, ReadsTheSampleConfig) {
  const auto env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "STRIPE_API_KEY") return "sk_test_sample_000000000000";
    if (name == "STRIPE_PRICE_ID") return "price_sample";
    return std::nullopt;
  };

  const auto config = load_gateway_config(STRIPE_BILLING_SOURCE_DIR "/examples/gateway.yaml", env);

  ASSERT_TRUE(config) << config.error().to_string();
  EXPECT_EQ(config->models.count("echo-small"), 1U);
  EXPECT_EQ(config->api_keys.at("sk-gw-alice").user_id, "alice");
  EXPECT_EQ(config->api_keys.at("sk-gw-acme-app").end_user_id, "acme-42");
  EXPECT_EQ(config->billing.success_callbacks, std::vector<std::string>{"stripe"});
  EXPECT_EQ(config->billing.config.price_id, "price_sample");
  EXPECT_EQ(config->billing.config.charge_by, "user_id");
}

class GatewayTest : public EmulatorTest {
 protected:
  GatewayTest() : alice_item_(add_customer("alice")) {
    stripe_billing::Config billing = config();
    billing.charge_by = "user_id";
    auto stripe = stripe_billing::CallbackRegistry::with_builtin_callbacks().create(
        "stripe", {billing, log_.logger(), nullptr});
    EXPECT_TRUE(stripe) << stripe.error().to_string();
    if (stripe) stripe_ = std::move(*stripe);

    GatewayConfig gateway;
    gateway.models["echo-small"] = ModelRoute{};
    gateway.api_keys["sk-gw-alice"] = KeyIdentity{"alice", "research", "", "alice-laptop"};
    server_ = std::make_unique<GatewayServer>(
        gateway, std::vector<stripe_billing::CustomLogger*>{stripe_.get()}, log_.logger());
    const auto port = server_->start(0);
    EXPECT_TRUE(port) << port.error().to_string();
    if (port) client_ = std::make_unique<httplib::Client>("127.0.0.1", *port);
  }

  httplib::Result post(const std::string& key, const std::string& body) {
    return client_->Post("/v1/chat/completions", {{"Authorization", "Bearer " + key}}, body,
                         "application/json");
  }

  // Stops the gateway, then waits until everything it handed to stripe_billing
  // is delivered.
  void drain_billing() {
    server_->stop();
    ASSERT_TRUE(stripe_->shutdown(in_seconds(10))) << log_.text();
  }

  std::size_t usage_record_requests() const {
    return count_requests("POST", "/v1/subscription_items/");
  }

  CapturedLog log_;
  std::string alice_item_;
  std::unique_ptr<stripe_billing::CustomLogger> stripe_;
  std::unique_ptr<GatewayServer> server_;  // after stripe_: stops before it goes
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(GatewayTest, RejectsAnUnknownKeyWith401AndBillsNothing) {
  const auto response = post("sk-gw-mallory", chat_request("hello").dump());

  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 401);
  EXPECT_EQ(json::parse(response->body)["error"]["code"], "invalid_api_key");
  drain_billing();
  EXPECT_EQ(usage_record_requests(), 0U);
}

TEST_F(GatewayTest, RejectsMalformedJsonWith400AndBillsNothing) {
  const auto response = post("sk-gw-alice", R"({"model": "echo-small", "messages": [)");

  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 400);
  EXPECT_EQ(json::parse(response->body)["error"]["type"], "invalid_request_error");
  drain_billing();
  EXPECT_EQ(usage_record_requests(), 0U);
}

TEST_F(GatewayTest, BillsTheKeysUserTheTokensItReturned) {
  std::int64_t tokens_returned = 0;
  for (const char* prompt : {"one two three", "a somewhat longer prompt of eight words here"}) {
    const auto response = post("sk-gw-alice", chat_request(prompt).dump());
    ASSERT_TRUE(response);
    ASSERT_EQ(response->status, 200) << response->body;
    tokens_returned += json::parse(response->body)["usage"]["total_tokens"].get<std::int64_t>();
  }

  drain_billing();

  EXPECT_EQ(tokens_returned, (2 + 3 + 3) + (2 + 8 + 8));
  EXPECT_EQ(emulator_.total_usage(alice_item_), tokens_returned) << log_.text();
}

TEST_F(GatewayTest, ServesTheBillingMetricsAsPrometheusText) {
  const auto chat = post("sk-gw-alice", chat_request("one two three").dump());
  ASSERT_TRUE(chat);
  ASSERT_EQ(chat->status, 200);
  ASSERT_TRUE(stripe_->flush(in_seconds(10)));
  const auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
  EXPECT_NE(metrics->body.find("stripe_billing_events_received_total 1\n"), std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find("stripe_billing_events_delivered_total 1\n"), std::string::npos);
}

}  // namespace
}  // namespace gateway
