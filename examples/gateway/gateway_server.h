// The gateway's HTTP front on 127.0.0.1: an OpenAI-compatible POST /v1/chat/completions and
// GET /health. A call with a known bearer key, a well-formed body and a model from model_list is
// answered by the echo model or its upstream; each answered call then becomes one UsageEvent
// handed to every success callback. Errors are answered OpenAI-style and billed nowhere.
//
// Threads: "gateway-http" accepts connections; httplib's worker pool runs the handlers, which
// call the callbacks concurrently (CustomLogger's methods are thread-safe and never block).
#pragma once

#include <httplib.h>
#include <stripe_billing/callback.h>

#include <atomic>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <vector>

#include "gateway/gateway_config.h"

namespace spdlog {
class logger;
}

namespace gateway {

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

 private:
  void handle_chat(const httplib::Request& request, httplib::Response& response);
  const KeyIdentity* authenticate(const httplib::Request& request) const;
  std::optional<nlohmann::json> complete(const ModelRoute& route, const nlohmann::json& request,
                                         httplib::Response& response) const;

  GatewayConfig config_;
  std::vector<stripe_billing::CustomLogger*> callbacks_;
  std::shared_ptr<spdlog::logger> logger_;
  httplib::Server server_;
  std::thread listener_;
  std::atomic<bool> listener_done_{false};
};

}  // namespace gateway
