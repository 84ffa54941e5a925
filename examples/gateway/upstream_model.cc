#include "gateway/upstream_model.h"

#include <httplib.h>
#include <pthread.h>

namespace gateway {
namespace {

using nlohmann::json;

constexpr auto kConnectTimeout = std::chrono::seconds(5);
constexpr auto kReadTimeout = std::chrono::minutes(2);

}  // namespace

UpstreamAnswer forward_completion(const ModelRoute& route, json request) {
  request["model"] = route.upstream_model;
  httplib::Client client(route.upstream);
  client.set_connection_timeout(kConnectTimeout);
  client.set_read_timeout(kReadTimeout);
  if (!route.upstream_api_key.empty()) client.set_bearer_token_auth(route.upstream_api_key);
  const auto result = client.Post("/v1/chat/completions", request.dump(), "application/json");
  if (!result) return {};
  return {result->status, result->body};
}

std::unique_ptr<UpstreamStream> UpstreamStream::open(const ModelRoute& route, json request) {
  std::unique_ptr<UpstreamStream> stream(new UpstreamStream());
  request["model"] = route.upstream_model;
  UpstreamStream* self = stream.get();
  stream->reader_ = std::thread([self, route, request = std::move(request)] {
    pthread_setname_np(pthread_self(), "gateway-upstrm");
    self->run(route, request);
  });
  std::unique_lock<std::mutex> lock(stream->mutex_);
  stream->changed_.wait(lock, [self] { return self->answered_; });
  return stream;
}

void UpstreamStream::run(const ModelRoute& route, const json& request) {
  httplib::Client client(route.upstream);
  client.set_connection_timeout(kConnectTimeout);
  client.set_read_timeout(kReadTimeout);
  httplib::Request post;
  post.method = "POST";
  post.path = "/v1/chat/completions";
  post.headers = {{"Content-Type", "application/json"}, {"Accept", "text/event-stream"}};
  if (!route.upstream_api_key.empty()) {
    post.headers.emplace("Authorization", "Bearer " + route.upstream_api_key);
  }
  post.body = request.dump();
  post.response_handler = [this](const httplib::Response& response) {
    std::lock_guard<std::mutex> lock(mutex_);
    status_ = response.status;
    answered_ = true;
    changed_.notify_all();
    return !stopping_;
  };
  post.content_receiver = [this](const char* data, std::size_t length, std::uint64_t,
                                 std::uint64_t) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return false;
    pending_.emplace_back(data, length);
    changed_.notify_all();
    return true;
  };
  const auto result = client.send(post);
  std::lock_guard<std::mutex> lock(mutex_);
  answered_ = true;
  ended_ = true;
  complete_ = static_cast<bool>(result);
  changed_.notify_all();
}

UpstreamStream::~UpstreamStream() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  if (reader_.joinable()) reader_.join();
}

int UpstreamStream::status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return status_;
}

std::optional<std::string> UpstreamStream::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return !pending_.empty() || ended_; });
  if (pending_.empty()) return std::nullopt;
  std::string bytes = std::move(pending_.front());
  pending_.pop_front();
  return bytes;
}

bool UpstreamStream::complete() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return complete_;
}

std::string UpstreamStream::rest() {
  std::string body;
  while (auto bytes = next()) body += *bytes;
  return body;
}

std::string sse_event(std::string_view data) {
  std::string event = "data: ";
  event.append(data);
  event += "\n\n";
  return event;
}

std::string SseRelay::feed(std::string_view bytes) {
  std::string out;
  buffer_.append(bytes);
  std::size_t start = 0;
  for (std::size_t end; (end = buffer_.find('\n', start)) != std::string::npos; start = end + 1) {
    std::string_view line(buffer_.data() + start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {  // the event ends
      if (has_data_) out += event(data_);
      data_.clear();
      has_data_ = false;
    } else if (line.rfind("data:", 0) == 0) {
      line.remove_prefix(5);
      if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
      if (has_data_) data_ += '\n';
      data_.append(line);
      has_data_ = true;
    }
  }
  buffer_.erase(0, start);
  return out;
}

std::string SseRelay::event(const std::string& data) {
  if (data == "[DONE]") {
    done_ = true;
    return sse_event(data);
  }
  json chunk = json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (!chunk.is_object()) return sse_event(data);  // not ours to judge: passed on as it is
  const auto usage = chunk.find("usage");
  const bool has_usage = usage != chunk.end() && usage->is_object();
  if (has_usage) {
    usage_ = *usage;
    response_id_ = chunk.value("id", response_id_);
  } else if (response_id_.empty() && chunk.contains("id") && chunk["id"].is_string()) {
    response_id_ = chunk["id"].get<std::string>();
  }
  if (client_wants_usage_ || usage == chunk.end()) return sse_event(data);
  const auto choices = chunk.find("choices");
  if (has_usage && choices != chunk.end() && choices->is_array() && choices->empty()) return "";
  chunk.erase("usage");
  return sse_event(chunk.dump());
}

}  // namespace gateway
