#include "http_server.h"

#include <httplib.h>
#include <pthread.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "connection_dropper.h"
#include "control_endpoints.h"
#include "ids.h"

namespace stripe_emulator {
namespace {

constexpr std::size_t kRequestThreads = 16;
// httplib checks for shutdown only between requests, so an idle keep-alive connection can
// delay stop() by up to this long.
constexpr time_t kKeepAliveSeconds = 1;

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

IncomingRequest incoming(const httplib::Request& request) {
  IncomingRequest incoming{request.method, request.path,        request.target,  {},
                           request.body,   request.remote_addr, new_request_id()};
  for (const auto& [name, value] : request.headers) incoming.headers[lowercase(name)] = value;
  return incoming;
}

RecordedRequest recorded(const IncomingRequest& request) {
  RecordedRequest recorded;
  recorded.method = request.method;
  recorded.path = request.path;
  recorded.raw_target = request.raw_target;
  recorded.headers = request.headers;
  recorded.body = request.body;
  return recorded;
}

void write(const Answer& answer, const std::string& request_id, httplib::Response& response) {
  response.status = answer.status;
  for (const auto& [name, value] : answer.headers) response.set_header(name, value);
  response.set_header("Request-Id", request_id);
  response.set_content(dump(answer.body), "application/json");
}

// The fallback when the socket cannot be found: a chunked answer that breaks off before its first
// chunk. The client sees a status line and then a truncated transfer, which every HTTP client
// reports as a failed request.
void break_off(httplib::Response& response) {
  response.status = 500;
  response.set_chunked_content_provider("application/json",
                                        [](std::size_t, httplib::DataSink&) { return false; });
}

}  // namespace

HttpServer::HttpServer(const std::string& host, int port, Handler api, Handler control,
                       RequestLog& log)
    : api_(std::move(api)),
      control_(std::move(control)),
      log_(log),
      server_(std::make_unique<httplib::Server>()) {
  server_->new_task_queue = [] { return new httplib::ThreadPool(kRequestThreads); };
  server_->set_keep_alive_timeout(kKeepAliveSeconds);
  server_->set_tcp_nodelay(true);  // no Nagle + delayed-ACK stall between header and body
  const auto handler = [this](const httplib::Request& request, httplib::Response& response) {
    serve(request, response);
  };
  server_->Get(".*", handler).Post(".*", handler).Delete(".*", handler);
  server_->Put(".*", handler).Patch(".*", handler);
  port_ =
      port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (port_ <= 0) {
    throw std::runtime_error("stripe emulator: cannot listen on " + host + ":" +
                             std::to_string(port));
  }
  listener_done_ = std::async(std::launch::async, [this] {
    pthread_setname_np(pthread_self(), "stripe-emu-http");
    server_->listen_after_bind();
  });
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::stop() {
  std::lock_guard lock(stop_mutex_);
  if (!listener_done_.valid()) return;
  // httplib's stop() does nothing until the listener is running, which may not be the case yet.
  while (!server_->is_running() &&
         listener_done_.wait_for(std::chrono::milliseconds(1)) != std::future_status::ready) {
  }
  server_->stop();
  listener_done_.get();
}

void HttpServer::serve(const httplib::Request& request, httplib::Response& response) {
  const auto exchange = incoming(request);
  try {
    serve(request, exchange, response);
  } catch (const std::exception& error) {
    write(to_answer(ApiError{
              500, "api_error", std::string("The emulator failed: ") + error.what(), "", "", {}}),
          exchange.request_id, response);
  }
}

void HttpServer::serve(const httplib::Request& request, const IncomingRequest& exchange,
                       httplib::Response& response) {
  if (exchange.path.rfind(kControlPrefix, 0) == 0) {
    write(control_(exchange).answer, exchange.request_id, response);
    return;
  }
  const auto ticket = log_.add(recorded(exchange));
  const auto outcome = api_(exchange);
  if (outcome.drop_connection) {
    log_.dropped(ticket);
    const ConnectionEndpoints connection{request.local_addr, request.local_port,
                                         request.remote_addr, request.remote_port};
    if (!drop_connection(connection)) break_off(response);
    return;
  }
  log_.answered(ticket, outcome.answer);
  write(outcome.answer, exchange.request_id, response);
}

}  // namespace stripe_emulator
