// Counts every request that reaches the network, by endpoint and status class, and times it
// into the latency histogram. A decorator at the transport seam, below the rate limiter, so the
// time measured is the network's, not the wait for a token.
//
// Thread-safe, as the transport it wraps.
#pragma once

#include <memory>

#include "metrics.h"
#include "stripe_billing/http_transport.h"

namespace stripe_billing {

class MeteredTransport final : public HttpTransport {
 public:
  MeteredTransport(std::shared_ptr<HttpTransport> inner, Metrics& metrics);
  Expected<HttpResponse> send(const HttpRequest& request) override;
  void abort_in_flight() override;

 private:
  std::shared_ptr<HttpTransport> inner_;
  Metrics& metrics_;
};

}  // namespace stripe_billing
