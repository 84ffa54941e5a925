// Forwards a chat completion to an OpenAI-compatible server on a loopback address, whole or as a
// stream of Server-Sent Events; and the relay that passes such a stream on to the client.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "gateway/gateway_config.h"

namespace gateway {

struct UpstreamAnswer {
  int status = 0;  // 0: no answer (refused, reset, timed out)
  std::string body;
};

// POSTs `request` to `route.upstream`/v1/chat/completions with its `model` replaced by
// `route.upstream_model` and, when the route has one, its api_key as the bearer token. Blocks for
// at most two minutes.
UpstreamAnswer forward_completion(const ModelRoute& route, nlohmann::json request);

// A streamed answer of the upstream, read by a thread of its own ("gateway-upstrm") so that the
// gateway learns the status before it answers its client, then passes the body on as it comes.
class UpstreamStream {
 public:
  // POSTs `request` (its model replaced, as forward_completion does) and returns once the
  // upstream's status line arrived or the request failed. Never null.
  static std::unique_ptr<UpstreamStream> open(const ModelRoute& route, nlohmann::json request);
  ~UpstreamStream();  // stops reading (the upstream sees the connection close) and joins
  UpstreamStream(const UpstreamStream&) = delete;
  UpstreamStream& operator=(const UpstreamStream&) = delete;

  int status() const;  // 0: no answer
  // The next bytes of the body, blocking until some arrive; nullopt once it ended.
  std::optional<std::string> next();
  // After next() answered nullopt: true when the body ended as HTTP says it should, false when
  // the connection broke or timed out first.
  bool complete() const;
  // The whole body that remains (for relaying an error answer).
  std::string rest();

 private:
  UpstreamStream() = default;
  void run(const ModelRoute& route, const nlohmann::json& request);

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool answered_ = false;  // status line seen, or the request ended
  int status_ = 0;
  std::deque<std::string> pending_;
  bool ended_ = false;
  bool complete_ = false;
  bool stopping_ = false;
  std::thread reader_;
};

// Passes a chat.completion.chunk stream (OpenAI's SSE format: `data: {json}` events, then
// `data: [DONE]`) on to the client, and keeps the usage it reports for billing. The gateway always
// asks for usage (stream_options.include_usage); when the client did not ask, the usage chunk
// (empty `choices`) is not shown and the `usage` field is removed from the other chunks, so the
// client sees what OpenAI would have sent it. Comments and fields other than `data` are dropped.
class SseRelay {
 public:
  explicit SseRelay(bool client_wants_usage) : client_wants_usage_(client_wants_usage) {}

  // Bytes of the stream, cut anywhere; answers the bytes to send the client (maybe none).
  std::string feed(std::string_view bytes);

  // The last `usage` object the stream reported, if any.
  const std::optional<nlohmann::json>& usage() const { return usage_; }
  const std::string& response_id() const { return response_id_; }
  bool done() const { return done_; }  // `data: [DONE]` seen

 private:
  std::string event(const std::string& data);

  bool client_wants_usage_;
  std::string buffer_;  // an incomplete line
  std::string data_;    // the data lines of the event being read
  bool has_data_ = false;
  std::optional<nlohmann::json> usage_;
  std::string response_id_;
  bool done_ = false;
};

// `data: <text>\n\n`: one SSE event.
std::string sse_event(std::string_view data);

}  // namespace gateway
