// The gateway's HTTP front on 127.0.0.1: an OpenAI-compatible POST /v1/chat/completions,
// GET /health and GET /metrics. A call with a known bearer key, a well-formed body and a model
// from model_list is answered by the echo model or its upstream; each answered call then becomes
// one UsageEvent handed to every success callback. Errors are answered OpenAI-style and billed
// nowhere.
//
// `stream: true` answers Server-Sent Events in OpenAI's format (chat.completion.chunk events, then
// `data: [DONE]`). The usage is billed from the stream's usage chunk: the gateway always asks the
// upstream for it (stream_options.include_usage) and shows it to the client only when the client
// asked. A stream that ends without a usage chunk is not billed (no UsageEvent), and is logged
// and counted (streams_without_usage). A client that goes away mid-stream does not stop the call:
// the upstream has generated, and billed us for, what it reports, so the gateway reads its stream
// to the end and bills the usage chunk if one arrives (counted in client_disconnects).
//
// Admission: when a success callback is stripe_billing's StripeLogger, every call that reaches
// a model is first put to StripeLogger::admit() (its call id, model, the key's identity and plan,
// the prompt's tokens and max_tokens). A refusal is answered OpenAI-style with the decision's
// status (402, 429, 400, 403), its error body and `Retry-After` when it has one, and the model
// is not called. An admitted call that fails upstream (no answer, a non-200, a stream that ends
// without usage) goes to every callback's log_failure_event with the same call id, which
// releases its hold; a success settles it through log_success_event.
// Webhooks: POST config.webhook_path (/webhooks/stripe) is StripeLogger::handle_stripe_webhook.
//
// Threads: "gateway-http" accepts connections; httplib's worker pool runs the handlers, which
// call the callbacks concurrently (CustomLogger's methods are thread-safe and never block); a
// streamed upstream call reads the upstream on a thread of its own ("gateway-upstrm").
#pragma once

#include <httplib.h>
#include <stripe_billing/callback.h>
#include <stripe_billing/stripe_logger.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <vector>

#include "gateway/echo_model.h"
#include "gateway/gateway_config.h"

namespace spdlog {
class logger;
}

namespace gateway {

struct GatewayStats {
  std::uint64_t streams_billed = 0;         // streamed calls billed from their usage chunk
  std::uint64_t streams_without_usage = 0;  // streamed calls that ended with no usage: unbilled
  std::uint64_t client_disconnects = 0;     // streamed calls whose client went away mid-stream
};

struct StreamCall;

class GatewayServer {
 public:
  // `callbacks` are borrowed: they must outlive the server.
  GatewayServer(GatewayConfig config, std::vector<stripe_billing::CustomLogger*> callbacks,
                std::shared_ptr<spdlog::logger> logger);
  ~GatewayServer();  // stop()
  GatewayServer(const GatewayServer&) = delete;
  GatewayServer& operator=(const GatewayServer&) = delete;

  // Binds 127.0.0.1:`port` (0: any free port), serves in the background, returns the port.
  stripe_billing::Expected<int> start(int port);
  // Stops accepting and waits for the calls under way: once it returns, no callback is called.
  void stop();

  GatewayStats stats() const;

 private:
  void handle_chat(const httplib::Request& request, httplib::Response& response);
  void handle_webhook(const httplib::Request& request, httplib::Response& response);
  const KeyIdentity* authenticate(const httplib::Request& request) const;
  // StripeLogger::admit() for the call; false (the refusal answered) when it is refused.
  bool admit(const std::string& call_id, const ModelRoute& route, const nlohmann::json& request,
             const KeyIdentity& identity, httplib::Response& response);
  std::optional<nlohmann::json> complete(const ModelRoute& route, const nlohmann::json& request,
                                         httplib::Response& response);
  void stream_chat(const ModelRoute& route, const nlohmann::json& request,
                   const KeyIdentity& identity, const std::string& call_id,
                   stripe_billing::TimePoint start_time, httplib::Response& response);
  // Passes the stream on to `sink` (null, or once a write failed: reads it to the end unseen),
  // then bills it.
  void relay_stream(StreamCall& call, httplib::DataSink* sink);
  void bill(const stripe_billing::UsageEvent& event, bool streamed);
  // An admitted call that produced nothing billable: log_failure_event (releases its hold).
  void fail(const stripe_billing::UsageEvent& event, const char* why);

  GatewayConfig config_;
  std::vector<stripe_billing::CustomLogger*> callbacks_;
  stripe_billing::StripeLogger* stripe_ = nullptr;  // the first StripeLogger callback: admission
  std::shared_ptr<spdlog::logger> logger_;
  httplib::Server server_;
  std::thread listener_;
  std::atomic<bool> listener_done_{false};
  PromptCache echo_cache_;
  std::atomic<std::uint64_t> streams_billed_{0};
  std::atomic<std::uint64_t> streams_without_usage_{0};
  std::atomic<std::uint64_t> client_disconnects_{0};
};

}  // namespace gateway
