#include "gateway/gateway_server.h"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <stripe_billing/metrics.h>

#include <chrono>
#include <cstdint>

#include "gateway/echo_model.h"
#include "gateway/random_id.h"
#include "gateway/upstream_model.h"

namespace gateway {
namespace {

using nlohmann::json;
using stripe_billing::TimePoint;

constexpr const char* kHost = "127.0.0.1";
constexpr double kUsdPerToken = 0.000002;  // the price every model is billed at, in this example

void reply_error(httplib::Response& response, int status, const std::string& message,
                 const std::string& type, const std::string& code) {
  response.status = status;
  response.set_content(
      json{{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", code}}}}
          .dump(),
      "application/json");
}

// What is wrong with a chat completion request, or nullopt when nothing is.
std::optional<std::string> problem_with(const json& request) {
  if (request.is_discarded()) return "We could not parse the JSON body of your request.";
  if (!request.is_object()) return "The request body must be a JSON object.";
  if (!request.contains("model") || !request["model"].is_string()) {
    return "`model` must be a string.";
  }
  if (!request.contains("messages") || !request["messages"].is_array() ||
      request["messages"].empty()) {
    return "`messages` must be a non-empty array.";
  }
  for (const auto& message : request["messages"]) {
    if (!message.is_object() || !message.contains("role") || !message["role"].is_string()) {
      return "Every message must be an object with a string `role`.";
    }
  }
  if (request.contains("user") && !request["user"].is_string()) return "`user` must be a string.";
  return std::nullopt;
}

std::optional<std::int64_t> integer(const json& object, const char* key) {
  const auto value = object.find(key);
  if (value == object.end() || !value->is_number_integer()) return std::nullopt;
  return value->get<std::int64_t>();
}

stripe_billing::UsageEvent usage_event(const json& request, const json& completion,
                                       const KeyIdentity& identity, TimePoint start_time) {
  stripe_billing::UsageEvent event;
  event.call_id = random_id("");
  event.response_id = completion.value("id", "");
  event.model = request["model"].get<std::string>();
  const json usage = completion.value("usage", json::object());
  event.prompt_tokens = integer(usage, "prompt_tokens");
  event.completion_tokens = integer(usage, "completion_tokens");
  event.total_tokens = integer(usage, "total_tokens");
  if (event.total_tokens) {
    event.response_cost = static_cast<double>(*event.total_tokens) * kUsdPerToken;
  }
  event.start_time = start_time;
  event.end_time = std::chrono::system_clock::now();
  event.request_user = request.value("user", "");
  event.user_id = identity.user_id;
  event.team_id = identity.team_id;
  event.end_user_id = identity.end_user_id;
  event.key_alias = identity.key_alias;
  return event;
}

}  // namespace

GatewayServer::GatewayServer(GatewayConfig config,
                             std::vector<stripe_billing::CustomLogger*> callbacks,
                             std::shared_ptr<spdlog::logger> logger)
    : config_(std::move(config)), callbacks_(std::move(callbacks)), logger_(std::move(logger)) {
  server_.Post("/v1/chat/completions",
               [this](const httplib::Request& request, httplib::Response& response) {
                 handle_chat(request, response);
               });
  server_.Get("/health", [](const httplib::Request&, httplib::Response& response) {
    response.set_content(R"({"status":"healthy"})", "application/json");
  });
  // Prometheus text exposition of every callback that has metrics (the "stripe" one does).
  server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    std::string text;
    for (auto* callback : callbacks_) {
      if (const auto* stripe = dynamic_cast<const stripe_billing::StripeLogger*>(callback)) {
        text += stripe_billing::to_prometheus(stripe->stats());
      }
    }
    response.set_content(text, "text/plain; version=0.0.4; charset=utf-8");
  });
}

GatewayServer::~GatewayServer() { stop(); }

stripe_billing::Expected<int> GatewayServer::start(int port) {
  const int bound =
      port == 0 ? server_.bind_to_any_port(kHost) : (server_.bind_to_port(kHost, port) ? port : -1);
  if (bound <= 0) {
    return stripe_billing::Error{stripe_billing::ErrorCode::kNetwork,
                                 "cannot listen on 127.0.0.1:" + std::to_string(port),
                                 {}};
  }
  listener_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "gateway-http");
    server_.listen_after_bind();
    listener_done_ = true;
  });
  // httplib's stop() does nothing before listen_after_bind() has begun; make sure it has.
  while (!server_.is_running() && !listener_done_) std::this_thread::yield();
  return bound;
}

void GatewayServer::stop() {
  if (!listener_.joinable()) return;
  server_.stop();
  listener_.join();  // httplib joins its workers before listen_after_bind() returns
}

void GatewayServer::handle_chat(const httplib::Request& http_request, httplib::Response& response) {
  const TimePoint start_time = std::chrono::system_clock::now();
  const KeyIdentity* identity = authenticate(http_request);
  if (identity == nullptr) {
    return reply_error(response, 401, "Incorrect API key provided.", "invalid_request_error",
                       "invalid_api_key");
  }
  const json request = json::parse(http_request.body, nullptr, /*allow_exceptions=*/false);
  if (auto problem = problem_with(request)) {
    return reply_error(response, 400, *problem, "invalid_request_error", "invalid_request");
  }
  const std::string model = request["model"].get<std::string>();
  const auto route = config_.models.find(model);
  if (route == config_.models.end()) {
    return reply_error(response, 404, "The model `" + model + "` does not exist.",
                       "invalid_request_error", "model_not_found");
  }
  const auto completion = complete(route->second, request, response);
  if (!completion) return;
  response.set_content(completion->dump(), "application/json");

  const auto event = usage_event(request, *completion, *identity, start_time);
  logger_->info("call {} model={} user_id={} total_tokens={}", event.call_id, event.model,
                event.user_id, event.total_tokens.value_or(0));
  for (auto* callback : callbacks_) callback->log_success_event(event);
}

const KeyIdentity* GatewayServer::authenticate(const httplib::Request& request) const {
  const std::string authorization = request.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (authorization.rfind(prefix, 0) != 0) return nullptr;
  const auto key = config_.api_keys.find(authorization.substr(prefix.size()));
  return key == config_.api_keys.end() ? nullptr : &key->second;
}

std::optional<nlohmann::json> GatewayServer::complete(const ModelRoute& route, const json& request,
                                                      httplib::Response& response) const {
  if (route.upstream.empty()) return echo_completion(request);
  const UpstreamAnswer answer = forward_completion(route, request);
  if (answer.status == 0) {
    reply_error(response, 502, "The upstream model server did not answer.", "api_error",
                "upstream_unreachable");
    return std::nullopt;
  }
  if (answer.status != 200) {  // relayed as it is, and not billed
    response.status = answer.status;
    response.set_content(answer.body, "application/json");
    return std::nullopt;
  }
  json completion = json::parse(answer.body, nullptr, /*allow_exceptions=*/false);
  if (!completion.is_object()) {
    reply_error(response, 502,
                "The upstream model server answered something else than a chat "
                "completion.",
                "api_error", "invalid_upstream_response");
    return std::nullopt;
  }
  return completion;
}

}  // namespace gateway
