#include "gateway/gateway_server.h"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <stripe_billing/metrics.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <string_view>

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
  if (request.contains("stream") && !request["stream"].is_boolean() &&
      !request["stream"].is_null()) {
    return "`stream` must be a boolean.";
  }
  for (const char* limit : {"max_tokens", "max_completion_tokens"}) {
    const auto value = request.find(limit);
    if (value != request.end() && !value->is_null() &&
        !(value->is_number_integer() && value->get<std::int64_t>() > 0)) {
      return "`" + std::string(limit) + "` must be a positive integer.";
    }
  }
  if (request.contains("stream_options") && !request["stream_options"].is_null()) {
    const json& options = request["stream_options"];
    if (!options.is_object()) return "`stream_options` must be an object.";
    if (options.contains("include_usage") && !options["include_usage"].is_boolean()) {
      return "`stream_options.include_usage` must be a boolean.";
    }
  }
  return std::nullopt;
}

std::optional<std::int64_t> integer(const json& object, const char* key) {
  const auto value = object.find(key);
  if (value == object.end() || !value->is_number_integer()) return std::nullopt;
  return value->get<std::int64_t>();
}

json object_field(const json& object, const char* key) {
  const auto value = object.find(key);
  return value != object.end() && value->is_object() ? *value : json::object();
}

// `usage` as OpenAI reports it, with LiteLLM's Anthropic fields (cache_read_input_tokens,
// cache_creation_input_tokens) preferred where both are given; counts it does not have stay unset.
void fill_usage(stripe_billing::UsageEvent& event, const json& usage) {
  event.prompt_tokens = integer(usage, "prompt_tokens");
  event.completion_tokens = integer(usage, "completion_tokens");
  event.total_tokens = integer(usage, "total_tokens");
  const json prompt_details = object_field(usage, "prompt_tokens_details");
  const json completion_details = object_field(usage, "completion_tokens_details");
  event.cache_read_tokens = integer(usage, "cache_read_input_tokens");
  if (!event.cache_read_tokens) event.cache_read_tokens = integer(prompt_details, "cached_tokens");
  event.cache_write_tokens = integer(usage, "cache_creation_input_tokens");
  if (!event.cache_write_tokens) {
    event.cache_write_tokens = integer(prompt_details, "cache_creation_tokens");
  }
  event.reasoning_tokens = integer(completion_details, "reasoning_tokens");
  event.audio_input_tokens = integer(prompt_details, "audio_tokens");
  event.audio_output_tokens = integer(completion_details, "audio_tokens");
  event.image_input_tokens = integer(prompt_details, "image_tokens");
  event.image_output_tokens = integer(completion_details, "image_tokens");
}

stripe_billing::UsageEvent usage_event(const std::string& call_id, const json& request,
                                       const std::string& response_id, const json& usage,
                                       const std::string& provider, const KeyIdentity& identity,
                                       TimePoint start_time) {
  stripe_billing::UsageEvent event;
  event.call_id = call_id;
  event.response_id = response_id;
  event.model = request["model"].get<std::string>();
  event.provider = provider;
  fill_usage(event, usage);
  event.cache_hit = false;  // the gateway has no response cache of its own
  event.call_type = "acompletion";
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

std::string provider_of(const ModelRoute& route, const std::string& model) {
  return route.upstream.empty() ? echo_provider(echo_style(model)) : route.provider;
}

// The prompt's tokens before the call. The echo model's count is exact: the words of every
// message's text. For an upstream the gateway has no tokenizer: ceil(bytes / 4) of the messages'
// text, the usual rule of thumb for English with OpenAI's tokenizers.
std::int64_t prompt_tokens_estimate(const ModelRoute& route, const json& messages) {
  std::int64_t words = 0;
  std::int64_t bytes = 0;
  for (const auto& message : messages) {
    const std::string text = message_text(message);
    words += count_words(text);
    bytes += static_cast<std::int64_t>(text.size());
  }
  return route.upstream.empty() ? words : (bytes + 3) / 4;
}

// The most the call may generate: max_completion_tokens, else max_tokens; 0 when neither is given
// (admission then reserves STRIPE_ADMISSION_MAX_OUTPUT).
std::int64_t max_output_tokens(const json& request) {
  for (const char* limit : {"max_completion_tokens", "max_tokens"}) {
    if (const auto value = integer(request, limit)) return *value;
  }
  return 0;
}

bool wants_usage(const json& request) {
  const auto options = request.find("stream_options");
  if (options == request.end() || !options->is_object()) return false;
  const auto include = options->find("include_usage");
  return include != options->end() && include->is_boolean() && include->get<bool>();
}

std::string counter(const char* name, const char* help, std::uint64_t value) {
  return std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name +
         " " + std::to_string(value) + "\n";
}

}  // namespace

// One streamed call: its source (the upstream's stream, or the echo model's events) and relay.
struct StreamCall {
  StreamCall(json request, KeyIdentity identity, std::string call_id, TimePoint start_time)
      : request(std::move(request)),
        identity(std::move(identity)),
        call_id(std::move(call_id)),
        start_time(start_time),
        relay(wants_usage(this->request)) {}

  std::optional<std::string> next() {
    if (upstream) return upstream->next();
    if (echo_events.empty()) return std::nullopt;
    std::string event = std::move(echo_events.front());
    echo_events.pop_front();
    return event;
  }
  bool complete() const { return !upstream || upstream->complete(); }

  const json request;
  const KeyIdentity identity;
  const std::string call_id;
  const TimePoint start_time;
  std::string provider;
  SseRelay relay;
  std::unique_ptr<UpstreamStream> upstream;  // null: the echo model answers
  std::deque<std::string> echo_events;
  bool relayed = false;
};

GatewayServer::GatewayServer(GatewayConfig config,
                             std::vector<stripe_billing::CustomLogger*> callbacks,
                             std::shared_ptr<spdlog::logger> logger)
    : config_(std::move(config)), callbacks_(std::move(callbacks)), logger_(std::move(logger)) {
  for (auto* callback : callbacks_) {
    stripe_ = dynamic_cast<stripe_billing::StripeLogger*>(callback);
    if (stripe_ != nullptr) break;
  }
  // Answers go out at once: with Nagle's algorithm a keep-alive client waits for the delayed ACK
  // (about 40 ms) between a response's header and body writes.
  server_.set_tcp_nodelay(true);
  server_.Post("/v1/chat/completions",
               [this](const httplib::Request& request, httplib::Response& response) {
                 handle_chat(request, response);
               });
  if (stripe_ != nullptr) {
    server_.Post(config_.webhook_path,
                 [this](const httplib::Request& request, httplib::Response& response) {
                   handle_webhook(request, response);
                 });
  }
  server_.Get("/health", [](const httplib::Request&, httplib::Response& response) {
    response.set_content(R"({"status":"healthy"})", "application/json");
  });
  // Prometheus text exposition of every callback that has metrics (the "stripe" one does).
  server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
    const GatewayStats gateway = stats();
    std::string text =
        counter("gateway_streams_billed_total", "Streamed calls billed from their usage chunk.",
                gateway.streams_billed) +
        counter("gateway_streams_without_usage_total",
                "Streamed calls that ended without a usage chunk, not billed.",
                gateway.streams_without_usage) +
        counter("gateway_stream_client_disconnects_total",
                "Streamed calls whose client went away before the end.",
                gateway.client_disconnects);
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

GatewayStats GatewayServer::stats() const {
  return {streams_billed_.load(), streams_without_usage_.load(), client_disconnects_.load()};
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
  // The id the call's UsageEvent carries: admission holds its reservation under it.
  const std::string call_id = random_id("");
  if (!admit(call_id, route->second, request, *identity, response)) return;
  if (request.value("stream", json(false)) == json(true)) {
    return stream_chat(route->second, request, *identity, call_id, start_time, response);
  }
  const std::string provider = provider_of(route->second, model);
  const auto completion = complete(route->second, request, response);
  if (!completion) {
    return fail(usage_event(call_id, request, "", json::object(), provider, *identity, start_time),
                "the upstream call failed");
  }
  response.set_content(completion->dump(), "application/json");

  bill(usage_event(call_id, request, completion->value("id", ""),
                   completion->value("usage", json::object()), provider, *identity, start_time),
       /*streamed=*/false);
}

bool GatewayServer::admit(const std::string& call_id, const ModelRoute& route, const json& request,
                          const KeyIdentity& identity, httplib::Response& response) {
  if (stripe_ == nullptr) return true;
  const std::string model = request["model"].get<std::string>();
  const std::string request_user = request.value("user", "");
  stripe_billing::AdmissionRequest admission;
  admission.call_id = call_id;
  admission.model = model;
  admission.end_user_id = identity.end_user_id;
  admission.user_id = identity.user_id;
  admission.team_id = identity.team_id;
  admission.request_user = request_user;
  admission.plan = identity.plan;
  admission.input_tokens = prompt_tokens_estimate(route, request["messages"]);
  admission.max_tokens = max_output_tokens(request);
  const stripe_billing::AdmissionDecision decision = stripe_->admit(admission);
  if (decision.allowed()) return true;
  response.status = decision.http_status();
  if (decision.retry_after.count() > 0) {
    response.set_header("Retry-After", std::to_string(decision.retry_after.count()));
  }
  response.set_content(decision.openai_error_body(), "application/json");
  logger_->info("call {} model={} user_id={} refused: {} (HTTP {})", call_id, model,
                identity.user_id, decision.reason, response.status);
  return false;
}

void GatewayServer::handle_webhook(const httplib::Request& request, httplib::Response& response) {
  const stripe_billing::WebhookResponse answer =
      stripe_->handle_stripe_webhook(request.body, request.get_header_value("Stripe-Signature"));
  response.status = answer.status;
  response.set_content(answer.body, "application/json");
}

void GatewayServer::fail(const stripe_billing::UsageEvent& event, const char* why) {
  logger_->info("call {} model={} user_id={}: {}; not billed", event.call_id, event.model,
                event.user_id, why);
  for (auto* callback : callbacks_) callback->log_failure_event(event);
}

void GatewayServer::bill(const stripe_billing::UsageEvent& event, bool streamed) {
  logger_->info("call {} model={} user_id={} total_tokens={}{}", event.call_id, event.model,
                event.user_id, event.total_tokens.value_or(0), streamed ? " (streamed)" : "");
  for (auto* callback : callbacks_) callback->log_success_event(event);
}

void GatewayServer::stream_chat(const ModelRoute& route, const json& request,
                                const KeyIdentity& identity, const std::string& call_id,
                                TimePoint start_time, httplib::Response& response) {
  auto call = std::make_shared<StreamCall>(request, identity, call_id, start_time);
  const std::string model = request["model"].get<std::string>();
  call->provider = provider_of(route, model);
  if (route.upstream.empty()) {
    const EchoStyle style = echo_style(model);
    const json completion =
        echo_completion(request, style, echo_cache_.use(model, request["messages"], style));
    for (const json& chunk : completion_chunks(completion)) {
      call->echo_events.push_back(sse_event(chunk.dump()));
    }
    call->echo_events.push_back(sse_event("[DONE]"));
  } else {
    json forwarded = request;
    if (!forwarded["stream_options"].is_object()) forwarded["stream_options"] = json::object();
    forwarded["stream_options"]["include_usage"] = true;  // always: it is what we bill from
    call->upstream = UpstreamStream::open(route, std::move(forwarded));
    const int status = call->upstream->status();
    if (status == 0) {
      reply_error(response, 502, "The upstream model server did not answer.", "api_error",
                  "upstream_unreachable");
    } else if (status != 200) {  // relayed as it is, and not billed
      response.status = status;
      response.set_content(call->upstream->rest(), "application/json");
    }
    if (status != 200) {
      return fail(
          usage_event(call_id, request, "", json::object(), call->provider, identity, start_time),
          "the upstream call failed");
    }
  }
  response.set_header("Cache-Control", "no-cache");
  response.set_chunked_content_provider(
      "text/event-stream",
      [this, call](std::size_t, httplib::DataSink& sink) {
        relay_stream(*call, &sink);
        sink.done();
        return true;
      },
      // Also when httplib never asked for the content (the client went away first).
      [this, call](bool) {
        if (!call->relayed) relay_stream(*call, nullptr);
      });
}

void GatewayServer::relay_stream(StreamCall& call, httplib::DataSink* sink) {
  call.relayed = true;
  bool client_here = sink != nullptr;
  const auto send = [&](const std::string& bytes) {
    if (!client_here || bytes.empty()) return;
    if (!sink->write(bytes.data(), bytes.size())) client_here = false;
  };
  while (auto bytes = call.next()) send(call.relay.feed(*bytes));
  const std::string model = call.request["model"].get<std::string>();
  if (!call.relay.done() && !call.complete()) {
    logger_->warn("streamed call model={} user_id={}: the upstream's stream broke off", model,
                  call.identity.user_id);
    send(sse_event(json{{"error",
                         {{"message", "The upstream model server's stream broke off."},
                          {"type", "api_error"},
                          {"param", nullptr},
                          {"code", "upstream_stream_broken"}}}}
                       .dump()));
  }
  if (!client_here) {
    ++client_disconnects_;
    logger_->warn("streamed call model={} user_id={}: the client went away before the end", model,
                  call.identity.user_id);
  }
  if (!call.relay.usage()) {
    ++streams_without_usage_;
    logger_->warn("streamed call model={} user_id={}: the stream ended without usage; not billed",
                  model, call.identity.user_id);
    // Nothing to bill it by: a failure for the callbacks (its admission hold is released).
    return fail(usage_event(call.call_id, call.request, call.relay.response_id(), json::object(),
                            call.provider, call.identity, call.start_time),
                "the stream ended without usage");
  }
  ++streams_billed_;
  bill(usage_event(call.call_id, call.request, call.relay.response_id(), *call.relay.usage(),
                   call.provider, call.identity, call.start_time),
       /*streamed=*/true);
}

const KeyIdentity* GatewayServer::authenticate(const httplib::Request& request) const {
  const std::string authorization = request.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (authorization.rfind(prefix, 0) != 0) return nullptr;
  const auto key = config_.api_keys.find(authorization.substr(prefix.size()));
  return key == config_.api_keys.end() ? nullptr : &key->second;
}

std::optional<nlohmann::json> GatewayServer::complete(const ModelRoute& route, const json& request,
                                                      httplib::Response& response) {
  if (route.upstream.empty()) {
    const std::string model = request["model"].get<std::string>();
    const EchoStyle style = echo_style(model);
    return echo_completion(request, style, echo_cache_.use(model, request["messages"], style));
  }
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
