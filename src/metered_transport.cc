#include "metered_transport.h"

#include <chrono>

namespace stripe_billing {
namespace {

const char* status_class(const Expected<HttpResponse>& response) {
  if (!response) return "network";
  switch (response->status / 100) {
    case 2:
      return "2xx";
    case 3:
      return "3xx";
    case 4:
      return "4xx";
    case 5:
      return "5xx";
    default:
      return "other";
  }
}

}  // namespace

MeteredTransport::MeteredTransport(std::shared_ptr<HttpTransport> inner, Metrics& metrics)
    : inner_(std::move(inner)), metrics_(metrics) {}

Expected<HttpResponse> MeteredTransport::send(const HttpRequest& request) {
  const auto started = std::chrono::steady_clock::now();
  auto response = inner_->send(request);
  // A transfer aborted at shutdown was not an answer from Stripe: not counted.
  if (!response && response.error().code == ErrorCode::kAborted) return response;
  metrics_.count_request(to_string(request.endpoint), status_class(response),
                         std::chrono::steady_clock::now() - started);
  return response;
}

void MeteredTransport::abort_in_flight() { inner_->abort_in_flight(); }

}  // namespace stripe_billing
