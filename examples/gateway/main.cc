// stripe-gateway: a small OpenAI-compatible LLM gateway that bills every successful call through
// the callbacks its config names (`litellm_settings.success_callback: ["stripe"]`).
//
//   stripe-gateway --config gateway.yaml [--port 0] [--port-file PATH]
//
// Exit codes: 0 after SIGINT/SIGTERM, 1 when it cannot listen, 2 for a bad config or callback.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <stripe_billing/callback.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <vector>

#include "gateway/gateway_config.h"
#include "gateway/gateway_server.h"

namespace {

using Callbacks = std::vector<std::unique_ptr<stripe_billing::CustomLogger>>;

stripe_billing::Expected<Callbacks> create_callbacks(const gateway::GatewayConfig& config,
                                                     std::shared_ptr<spdlog::logger> logger) {
  const auto registry = stripe_billing::CallbackRegistry::with_builtin_callbacks();
  const stripe_billing::CallbackContext context{config.billing.config, std::move(logger), nullptr};
  Callbacks callbacks;
  for (const auto& name : config.billing.success_callbacks) {
    auto callback = registry.create(name, context);
    if (!callback) return callback.error();
    callbacks.push_back(std::move(*callback));
  }
  return callbacks;
}

std::vector<stripe_billing::CustomLogger*> borrow(const Callbacks& callbacks) {
  std::vector<stripe_billing::CustomLogger*> borrowed;
  for (const auto& callback : callbacks) borrowed.push_back(callback.get());
  return borrowed;
}

// Blocked in every thread (they inherit the mask), so only sigwait() in main sees them.
sigset_t block_termination_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

// Readers never see a half-written file: write beside it, then rename over it.
bool write_atomically(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp";
  std::ofstream(temporary) << text;
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  return !error;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"An OpenAI-compatible LLM gateway that bills usage to Stripe"};
  std::string config_path;
  std::string port_file;
  int port = 0;
  app.add_option("--config", config_path, "LiteLLM-style YAML config")->required();
  app.add_option("--port", port, "Port on 127.0.0.1; 0 picks a free one")->capture_default_str();
  app.add_option("--port-file", port_file, "Written with the port once listening");
  CLI11_PARSE(app, argc, argv);

  auto logger = std::make_shared<spdlog::logger>(
      "gateway", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  auto config = gateway::load_gateway_config(config_path);
  if (!config) {
    std::cerr << "stripe-gateway: " << config.error().to_string() << '\n';
    return 2;
  }
  const sigset_t termination = block_termination_signals();
  auto callbacks = create_callbacks(*config, logger);
  if (!callbacks) {
    std::cerr << "stripe-gateway: " << callbacks.error().to_string() << '\n';
    return 2;
  }

  gateway::GatewayServer server(std::move(*config), borrow(*callbacks), logger);
  const auto bound = server.start(port);
  if (!bound) {
    std::cerr << "stripe-gateway: " << bound.error().to_string() << '\n';
    return 1;
  }
  if (!port_file.empty() && !write_atomically(port_file, std::to_string(*bound) + "\n")) {
    std::cerr << "stripe-gateway: cannot write " << port_file << '\n';
    return 1;
  }
  logger->info("listening on http://127.0.0.1:{} with {} success callback(s)", *bound,
               callbacks->size());

  int signal = 0;
  sigwait(&termination, &signal);
  logger->info("{}: stopping", strsignal(signal));
  server.stop();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (const auto& callback : *callbacks) {
    if (!callback->shutdown(deadline))
      logger->error("a callback did not drain before its deadline");
  }
  logger->info("stopped");
  return 0;
}
