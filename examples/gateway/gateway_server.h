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
// Threads: "gateway-http" accepts connections; httplib's worker pool runs the handlers, which
// call the callbacks concurrently (CustomLogger's methods are thread-safe and never block); a
// streamed upstream call reads the upstream on a thread of its own ("gateway-upstrm").
#pragma once

#include <httplib.h>
#include <stripe_billing/callback.h>

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
  const KeyIdentity* authenticate(const httplib::Request& request) const;
  std::optional<nlohmann::json> complete(const ModelRoute& route, const nlohmann::json& request,
                                         httplib::Response& response);
  void stream_chat(const ModelRoute& route, const nlohmann::json& request,
                   const KeyIdentity& identity, stripe_billing::TimePoint start_time,
                   httplib::Response& response);
  // Passes the stream on to `sink` (null, or once a write failed: reads it to the end unseen),
  // then bills it.
  void relay_stream(StreamCall& call, httplib::DataSink* sink);
  void bill(const stripe_billing::UsageEvent& event, bool streamed);

  GatewayConfig config_;
  std::vector<stripe_billing::CustomLogger*> callbacks_;
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
