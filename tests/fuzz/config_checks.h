// The invariants both configuration targets check on finalize_config(): it never throws; it
// refuses with one kInvalidConfig error that lists the problems, or returns a configuration
// whose values are in their documented ranges; and neither the error nor summary() contains an
// API key that was handed in.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "stripe_billing/config.h"

namespace stripe_billing::fuzz {

// The key-shaped values the input hands the library as its API key. None may be printed.
class Secrets {
 public:
  void add_if_key(const std::optional<std::string>& value) {
    if (value && looks_like_api_key(*value)) values_.push_back(*value);
  }
  void check_absent(std::string_view text, const char* where) const {
    for (const std::string& secret : values_) {
      FUZZ_CHECK(!contains(text, secret),
                 std::string(where) + " contains the API key " + secret + ": " + std::string(text));
    }
  }

 private:
  std::vector<std::string> values_;
};

inline void check_config_error(const Error& error, const Secrets& secrets, const char* where) {
  FUZZ_CHECK(error.code == ErrorCode::kInvalidConfig,
             std::string(where) + ": " + error.to_string());
  FUZZ_CHECK(error.message.rfind("invalid ", 0) == 0, std::string(where) + ": " + error.message);
  FUZZ_CHECK(!error.stripe.has_value(), where);
  secrets.check_absent(error.message, where);
  secrets.check_absent(error.to_string(), where);
}

inline void check_finalized(const FinalizedConfig& config, const Config& raw,
                            const Secrets& secrets) {
  const std::string summary = config.summary();
  secrets.check_absent(summary, "summary()");
  FUZZ_CHECK(!config.api_key().empty() && config.api_key().reveal() == raw.api_key.value_or(""),
             summary);
  FUZZ_CHECK(contains(summary, " key=" + config.api_key().redacted() + " "), summary);
  FUZZ_CHECK(!config.live_mode() || config.environment() == "production", summary);

  const auto& dimensions = config.dimensions();
  const bool split = config.quantity_source() == QuantitySource::kSplit;
  FUZZ_CHECK(dimensions.size() == (split ? 2u : 1u), summary);
  for (const BilledDimension& dimension : dimensions) {
    FUZZ_CHECK(dimension.source != QuantitySource::kSplit, summary);
    FUZZ_CHECK(config.uses_usage_records() == (dimension.price_id.rfind("price_", 0) == 0),
               summary);
    FUZZ_CHECK(config.uses_meters() == !dimension.meter_event_name.empty(), summary);
    FUZZ_CHECK(dimension.meter_event_name.size() <= 100, summary);
    FUZZ_CHECK(config.dimension(dimension.name) == &dimension, dimension.name);
  }
  FUZZ_CHECK(config.price_id() == dimensions.front().price_id, summary);

  for (const std::string* base : {&config.api_base(), &config.meter_stream_base()}) {
    FUZZ_CHECK(base->rfind("https://", 0) == 0 || base->rfind("http://", 0) == 0, *base);
    FUZZ_CHECK(base->back() != '/', *base);
  }
  FUZZ_CHECK(!config.api_version().empty(), summary);
  FUZZ_CHECK(!config.meter_customer_key().empty() && !config.meter_value_key().empty(), summary);

  FUZZ_CHECK(config.max_quantity() >= 1, summary);
  FUZZ_CHECK(config.cost_multiplier() > 0 && config.cost_multiplier() <= 1'000'000, summary);
  FUZZ_CHECK(config.rate_limit() > 0 && config.rate_limit() <= 10'000, summary);
  FUZZ_CHECK(config.meter_rate_limit() >= 0 && config.meter_rate_limit() <= 10'000, summary);
  FUZZ_CHECK(config.lookup_miss_ttl() <= config.lookup_cache_ttl(), summary);
  FUZZ_CHECK(config.lookup_miss_ttl().count() >= 0, summary);
  FUZZ_CHECK(config.connect_timeout().count() >= 1 && config.connect_timeout() <= config.timeout(),
             summary);
  FUZZ_CHECK(config.queue_capacity() >= 1, summary);
  FUZZ_CHECK(!config.outbox_path().empty(), summary);
  FUZZ_CHECK(config.commit_interval().count() >= 1 && config.sync_timeout().count() >= 1, summary);
  FUZZ_CHECK(config.aggregation_window().count() >= 0, summary);
  FUZZ_CHECK(config.max_backoff().count() >= 1, summary);
  FUZZ_CHECK(
      config.max_delivery_age().count() >= 60 && config.max_delivery_age().count() <= 24 * 60 * 60,
      summary);
  FUZZ_CHECK(config.sender_threads() >= 1 && config.sender_threads() <= 64, summary);
  FUZZ_CHECK(config.park_retry().count() >= 1 && config.ledger_retention().count() >= 24 &&
                 config.auth_probe_interval().count() >= 1,
             summary);
}

// finalize_config() on `raw`, with every invariant above.
inline void finalize_and_check(const Config& raw, Secrets secrets) {
  secrets.add_if_key(raw.api_key);
  must_not_throw("finalize_config", [&] {
    const Expected<FinalizedConfig> config = finalize_config(raw);
    if (!config) {
      check_config_error(config.error(), secrets, "finalize_config");
      FUZZ_CHECK(config.error().message.rfind("invalid Stripe billing configuration (", 0) == 0,
                 config.error().message);
      return;
    }
    check_finalized(*config, raw, secrets);
  });
}

}  // namespace stripe_billing::fuzz
