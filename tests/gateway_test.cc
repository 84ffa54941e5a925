// The example gateway (examples/gateway), driven in-process through
// example_gateway_lib against the in-process Stripe emulator.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <stripe_billing/callback.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "gateway/echo_model.h"
#include "gateway/gateway_config.h"
#include "gateway/gateway_server.h"
#include "gateway/upstream_model.h"
#include "test_support.h"

namespace gateway {
namespace {

using nlohmann::json;
using stripe_billing::UsageEvent;
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

// The `data:` payloads of an SSE body, in order.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> data;
  std::size_t start = 0;
  for (std::size_t end; (end = body.find("\n\n", start)) != std::string::npos; start = end + 2) {
    const std::string event = body.substr(start, end - start);
    if (event.rfind("data: ", 0) == 0) data.push_back(event.substr(6));
  }
  return data;
}

// The chunk objects among SSE payloads ([DONE] left out).
std::vector<json> chunks_of(const std::vector<std::string>& data) {
  std::vector<json> chunks;
  for (const auto& payload : data) {
    if (payload != "[DONE]") chunks.push_back(json::parse(payload));
  }
  return chunks;
}

std::string streamed_content(const std::vector<json>& chunks) {
  std::string content;
  for (const auto& chunk : chunks) {
    if (!chunk.contains("choices")) continue;  // an error event
    for (const auto& choice : chunk["choices"]) {
      content += choice.at("delta").value("content", "");
    }
  }
  return content;
}

TEST(EchoModel, StreamsTheReplyAsChunksThatConcatenateToItThenTheUsage) {
  const json completion = echo_completion(chat_request("  hello\twide \n world "));

  const auto chunks = completion_chunks(completion);

  ASSERT_GE(chunks.size(), 3U);
  EXPECT_EQ(chunks.front()["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(streamed_content(chunks), "  hello\twide \n world ");
  EXPECT_EQ(chunks.size(), 1U + 3U + 1U + 1U);  // role, one per word, finish_reason, usage
  for (std::size_t i = 0; i + 1 < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i]["object"], "chat.completion.chunk");
    EXPECT_EQ(chunks[i]["id"], completion["id"]);
    EXPECT_TRUE(chunks[i]["usage"].is_null());
  }
  EXPECT_EQ(chunks[chunks.size() - 2]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chunks.back()["choices"], json::array());
  EXPECT_EQ(chunks.back()["usage"], completion["usage"]);
}

// An OpenAI stream with include_usage, as the upstream sends it.
std::string upstream_sse(bool with_usage) {
  const json usage = {{"prompt_tokens", 9}, {"completion_tokens", 2}, {"total_tokens", 11}};
  std::string body;
  for (const char* piece : {"Hi", " you"}) {
    json chunk = {{"id", "chatcmpl-up"},
                  {"object", "chat.completion.chunk"},
                  {"choices", {{{"index", 0}, {"delta", {{"content", piece}}}}}}};
    if (with_usage) chunk["usage"] = nullptr;
    body += sse_event(chunk.dump());
  }
  if (with_usage) {
    body += sse_event(json{
        {"id", "chatcmpl-up"},
        {"object", "chat.completion.chunk"},
        {"choices", json::array()},
        {"usage", usage}}.dump());
  }
  return body + ": a comment\n\n" + sse_event("[DONE]");
}

TEST(SseRelay, HidesTheUsageChunkFromAClientThatDidNotAskAndKeepsItForBilling) {
  SseRelay relay(/*client_wants_usage=*/false);
  std::string sent;
  const std::string stream = upstream_sse(true);
  for (char byte : stream) sent += relay.feed(std::string_view(&byte, 1));  // cut anywhere

  const auto data = sse_data(sent);
  ASSERT_EQ(data.size(), 3U) << sent;
  EXPECT_EQ(data.back(), "[DONE]");
  for (const auto& chunk : chunks_of(data)) EXPECT_FALSE(chunk.contains("usage")) << chunk;
  EXPECT_EQ(streamed_content(chunks_of(data)), "Hi you");
  ASSERT_TRUE(relay.usage());
  EXPECT_EQ((*relay.usage())["total_tokens"], 11);
  EXPECT_EQ(relay.response_id(), "chatcmpl-up");
  EXPECT_TRUE(relay.done());
}

TEST(SseRelay, PassesTheUsageChunkOnToAClientThatAsked) {
  SseRelay relay(/*client_wants_usage=*/true);
  const std::string sent = relay.feed(upstream_sse(true));

  const auto chunks = chunks_of(sse_data(sent));
  ASSERT_EQ(chunks.size(), 3U) << sent;
  EXPECT_TRUE(chunks[0]["usage"].is_null());
  EXPECT_EQ(chunks.back()["usage"]["total_tokens"], 11);
  EXPECT_EQ(chunks.back()["choices"], json::array());
}

TEST(SseRelay, HasNoUsageWhenTheStreamReportedNone) {
  SseRelay relay(/*client_wants_usage=*/true);
  relay.feed(upstream_sse(false));

  EXPECT_FALSE(relay.usage());
  EXPECT_TRUE(relay.done());
}

json messages(std::initializer_list<std::pair<const char*, const char*>> list) {
  json messages = json::array();
  for (const auto& [role, content] : list)
    messages.push_back({{"role", role}, {"content", content}});
  return messages;
}

TEST(PromptCache, OpenAiStyleServesTheLongestLeadingRunOfMessagesSeenBefore) {
  PromptCache cache;
  const auto use = [&cache](const json& messages) {
    const CacheUse use = cache.use("echo-small", messages, EchoStyle::kOpenAi);
    EXPECT_EQ(use.written, 0);
    return use.read;
  };
  const char* system = "You answer in one short line.";  // 6 words

  EXPECT_EQ(use(messages({{"system", system}, {"user", "one two three"}})), 0);      // first time
  EXPECT_EQ(use(messages({{"system", system}, {"user", "one two three"}})), 6 + 3);  // repeated
  EXPECT_EQ(use(messages({{"system", system}, {"user", "something else"}})), 6);     // same system
  EXPECT_EQ(use(messages({{"system", system},
                          {"user", "one two three"},
                          {"assistant", "one two three"},
                          {"user", "and more"}})),
            6 + 3);  // the conversation so far
  EXPECT_EQ(use(messages({{"system", "Be brief."}, {"user", "x"}})), 0);
  EXPECT_EQ(use(messages({{"system", "Be brief."}, {"user", "y"}})), 0);  // 2 words: too few
  EXPECT_EQ(cache
                .use("other-model", messages({{"system", system}, {"user", "one two three"}}),
                     EchoStyle::kOpenAi)
                .read,
            0);  // each model has its own cache
}

TEST(PromptCache, AnthropicStyleReadsAndWritesThePrefixBeforeTheLastMessage) {
  PromptCache cache;
  const char* system = "You are a terse assistant today.";  // 6 words
  const auto use = [&cache](const json& messages) {
    return cache.use("claude-echo", messages, EchoStyle::kAnthropic);
  };

  CacheUse first = use(messages({{"system", system}, {"user", "hi there"}}));
  EXPECT_EQ(first.read, 0);
  EXPECT_EQ(first.written, 6);
  CacheUse again = use(messages({{"system", system}, {"user", "hi there"}}));
  EXPECT_EQ(again.read, 6);
  EXPECT_EQ(again.written, 0);
  CacheUse longer = use(messages(
      {{"system", system}, {"user", "hi there"}, {"assistant", "hi there"}, {"user", "bye"}}));
  EXPECT_EQ(longer.read, 6);
  EXPECT_EQ(longer.written, 4);
  CacheUse alone = use(messages({{"user", "a single message is all input"}}));
  EXPECT_EQ(alone.read, 0);
  EXPECT_EQ(alone.written, 0);
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
  EXPECT_EQ(config->models.count("claude-echo"), 1U);
  EXPECT_EQ(config->api_keys.at("sk-gw-alice").user_id, "alice");
  EXPECT_EQ(config->api_keys.at("sk-gw-acme-app").end_user_id, "acme-42");
  EXPECT_EQ(config->billing.success_callbacks, std::vector<std::string>{"stripe"});
  EXPECT_EQ(config->billing.config.price_id, "price_sample");
  EXPECT_EQ(config->billing.config.charge_by, "user_id");
}

TEST(GatewayConfig, ReadsTheUpstreamsProvider) {
  const auto config = parse_gateway_config(R"(
model_list:
  - model_name: sonnet
    litellm_params:
      model: claude-sonnet
      upstream: http://127.0.0.1:8001
      custom_llm_provider: anthropic
general_settings:
  api_keys:
    sk-gw-alice: {user_id: alice}
stripe_billing:
  api_key: sk_test_sample_000000000000
  price_id: price_sample
)",
                                           [](const std::string&) { return std::nullopt; });

  ASSERT_TRUE(config) << config.error().to_string();
  EXPECT_EQ(config->models.at("sonnet").provider, "anthropic");
}

TEST(GatewayConfig, ReadsAKeysPlanAndTheWebhookPath) {
  const auto env = [](const std::string&) { return std::nullopt; };
  const std::string yaml = R"(
model_list:
  - model_name: echo-small
    litellm_params: {model: echo}
general_settings:
  stripe_webhook_path: /hooks/stripe-events
  api_keys:
    sk-gw-alice: {user_id: alice, plan: pro}
    sk-gw-bob: {user_id: bob}
stripe_billing:
  api_key: sk_test_sample_000000000000
  price_id: price_sample
)";

  const auto config = parse_gateway_config(yaml, env);

  ASSERT_TRUE(config) << config.error().to_string();
  EXPECT_EQ(config->api_keys.at("sk-gw-alice").plan, "pro");
  EXPECT_EQ(config->api_keys.at("sk-gw-bob").plan, "");
  EXPECT_EQ(config->webhook_path, "/hooks/stripe-events");
  std::string elsewhere = yaml;
  elsewhere.replace(elsewhere.find("/hooks/stripe-events"), 20, "/v1/chat/completions");
  EXPECT_FALSE(parse_gateway_config(elsewhere, env));
}

// Keeps every event the gateway hands over, for the fields stripe_billing may not bill (yet).
class RecordingCallback final : public stripe_billing::CustomLogger {
 public:
  void log_success_event(const UsageEvent& event) noexcept override {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(event);
    changed_.notify_all();
  }
  void log_failure_event(const UsageEvent& event) noexcept override {
    std::lock_guard<std::mutex> lock(mutex_);
    ++failures_;
    failed_.push_back(event);
  }
  bool flush(std::chrono::steady_clock::time_point) noexcept override { return true; }
  bool shutdown(std::chrono::steady_clock::time_point) noexcept override { return true; }

  std::vector<UsageEvent> events() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return events_;
  }
  int failures() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return failures_;
  }
  std::vector<UsageEvent> failed() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return failed_;
  }
  bool wait_for(std::size_t count) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(10),
                             [&] { return events_.size() >= count; });
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<UsageEvent> events_;
  std::vector<UsageEvent> failed_;
  int failures_ = 0;
};

// An OpenAI-compatible server on 127.0.0.1 that answers every chat completion with `pieces` of
// content: streamed as OpenAI streams (a usage chunk only when the request asks for it), or whole.
class FakeUpstream {
 public:
  struct Script {
    std::vector<std::string> pieces = {"Hello", " from", " upstream"};
    json usage = {{"prompt_tokens", 11},
                  {"completion_tokens", 7},
                  {"total_tokens", 18},
                  {"prompt_tokens_details", {{"cached_tokens", 3}, {"audio_tokens", 0}}},
                  {"completion_tokens_details", {{"reasoning_tokens", 4}, {"audio_tokens", 0}}}};
    int hold_after = -1;   // content chunks sent before waiting for release()
    int break_after = -1;  // content chunks sent before the connection is dropped
  };

  FakeUpstream() {
    server_.Post("/v1/chat/completions", [this](const httplib::Request& request,
                                                httplib::Response& response) {
      const json body = json::parse(request.body);
      Script script;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        requests_.push_back(body);
        script = script_;
      }
      if (!body.value("stream", false)) {
        std::string content;
        for (const auto& piece : script.pieces) content += piece;
        response.set_content(json{{"id", "chatcmpl-upstream"},
                                  {"object", "chat.completion"},
                                  {"model", body["model"]},
                                  {"choices",
                                   {{{"index", 0},
                                     {"message", {{"role", "assistant"}, {"content", content}}},
                                     {"finish_reason", "stop"}}}},
                                  {"usage", script.usage}}
                                 .dump(),
                             "application/json");
        return;
      }
      const bool include_usage =
          body.contains("stream_options") && body["stream_options"].value("include_usage", false);
      response.set_chunked_content_provider("text/event-stream", [this, script, include_usage](
                                                                     std::size_t,
                                                                     httplib::DataSink& sink) {
        const auto send = [&sink, include_usage](json chunk) {
          chunk["id"] = "chatcmpl-upstream";
          chunk["object"] = "chat.completion.chunk";
          if (include_usage && !chunk.contains("usage")) chunk["usage"] = nullptr;
          const std::string event = sse_event(chunk.dump());
          sink.write(event.data(), event.size());
        };
        for (std::size_t i = 0; i < script.pieces.size(); ++i) {
          if (static_cast<int>(i) == script.break_after) return false;
          if (static_cast<int>(i) == script.hold_after) wait_for_release();
          send({{"choices", {{{"index", 0}, {"delta", {{"content", script.pieces[i]}}}}}}});
        }
        send({{"choices", {{{"index", 0}, {"delta", json::object()}, {"finish_reason", "stop"}}}}});
        if (include_usage) send({{"choices", json::array()}, {"usage", script.usage}});
        const std::string done = sse_event("[DONE]");
        sink.write(done.data(), done.size());
        sink.done();
        return true;
      });
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    listener_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::yield();  // stop() needs it listening
  }
  ~FakeUpstream() {
    release();
    server_.stop();
    listener_.join();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void set_script(Script script) {
    std::lock_guard<std::mutex> lock(mutex_);
    script_ = std::move(script);
  }
  std::vector<json> requests() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    changed_.notify_all();
  }

 private:
  void wait_for_release() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return released_; });
  }

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  Script script_;
  std::vector<json> requests_;
  bool released_ = false;
  httplib::Server server_;
  int port_ = 0;
  std::thread listener_;
};

// What a streamed call answered.
struct Streamed {
  int status = 0;
  std::string content_type;
  std::string body;
  std::vector<std::string> data;  // the SSE data payloads
  std::vector<json> chunks;       // those that are chunks
};

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
    gateway.models["claude-echo"] = ModelRoute{};
    gateway.models["upstream-gpt"] = ModelRoute{upstream_.url(), "gpt-up", "sk-up", "openai"};
    gateway.api_keys["sk-gw-alice"] = KeyIdentity{"alice", "research", "", "alice-laptop", ""};
    server_ = std::make_unique<GatewayServer>(
        gateway, std::vector<stripe_billing::CustomLogger*>{stripe_.get(), &recorder_},
        log_.logger());
    const auto port = server_->start(0);
    EXPECT_TRUE(port) << port.error().to_string();
    if (port) client_ = std::make_unique<httplib::Client>("127.0.0.1", *port);
    if (port) port_ = *port;
  }

  httplib::Result post(const std::string& key, const std::string& body) {
    return client_->Post("/v1/chat/completions", {{"Authorization", "Bearer " + key}}, body,
                         "application/json");
  }

  // POSTs a chat completion and reads the answer as it streams; `keep_reading` (given what came so
  // far) false makes the client hang up.
  Streamed stream(const json& body,
                  const std::function<bool(const std::string&)>& keep_reading = nullptr) {
    httplib::Client client("127.0.0.1", port_);
    Streamed streamed;
    httplib::Request request;
    request.method = "POST";
    request.path = "/v1/chat/completions";
    request.headers = {{"Authorization", "Bearer sk-gw-alice"},
                       {"Content-Type", "application/json"}};
    request.body = body.dump();
    request.response_handler = [&streamed](const httplib::Response& response) {
      streamed.status = response.status;
      streamed.content_type = response.get_header_value("Content-Type");
      return true;
    };
    request.content_receiver = [&](const char* data, std::size_t length, std::uint64_t,
                                   std::uint64_t) {
      streamed.body.append(data, length);
      return !keep_reading || keep_reading(streamed.body);
    };
    client.send(request);
    streamed.data = sse_data(streamed.body);
    streamed.chunks = chunks_of(streamed.data);
    return streamed;
  }

  json ok_json(const json& body) {
    const auto response = post("sk-gw-alice", body.dump());
    EXPECT_TRUE(response);
    if (!response) return json::object();
    EXPECT_EQ(response->status, 200) << response->body;
    return json::parse(response->body);
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
  RecordingCallback recorder_;
  FakeUpstream upstream_;
  std::unique_ptr<GatewayServer> server_;  // after stripe_: stops before it goes
  std::unique_ptr<httplib::Client> client_;
  int port_ = 0;
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

json streaming(json request, bool include_usage) {
  request["stream"] = true;
  if (include_usage) request["stream_options"] = {{"include_usage", true}};
  return request;
}

TEST_F(GatewayTest, StreamsTheEchoAndShowsTheUsageChunkOnlyToAClientThatAskedForIt) {
  const Streamed plain = stream(streaming(chat_request("one two three"), false));
  const Streamed with_usage = stream(streaming(chat_request("four five"), true));

  for (const Streamed* streamed : {&plain, &with_usage}) {
    EXPECT_EQ(streamed->status, 200);
    EXPECT_EQ(streamed->content_type, "text/event-stream");
    ASSERT_FALSE(streamed->data.empty()) << streamed->body;
    EXPECT_EQ(streamed->data.back(), "[DONE]");
  }
  EXPECT_EQ(streamed_content(plain.chunks), "one two three");
  for (const auto& chunk : plain.chunks) {
    EXPECT_FALSE(chunk.contains("usage")) << chunk;
    EXPECT_FALSE(chunk["choices"].empty()) << chunk;
  }
  EXPECT_EQ(streamed_content(with_usage.chunks), "four five");
  const json& usage_chunk = with_usage.chunks.back();
  EXPECT_EQ(usage_chunk["choices"], json::array());
  EXPECT_EQ(usage_chunk["usage"]["prompt_tokens"], 2 + 2);
  EXPECT_EQ(usage_chunk["usage"]["completion_tokens"], 2);
  EXPECT_EQ(usage_chunk["usage"]["total_tokens"], 6);

  const auto events = recorder_.events();  // handed over before the stream's end
  ASSERT_EQ(events.size(), 2U);
  EXPECT_EQ(events[0].prompt_tokens, 2 + 3);
  EXPECT_EQ(events[0].completion_tokens, 3);
  EXPECT_EQ(events[0].total_tokens, 8);
  EXPECT_EQ(events[0].response_id, plain.chunks.front()["id"]);
  EXPECT_EQ(events[1].total_tokens, 6);
  EXPECT_EQ(server_->stats().streams_billed, 2U);
  drain_billing();
  EXPECT_EQ(emulator_.total_usage(alice_item_), 8 + 6) << log_.text();
}

TEST_F(GatewayTest, ProxiesTheUpstreamsStreamAlwaysAskingItForUsageAndBillsTheFinalUsage) {
  json request = chat_request("ignored by the fake");
  request["model"] = "upstream-gpt";

  const Streamed plain = stream(streaming(request, false));
  const Streamed with_usage = stream(streaming(request, true));

  const auto asked = upstream_.requests();
  ASSERT_EQ(asked.size(), 2U);
  for (const auto& forwarded : asked) {
    EXPECT_EQ(forwarded["model"], "gpt-up");
    EXPECT_EQ(forwarded["stream"], true);
    EXPECT_EQ(forwarded["stream_options"]["include_usage"], true);
  }
  EXPECT_EQ(plain.status, 200);
  EXPECT_EQ(streamed_content(plain.chunks), "Hello from upstream");
  ASSERT_FALSE(plain.data.empty());
  EXPECT_EQ(plain.data.back(), "[DONE]");
  for (const auto& chunk : plain.chunks) EXPECT_FALSE(chunk.contains("usage")) << chunk;
  EXPECT_EQ(streamed_content(with_usage.chunks), "Hello from upstream");
  ASSERT_FALSE(with_usage.chunks.empty());
  EXPECT_EQ(with_usage.chunks.back()["usage"]["total_tokens"], 18);
  EXPECT_TRUE(with_usage.chunks.front()["usage"].is_null());

  const auto events = recorder_.events();
  ASSERT_EQ(events.size(), 2U);
  for (const auto& event : events) {
    EXPECT_EQ(event.model, "upstream-gpt");
    EXPECT_EQ(event.provider, "openai");
    EXPECT_EQ(event.response_id, "chatcmpl-upstream");
    EXPECT_EQ(event.prompt_tokens, 11);
    EXPECT_EQ(event.completion_tokens, 7);
    EXPECT_EQ(event.total_tokens, 18);
    EXPECT_EQ(event.cache_read_tokens, 3);
    EXPECT_EQ(event.cache_write_tokens, std::nullopt);
    EXPECT_EQ(event.reasoning_tokens, 4);
    EXPECT_EQ(event.audio_input_tokens, 0);
    EXPECT_EQ(event.call_type, "acompletion");
    EXPECT_FALSE(event.cache_hit);
    EXPECT_EQ(event.user_id, "alice");
  }
  drain_billing();
  EXPECT_EQ(emulator_.total_usage(alice_item_), 2 * 18) << log_.text();
}

TEST_F(GatewayTest, AStreamThatBreaksOffBeforeItsUsageBillsNothing) {
  FakeUpstream::Script script;
  script.break_after = 2;
  upstream_.set_script(script);
  json request = chat_request("hello");
  request["model"] = "upstream-gpt";

  const Streamed broken = stream(streaming(request, true));

  EXPECT_EQ(broken.status, 200);
  EXPECT_EQ(streamed_content(broken.chunks), "Hello from");
  ASSERT_FALSE(broken.chunks.empty()) << broken.body;
  EXPECT_EQ(broken.chunks.back()["error"]["code"], "upstream_stream_broken");
  EXPECT_TRUE(std::find(broken.data.begin(), broken.data.end(), "[DONE]") == broken.data.end());
  EXPECT_TRUE(recorder_.events().empty());
  EXPECT_EQ(recorder_.failures(), 1);  // nothing to bill: a failure (releases an admission hold)
  EXPECT_EQ(server_->stats().streams_without_usage, 1U);
  EXPECT_EQ(server_->stats().streams_billed, 0U);
  EXPECT_NE(log_.text().find("ended without usage; not billed"), std::string::npos);
  const auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("gateway_streams_without_usage_total 1\n"), std::string::npos);
  drain_billing();
  EXPECT_EQ(usage_record_requests(), 0U);
}

TEST_F(GatewayTest, AClientThatHangsUpMidStreamIsBilledWhatTheUpstreamReported) {
  FakeUpstream::Script script;
  script.pieces = {"first"};
  for (int i = 0; i < 200; ++i) script.pieces.push_back(" more");  // writes that must fail
  script.hold_after = 1;                                           // until the client has gone
  upstream_.set_script(script);
  json request = chat_request("hello");
  request["model"] = "upstream-gpt";

  const Streamed cut = stream(streaming(request, false), [](const std::string& so_far) {
    return so_far.find("first") == std::string::npos;  // hang up once it came
  });
  upstream_.release();

  EXPECT_EQ(streamed_content(cut.chunks), "first");
  ASSERT_TRUE(recorder_.wait_for(1)) << log_.text();
  const auto events = recorder_.events();
  EXPECT_EQ(events[0].total_tokens, 18);
  EXPECT_EQ(events[0].cache_read_tokens, 3);
  drain_billing();  // waits for the call under way
  EXPECT_EQ(server_->stats().client_disconnects, 1U) << log_.text();
  EXPECT_EQ(server_->stats().streams_billed, 1U);
  EXPECT_EQ(emulator_.total_usage(alice_item_), 18) << log_.text();
}

TEST_F(GatewayTest, AnUpstreamCompletionsTokenDetailsGoIntoTheEvent) {
  FakeUpstream::Script script;
  script.usage = {{"prompt_tokens", 30},
                  {"completion_tokens", 5},
                  {"total_tokens", 35},
                  {"cache_read_input_tokens", 12},
                  {"cache_creation_input_tokens", 8},
                  {"prompt_tokens_details", {{"cached_tokens", 12}, {"image_tokens", 6}}},
                  {"completion_tokens_details", {{"reasoning_tokens", 2}, {"audio_tokens", 1}}}};
  upstream_.set_script(script);
  json request = chat_request("hello");
  request["model"] = "upstream-gpt";

  const json completion = ok_json(request);

  EXPECT_EQ(completion["usage"]["total_tokens"], 35);
  const auto events = recorder_.events();
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].cache_read_tokens, 12);
  EXPECT_EQ(events[0].cache_write_tokens, 8);
  EXPECT_EQ(events[0].reasoning_tokens, 2);
  EXPECT_EQ(events[0].image_input_tokens, 6);
  EXPECT_EQ(events[0].audio_output_tokens, 1);
  EXPECT_EQ(events[0].audio_input_tokens, std::nullopt);
  EXPECT_EQ(events[0].image_output_tokens, std::nullopt);
  EXPECT_EQ(events[0].provider, "openai");
}

TEST_F(GatewayTest, ARepeatedPromptReportsCachedTokensAndTheEventCarriesThem) {
  const json first = ok_json(chat_request("one two three"));
  const json again = ok_json(chat_request("one two three"));
  const json other = ok_json(chat_request("four five six"));
  const Streamed streamed = stream(streaming(chat_request("one two three"), true));

  EXPECT_EQ(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(again["usage"]["prompt_tokens_details"]["cached_tokens"], 5);  // all of it
  EXPECT_EQ(again["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(other["usage"]["prompt_tokens_details"]["cached_tokens"], 0);  // "Be brief.": 2 < 4
  ASSERT_FALSE(streamed.chunks.empty());
  EXPECT_EQ(streamed.chunks.back()["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
  const auto events = recorder_.events();
  ASSERT_EQ(events.size(), 4U);
  const std::vector<std::int64_t> cached = {0, 5, 0, 5};
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].cache_read_tokens, cached[i]) << i;
    EXPECT_EQ(events[i].cache_write_tokens, std::nullopt);
    EXPECT_EQ(events[i].reasoning_tokens, std::nullopt);
    EXPECT_EQ(events[i].provider, "openai");
    EXPECT_EQ(events[i].call_type, "acompletion");
    EXPECT_FALSE(events[i].cache_hit);
  }
}

TEST_F(GatewayTest, TheClaudeStyleEchoReportsPromptAsInputPlusCacheReadPlusCacheWrite) {
  json request = {{"model", "claude-echo"},
                  {"messages",
                   {{{"role", "system"}, {"content", "You are a terse assistant today."}},
                    {{"role", "user"}, {"content", "hi there"}}}}};
  const json first = ok_json(request);
  const json again = ok_json(request);
  request["messages"].push_back({{"role", "assistant"}, {"content", "hi there"}});
  request["messages"].push_back({{"role", "user"}, {"content", "bye now"}});
  const json longer = ok_json(request);

  struct Expected {
    std::int64_t input, read, write;
  };
  const std::vector<Expected> expected = {{2, 0, 6}, {2, 6, 0}, {2, 6, 4}};
  const std::vector<json> usages = {first["usage"], again["usage"], longer["usage"]};
  const auto events = recorder_.events();
  ASSERT_EQ(events.size(), 3U);
  for (std::size_t i = 0; i < usages.size(); ++i) {
    const json& usage = usages[i];
    const auto [input, read, write] = expected[i];
    EXPECT_EQ(usage["prompt_tokens"], input + read + write) << i;
    EXPECT_EQ(usage["cache_read_input_tokens"], read) << i;
    EXPECT_EQ(usage["cache_creation_input_tokens"], write) << i;
    EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], read) << i;
    EXPECT_EQ(events[i].provider, "anthropic");
    EXPECT_EQ(events[i].model, "claude-echo");
    EXPECT_EQ(events[i].prompt_tokens, input + read + write) << i;
    EXPECT_EQ(events[i].cache_read_tokens, read) << i;
    EXPECT_EQ(events[i].cache_write_tokens, write) << i;
  }
}

TEST_F(GatewayTest, TheEchoReasonsWhenAskedToAndTheEventCarriesTheReasoningTokens) {
  json request = chat_request("one two three");
  request["reasoning_effort"] = "low";

  const json completion = ok_json(request);

  EXPECT_EQ(completion["usage"]["completion_tokens"], 6);
  EXPECT_EQ(completion["usage"]["completion_tokens_details"]["reasoning_tokens"], 3);
  EXPECT_EQ(completion["usage"]["total_tokens"], 5 + 6);
  const auto events = recorder_.events();
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].reasoning_tokens, 3);
  EXPECT_EQ(events[0].completion_tokens, 6);
}

TEST_F(GatewayTest, RejectsAStreamFlagThatIsNotABoolean) {
  json request = chat_request("hello");
  request["stream"] = "yes";

  const auto response = post("sk-gw-alice", request.dump());

  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 400);
  EXPECT_TRUE(recorder_.events().empty());
}

// ---------------------------------------------------------------------------------------------
// Admission (StripeLogger::admit before the upstream call) and the webhook route.

class GatewayAdmissionTest : public EmulatorTest {
 protected:
  GatewayAdmissionTest() { add_customer("alice", &alice_customer_); }

  // The gateway with stripe_billing configured as `billing` (charge_by user_id), the recorder
  // beside it; alice's key has the plan "pro".
  void start(stripe_billing::Config billing) {
    billing.charge_by = "user_id";
    stripe_ = make_logger(billing, log_.logger());
    ASSERT_TRUE(stripe_);
    GatewayConfig gateway;
    gateway.models["echo-small"] = ModelRoute{};
    gateway.models["upstream-gpt"] = ModelRoute{upstream_.url(), "gpt-up", "", "openai"};
    gateway.api_keys["sk-gw-alice"] = KeyIdentity{"alice", "research", "", "alice-laptop", "pro"};
    server_ = std::make_unique<GatewayServer>(
        gateway, std::vector<stripe_billing::CustomLogger*>{stripe_.get(), &recorder_},
        log_.logger());
    const auto port = server_->start(0);
    ASSERT_TRUE(port) << port.error().to_string();
    port_ = *port;
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
  }

  httplib::Result chat(const json& body) {
    return client_->Post("/v1/chat/completions", {{"Authorization", "Bearer sk-gw-alice"}},
                         body.dump(), "application/json");
  }

  // A request to the fake upstream whose reservation is exactly what the upstream then reports
  // (total_tokens 18): the prompt estimate is ceil(bytes / 4) of the messages' text, here
  // "Be brief." (9 bytes) + 35 bytes = 44 bytes -> 11 tokens, plus max_tokens 7.
  static json upstream_request() {
    json request = chat_request(std::string(35, 'w'));
    request["model"] = "upstream-gpt";
    request["max_tokens"] = 7;
    return request;
  }
  static constexpr std::int64_t kReservation = 11 + 7;

  // The OpenAI-style error a refusal carries.
  static json error_of(const httplib::Result& response) {
    const json body = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
    return body.is_object() && body.contains("error") ? body["error"] : json();
  }

  CapturedLog log_;
  std::string alice_customer_;
  std::unique_ptr<stripe_billing::StripeLogger> stripe_;
  RecordingCallback recorder_;
  FakeUpstream upstream_;
  std::unique_ptr<GatewayServer> server_;  // after stripe_: stops before it goes
  std::unique_ptr<httplib::Client> client_;
  int port_ = 0;
};

TEST_F(GatewayAdmissionTest, AStaticBudgetRefusesTheCallThatNoLongerFitsWith402) {
  stripe_billing::Config billing = config();
  billing.admission = "static";
  billing.budgets = "pro=" + std::to_string(3 * kReservation);  // alice's plan: three calls
  billing.admission_wait_ms = "5000";  // for the first grant (the most allowed)
  ASSERT_NO_FATAL_FAILURE(start(billing));

  for (int call = 1; call <= 3; ++call) {
    const auto response = chat(upstream_request());
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 200) << call << ": " << response->body << log_.text();
  }
  const auto refused = chat(upstream_request());

  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 402) << refused->body;
  EXPECT_EQ(refused->get_header_value("Content-Type"), "application/json");
  const json error = error_of(refused);
  EXPECT_EQ(error["code"], "budget_exhausted") << refused->body;
  EXPECT_EQ(error["type"], "insufficient_quota");
  EXPECT_TRUE(error["message"].is_string() && !error["message"].get<std::string>().empty());
  EXPECT_TRUE(error.contains("param") && error["param"].is_null());
  // Retry-After: the seconds until the period (a month) ends.
  ASSERT_TRUE(refused->has_header("Retry-After"));
  const long retry_after = std::stol(refused->get_header_value("Retry-After"));
  EXPECT_GT(retry_after, 0);
  EXPECT_LE(retry_after, 31L * 24 * 3600);
  EXPECT_EQ(upstream_.requests().size(), 3U);  // the refused call never reached it
  EXPECT_EQ(recorder_.events().size(), 3U);    // nor was it billed, or reported as a failure
  EXPECT_EQ(recorder_.failures(), 0);
  const auto stats = stripe_->stats();
  EXPECT_EQ(stats.admissions, 3U);
  EXPECT_EQ(stats.admission_denials.count("budget_exhausted") != 0
                ? stats.admission_denials.at("budget_exhausted")
                : 0U,
            1U);
  EXPECT_EQ(stats.holds_settled, 3U);  // each success settled its hold by the gateway's call id
  EXPECT_EQ(stats.holds_open, 0U);
  // Each hold was taken under the id of the UsageEvent that settled it.
  for (const auto& event : recorder_.events()) {
    EXPECT_EQ(event.call_id.size(), 32U) << event.call_id;
  }
}

TEST_F(GatewayAdmissionTest, ACustomerWithNoBudgetIsRefusedWith402AndTheUpstreamIsNotCalled) {
  stripe_billing::Config billing = config();
  billing.admission = "static";
  billing.budgets = "team-plan=1000";  // nothing for alice, her plan or everyone
  billing.admission_wait_ms = "5000";
  ASSERT_NO_FATAL_FAILURE(start(billing));

  const auto refused = chat(upstream_request());

  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 402) << refused->body;
  EXPECT_EQ(error_of(refused)["code"], "no_budget") << refused->body;
  EXPECT_FALSE(refused->has_header("Retry-After"));  // not transient
  EXPECT_TRUE(upstream_.requests().empty());
  EXPECT_TRUE(recorder_.events().empty());
}

TEST_F(GatewayAdmissionTest, ATransientRefusalAnswers429WithRetryAfterAndTheRetryIsAdmitted) {
  stripe_billing::Config billing = config();
  billing.admission = "static";
  billing.budgets = "*=1000";
  billing.admission_wait_ms = "0";  // no wait for the first grant: the policy answers at once
  billing.admission_fail = "closed";
  ASSERT_NO_FATAL_FAILURE(start(billing));

  const auto refused = chat(upstream_request());

  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 429) << refused->body;
  EXPECT_EQ(refused->get_header_value("Retry-After"), "1");
  const json error = error_of(refused);
  EXPECT_EQ(error["code"], "balance_unavailable") << refused->body;
  EXPECT_EQ(error["type"], "rate_limit_error");
  EXPECT_TRUE(upstream_.requests().empty());  // refused: the upstream was not called
  EXPECT_TRUE(recorder_.events().empty());

  // Retrying, as the client is told to, is admitted once the grant is in.
  int status = 0;
  ASSERT_TRUE(stripe_billing::testing::eventually(
      [&] {
        const auto again = chat(upstream_request());
        status = again ? again->status : 0;
        return status != 429;
      },
      std::chrono::seconds(10)))
      << log_.text();
  EXPECT_EQ(status, 200);
  EXPECT_EQ(upstream_.requests().size(), 1U);
  EXPECT_GE(stripe_->stats().admission_denials.at("balance_unavailable"), 1U);
}

TEST_F(GatewayAdmissionTest, AnUpstreamFailureReleasesTheHoldUnderTheSameCallId) {
  stripe_billing::Config billing = config();
  billing.admission = "static";
  billing.budgets = "*=" + std::to_string(kReservation);  // room for one call at a time
  billing.admission_wait_ms = "5000";
  ASSERT_NO_FATAL_FAILURE(start(billing));
  FakeUpstream::Script broken;
  broken.break_after = 1;  // the stream breaks off before its usage
  upstream_.set_script(broken);
  json streamed = upstream_request();
  streamed["stream"] = true;

  const auto first = chat(streamed);

  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  EXPECT_NE(first->body.find("upstream_stream_broken"), std::string::npos) << first->body;
  const auto failed = recorder_.failed();
  ASSERT_EQ(failed.size(), 1U) << log_.text();
  EXPECT_EQ(failed[0].call_id.size(), 32U);
  EXPECT_EQ(failed[0].user_id, "alice");
  auto stats = stripe_->stats();
  EXPECT_EQ(stats.holds_released, 1U);  // the same call id as the hold admit() took
  EXPECT_EQ(stats.holds_open, 0U);
  EXPECT_EQ(stats.failure_events, 1U);

  // The budget has room for one reservation: free again, so the next call is admitted.
  upstream_.set_script(FakeUpstream::Script{});
  const auto second = chat(upstream_request());
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 200) << second->body;
  EXPECT_EQ(upstream_.requests().size(), 2U);
  stats = stripe_->stats();
  EXPECT_EQ(stats.holds_settled, 1U);
  EXPECT_EQ(stats.holds_open, 0U);
}

TEST_F(GatewayAdmissionTest, AnUnreachableUpstreamIsAFailureForTheCallbacks) {
  stripe_billing::Config billing = config();
  billing.admission = "static";
  billing.budgets = "*=" + std::to_string(kReservation);
  billing.admission_wait_ms = "5000";
  // A second gateway whose upstream is a loopback port that refuses connections: a socket bound,
  // never listening, held for the test.
  const int refusing = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(refusing, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(refusing, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  socklen_t length = sizeof address;
  ASSERT_EQ(::getsockname(refusing, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const int dead_port = ntohs(address.sin_port);
  ASSERT_NO_FATAL_FAILURE(start(billing));
  GatewayConfig gateway;
  gateway.models["upstream-gpt"] =
      ModelRoute{"http://127.0.0.1:" + std::to_string(dead_port), "gpt-up", "", "openai"};
  gateway.api_keys["sk-gw-alice"] = KeyIdentity{"alice", "research", "", "alice-laptop", "pro"};
  GatewayServer dead(gateway, {stripe_.get(), &recorder_}, log_.logger());
  const auto port = dead.start(0);
  ASSERT_TRUE(port);
  httplib::Client client("127.0.0.1", *port);

  const auto answer = client.Post("/v1/chat/completions", {{"Authorization", "Bearer sk-gw-alice"}},
                                  upstream_request().dump(), "application/json");

  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 502) << answer->body;
  ASSERT_EQ(recorder_.failed().size(), 1U);
  EXPECT_EQ(stripe_->stats().holds_released, 1U);
  EXPECT_EQ(stripe_->stats().holds_open, 0U);
  EXPECT_TRUE(upstream_.requests().empty());
  dead.stop();
  ::close(refusing);
}

TEST_F(GatewayAdmissionTest, TheWebhookRouteAnswers400ForAForgedSignatureAnd200ForStripesEvent) {
  const std::string secret = "whsec_gateway_test_0123456789abcdef";
  stripe_billing::Config billing = config();
  billing.webhook_secret = secret;
  ASSERT_NO_FATAL_FAILURE(start(billing));
  emulator_.add_webhook_endpoint("http://127.0.0.1:" + std::to_string(port_) + "/webhooks/stripe",
                                 secret);

  emulator_.create_credit_grant(alice_customer_, 500);  // emits billing.credit_grant.created
  ASSERT_TRUE(emulator_.wait_for_webhook_deliveries(1, std::chrono::seconds(10)));
  const auto delivered = emulator_.webhook_deliveries();
  EXPECT_EQ(delivered[0].type, "billing.credit_grant.created");
  EXPECT_EQ(delivered[0].kind, "normal");
  EXPECT_EQ(delivered[0].status, 200) << log_.text();
  emulator_.deliver_forged(delivered[0].event_id);
  ASSERT_TRUE(emulator_.wait_for_webhook_deliveries(2, std::chrono::seconds(10)));
  const auto forged = emulator_.webhook_deliveries().at(1);
  EXPECT_EQ(forged.kind, "forged");
  EXPECT_EQ(forged.status, 400);

  // Also a body and header the test makes up.
  const auto made_up = client_->Post(
      "/webhooks/stripe", {{"Stripe-Signature", "t=1700000000,v1=" + std::string(64, 'a')}},
      delivered[0].body, "application/json");
  ASSERT_TRUE(made_up);
  EXPECT_EQ(made_up->status, 400) << made_up->body;
  ASSERT_TRUE(stripe_->flush(in_seconds(10)));
  const auto webhooks = stripe_->stats().webhooks;
  EXPECT_EQ(webhooks.count("received") != 0 ? webhooks.at("received") : 0U, 1U);
  EXPECT_GE(webhooks.count("bad_signature") + webhooks.count("stale_timestamp"), 1U);
  EXPECT_EQ(log_.text().find(secret), std::string::npos);
}

}  // namespace
}  // namespace gateway
