// Configuration: what the user says (Config: raw strings, from the environment, a YAML file or
// code) and what the library runs on (FinalizedConfig: typed and checked). finalize_config() is
// the only place a value is checked and the only way to obtain a FinalizedConfig; it reports every
// problem at once in one message. No message it produces contains the API key.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "stripe_billing/error.h"
#include "stripe_billing/secret.h"

namespace stripe_billing {

// Each field is the raw text of one setting; unset means "use the default". The environment
// variable that fills a field is named beside it; in YAML the key is the lowercase name without
// the STRIPE_ prefix (api_key, price_id, ...) in the `stripe_billing` section.
struct Config {
  std::optional<std::string> api_key;                // STRIPE_API_KEY (required)
  std::optional<std::string> price_id;               // STRIPE_PRICE_ID (required)
  std::optional<std::string> charge_by;              // STRIPE_CHARGE_BY = end_user_id|user_id|team_id
  std::optional<std::string> api_base;               // STRIPE_API_BASE
  std::optional<std::string> api_version;            // STRIPE_API_VERSION
  std::optional<std::string> environment;            // ENVIRONMENT
  std::optional<std::string> quantity;               // STRIPE_QUANTITY = total_tokens|prompt_tokens|completion_tokens
  std::optional<std::string> max_quantity;           // STRIPE_MAX_QUANTITY
  std::optional<std::string> customer_metadata_key;  // STRIPE_CUSTOMER_METADATA_KEY
  std::optional<std::string> customer_map;           // STRIPE_CUSTOMER_MAP = "alice=cus_1,bob=si_2"
  std::optional<std::string> lookup_cache_ttl;       // STRIPE_LOOKUP_CACHE_TTL (seconds)
  std::optional<std::string> lookup_miss_ttl;        // STRIPE_LOOKUP_MISS_TTL (seconds)
  std::optional<std::string> connect_timeout_ms;     // STRIPE_CONNECT_TIMEOUT_MS
  std::optional<std::string> timeout_ms;             // STRIPE_TIMEOUT_MS
  std::optional<std::string> queue_capacity;         // STRIPE_QUEUE_CAPACITY
  // Delivery engine (durable outbox).
  std::optional<std::string> outbox_path;            // STRIPE_OUTBOX_PATH
  std::optional<std::string> durability;             // STRIPE_DURABILITY = async|sync
  std::optional<std::string> commit_interval_ms;     // STRIPE_COMMIT_INTERVAL_MS
  std::optional<std::string> sync_timeout_ms;        // STRIPE_SYNC_TIMEOUT_MS
  std::optional<std::string> aggregation_window_ms;  // STRIPE_AGGREGATION_WINDOW_MS
  std::optional<std::string> max_backoff_s;          // STRIPE_MAX_BACKOFF_S
  std::optional<std::string> max_delivery_age_s;     // STRIPE_MAX_DELIVERY_AGE_S
  std::optional<std::string> rate_limit;             // STRIPE_RATE_LIMIT (requests per second)
  std::optional<std::string> sender_threads;         // STRIPE_SENDER_THREADS
  std::optional<std::string> park_retry_s;           // STRIPE_PARK_RETRY_S
  std::optional<std::string> ledger_retention_days;  // STRIPE_LEDGER_RETENTION_DAYS
  std::optional<std::string> auth_probe_s;           // STRIPE_AUTH_PROBE_S
};

// Reads a variable of the environment; returns nullopt when unset. Injected so tests and hosts
// can supply their own environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup process_environment();

// Fills every field whose variable is set in `env`.
Config config_from_env(const EnvLookup& env = process_environment());

// The names of all variables config_from_env reads, in documentation order.
const std::vector<std::string>& config_variable_names();

// The result of reading a LiteLLM-style YAML file.
struct YamlSettings {
  Config config;                               // the `stripe_billing` section, env for the rest
  std::vector<std::string> success_callbacks;  // litellm_settings.success_callback
};

// Reads `litellm_settings.success_callback` and the `stripe_billing` section. A value
// `os.environ/NAME` is read from `env` (an unset variable is an error naming it). Keys of the
// `stripe_billing` section that are not settings are errors. Settings absent from the file fall
// back to their environment variable. Errors are kInvalidConfig with the file path and the key.
Expected<YamlSettings> config_from_yaml_file(const std::string& path,
                                             const EnvLookup& env = process_environment());
Expected<YamlSettings> config_from_yaml_string(const std::string& yaml,
                                               const EnvLookup& env = process_environment());

enum class ChargeBy { kEndUserId, kUserId, kTeamId };
enum class QuantitySource { kTotalTokens, kPromptTokens, kCompletionTokens };
// async: log_success_event returns once the event is in memory; the writer commits it within
// the commit interval. sync: it returns once the event is committed to the outbox.
enum class Durability { kAsync, kSync };

const char* to_string(ChargeBy value) noexcept;
const char* to_string(QuantitySource value) noexcept;
const char* to_string(Durability value) noexcept;

// A static mapping target: either a customer (`cus_…`) or a subscription item (`si_…`).
struct StaticTarget {
  std::string customer_id;           // set when the mapping names a customer
  std::string subscription_item_id;  // set when the mapping names a subscription item
};

// The checked configuration. Only finalize_config() makes one.
class FinalizedConfig {
 public:
  const Secret& api_key() const noexcept { return api_key_; }
  bool live_mode() const noexcept { return live_mode_; }
  const std::string& price_id() const noexcept { return price_id_; }
  ChargeBy charge_by() const noexcept { return charge_by_; }
  const std::string& api_base() const noexcept { return api_base_; }  // no trailing slash
  const std::string& api_version() const noexcept { return api_version_; }
  const std::string& environment() const noexcept { return environment_; }
  QuantitySource quantity_source() const noexcept { return quantity_source_; }
  std::int64_t max_quantity() const noexcept { return max_quantity_; }
  const std::string& customer_metadata_key() const noexcept { return customer_metadata_key_; }
  const std::map<std::string, StaticTarget>& customer_map() const noexcept {
    return customer_map_;
  }
  std::chrono::seconds lookup_cache_ttl() const noexcept { return lookup_cache_ttl_; }
  std::chrono::seconds lookup_miss_ttl() const noexcept { return lookup_miss_ttl_; }
  std::chrono::milliseconds connect_timeout() const noexcept { return connect_timeout_; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }
  std::size_t queue_capacity() const noexcept { return queue_capacity_; }
  const std::string& outbox_path() const noexcept { return outbox_path_; }
  Durability durability() const noexcept { return durability_; }
  std::chrono::milliseconds commit_interval() const noexcept { return commit_interval_; }
  std::chrono::milliseconds sync_timeout() const noexcept { return sync_timeout_; }
  std::chrono::milliseconds aggregation_window() const noexcept { return aggregation_window_; }
  std::chrono::seconds max_backoff() const noexcept { return max_backoff_; }
  std::chrono::seconds max_delivery_age() const noexcept { return max_delivery_age_; }
  double rate_limit() const noexcept { return rate_limit_; }  // requests per second
  int sender_threads() const noexcept { return sender_threads_; }
  std::chrono::seconds park_retry() const noexcept { return park_retry_; }
  std::chrono::hours ledger_retention() const noexcept { return ledger_retention_; }
  std::chrono::seconds auth_probe_interval() const noexcept { return auth_probe_interval_; }

  // One line for start-up logs: mode, redacted key, test/live, price, charge-by, API base.
  std::string summary() const;

 private:
  FinalizedConfig() = default;
  friend Expected<FinalizedConfig> finalize_config(const Config& config);

  Secret api_key_;
  bool live_mode_ = false;
  std::string price_id_;
  ChargeBy charge_by_ = ChargeBy::kEndUserId;
  std::string api_base_;
  std::string api_version_;
  std::string environment_;
  QuantitySource quantity_source_ = QuantitySource::kTotalTokens;
  std::int64_t max_quantity_ = 0;
  std::string customer_metadata_key_;
  std::map<std::string, StaticTarget> customer_map_;
  std::chrono::seconds lookup_cache_ttl_{0};
  std::chrono::seconds lookup_miss_ttl_{0};
  std::chrono::milliseconds connect_timeout_{0};
  std::chrono::milliseconds timeout_{0};
  std::size_t queue_capacity_ = 0;
  std::string outbox_path_;
  Durability durability_ = Durability::kAsync;
  std::chrono::milliseconds commit_interval_{0};
  std::chrono::milliseconds sync_timeout_{0};
  std::chrono::milliseconds aggregation_window_{0};
  std::chrono::seconds max_backoff_{0};
  std::chrono::seconds max_delivery_age_{0};
  double rate_limit_ = 0;
  int sender_threads_ = 0;
  std::chrono::seconds park_retry_{0};
  std::chrono::hours ledger_retention_{0};
  std::chrono::seconds auth_probe_interval_{0};
};

// Defaults, documented in docs/configuration.md.
inline constexpr const char* kDefaultApiBase = "https://api.stripe.com";
inline constexpr const char* kDefaultApiVersion = "2025-02-24.acacia";  // last with usage records
inline constexpr const char* kDefaultCustomerMetadataKey = "litellm_customer_id";
inline constexpr std::int64_t kDefaultMaxQuantity = 10'000'000;
inline constexpr const char* kDefaultOutboxPath = "stripe-billing-outbox.db";

// Checks everything and reports every problem in one kInvalidConfig error, one problem per line
// after a first line "invalid Stripe billing configuration (N problems):".
Expected<FinalizedConfig> finalize_config(const Config& config);

}  // namespace stripe_billing
