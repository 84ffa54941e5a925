// What the commands share: loading the configuration, turning errors into exit statuses and
// key-free messages, times and numbers as the tool prints them, a Stripe client made from the
// configuration, list pagination, and aligned tables.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "cli.h"
#include "stripe_billing/config.h"
#include "stripe_billing/error.h"
#include "stripe_billing/http_transport.h"
#include "stripe_billing/stripe_client.h"

namespace stripe_billing::cli {

// Reads the YAML file or the environment, lets `adjust` fill in what a command supplies itself,
// and finalizes. On failure prints the one message to stderr and returns nullopt (exit 2).
// `raw`, when given, receives the configuration as read (for make_stripe_logger).
std::optional<FinalizedConfig> load_config(const ConfigSource& source,
                                           const std::function<void(Config&)>& adjust = {},
                                           Config* raw = nullptr);

// kInvalidConfig: 2; the outbox, the network, Stripe's 5xx and 429: 3; Stripe refusing the
// request (another 4xx): 1.
int exit_code_for(const Error& error);
// Prints "stripe-billing: <what>: <error>" to stderr, the key redacted, and returns
// exit_code_for(error).
int report_error(const FinalizedConfig& config, const std::string& what, const Error& error);
// `text` with every occurrence of the configured key replaced by its redacted form. Messages
// are key-free already (Error::to_string never holds a key); this is the second guard.
std::string redact(const FinalizedConfig& config, std::string text);

// Unix seconds ("1767225600") or RFC 3339 ("2026-01-01T00:00:00Z"); nullopt otherwise.
std::optional<std::int64_t> parse_time(std::string_view text);
// parse_time, or a message naming the option on stderr and nullopt.
std::optional<std::int64_t> parse_time_option(const std::string& name, const std::string& text);
std::string format_time(std::int64_t unix_seconds);  // RFC 3339, UTC
// An integral quantity without a fraction ("1234"), else up to 6 decimals ("0.5").
std::string format_quantity(double value);
std::int64_t now_ms();

// A Stripe v1 client on libcurl with the configuration's base, key, version and timeouts.
class StripeApi {
 public:
  explicit StripeApi(const FinalizedConfig& config);
  const StripeClient& client() const { return client_; }

 private:
  std::unique_ptr<HttpTransport> transport_;
  StripeClient client_;
};

// Every object of a Stripe list endpoint, following `has_more` with `starting_after`.
Expected<std::vector<nlohmann::json>> list_all(const StripeClient& client, const std::string& path,
                                               FormFields query = {});
// True when Stripe answered 404 resource_missing.
bool is_missing(const Error& error);

// Rows of cells as columns padded to the widest cell; columns in `right_aligned` are numbers.
void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows,
                 const std::vector<std::size_t>& right_aligned = {});

}  // namespace stripe_billing::cli
