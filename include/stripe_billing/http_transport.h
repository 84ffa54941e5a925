// The seam between stripe_billing and the network. StripeClient speaks Stripe over any
// HttpTransport; production uses libcurl (make_curl_transport), tests may hand in their own.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "stripe_billing/error.h"

namespace stripe_billing {

using Headers = std::vector<std::pair<std::string, std::string>>;

// What a request is for, set by whoever builds it: the metric label of the request, and the rate
// limit it draws from (meter events have their own in live mode).
enum class Endpoint {
  kOther,
  kUsageRecords,
  kSummaries,
  kMeterEvents,
  kMeterEventStream,
  kMeterEventSession,
  kCustomerSearch,
  kSubscriptions,
  kPrices,
  kMeters,
};
// usage_records, summaries, meter_events, meter_event_stream, meter_event_session,
// customer_search, subscriptions, prices, meters, other.
const char* to_string(Endpoint endpoint) noexcept;

struct HttpRequest {
  std::string method;  // "GET" or "POST"
  std::string url;     // absolute, already encoded
  Endpoint endpoint = Endpoint::kOther;
  Headers headers;
  std::string body;
  std::chrono::milliseconds timeout{30'000};  // the whole transfer, connect included
};

struct HttpResponse {
  int status = 0;
  Headers headers;  // names lowercased
  std::string body;

  // The first header of that name (case-insensitive), or "" when absent.
  std::string header(std::string_view name) const;
};

// Thread-safe: send() may be called from several threads at once.
class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  // Blocks until the response, the request's timeout, or abort_in_flight(). Errors: kNetwork
  // (refused, reset, DNS, TLS), kTimeout, kAborted.
  virtual Expected<HttpResponse> send(const HttpRequest& request) = 0;
  // Makes every send() under way, and every later one, fail fast with kAborted (shutdown).
  virtual void abort_in_flight() = 0;
};

struct CurlTransportOptions {
  std::chrono::milliseconds connect_timeout{5'000};
  std::string user_agent;
  // Plain http:// is refused unless the host is loopback (127.0.0.1, localhost, [::1]).
  // TLS peer and host verification are always on; there is no switch to turn them off.
};

// libcurl implementation: one reusable easy handle per concurrent caller (connection reuse),
// CURLOPT_NOSIGNAL, Expect: disabled, proxies from the usual environment variables
// (https_proxy, no_proxy, ...). curl_global_init runs once per process.
std::unique_ptr<HttpTransport> make_curl_transport(const CurlTransportOptions& options = {});

// True when `url` is http(s) and its host is 127.0.0.1, localhost or [::1].
bool is_loopback_url(std::string_view url);

}  // namespace stripe_billing
