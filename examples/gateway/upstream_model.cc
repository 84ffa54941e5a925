#include "gateway/upstream_model.h"

#include <httplib.h>

namespace gateway {

UpstreamAnswer forward_completion(const ModelRoute& route, nlohmann::json request) {
  request["model"] = route.upstream_model;
  httplib::Client client(route.upstream);
  client.set_connection_timeout(std::chrono::seconds(5));
  client.set_read_timeout(std::chrono::minutes(2));
  if (!route.upstream_api_key.empty()) client.set_bearer_token_auth(route.upstream_api_key);
  const auto result = client.Post("/v1/chat/completions", request.dump(), "application/json");
  if (!result) return {};
  return {result->status, result->body};
}

}  // namespace gateway
