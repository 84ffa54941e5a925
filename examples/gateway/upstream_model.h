// Forwards a chat completion to an OpenAI-compatible server on a loopback address.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

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

}  // namespace gateway
