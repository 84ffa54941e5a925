// The emulator's HTTP face: cpp-httplib listening on host:port. One listener thread
// ("stripe-emu-http") accepts; a pool of request threads serves. API requests go to the API
// handler and into the request log; paths under /_emulator/ go to the control handler and are
// not logged. Every answer carries a Request-Id and Content-Type: application/json, unless the
// outcome is to drop the connection. stop() returns once the listener and every request thread
// are done; callers release anything that holds a request thread (hangs) before calling it.
#pragma once

#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>

#include "exchange.h"
#include "request_log.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace stripe_emulator {

class HttpServer {
 public:
  using Handler = std::function<Outcome(const IncomingRequest&)>;

  // Binds before returning, so port() is valid and clients may connect at once. Throws
  // std::runtime_error when the address cannot be bound.
  HttpServer(const std::string& host, int port, Handler api, Handler control, RequestLog& log);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  void stop();

 private:
  void serve(const httplib::Request& request, httplib::Response& response);
  void serve(const httplib::Request& request, const IncomingRequest& exchange,
             httplib::Response& response);

  Handler api_;
  Handler control_;
  RequestLog& log_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::mutex stop_mutex_;
  std::future<void> listener_done_;  // the listener thread
};

}  // namespace stripe_emulator
