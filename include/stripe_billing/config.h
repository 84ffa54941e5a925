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
  std::optional<std::string> api_key;  // STRIPE_API_KEY (required)
  std::optional<std::string> preset;   // STRIPE_PRESET = none|token_billing
  std::optional<std::string>
      billing_mode;  // STRIPE_BILLING_MODE = usage_records|meter_events|meter_events_v2|
                     //                       meter_event_stream|dual
  std::optional<std::string> price_id;   // STRIPE_PRICE_ID (usage records)
  std::optional<std::string> charge_by;  // STRIPE_CHARGE_BY = end_user_id|user_id|team_id
  std::optional<std::string>
      trust_request_user;                  // STRIPE_TRUST_REQUEST_USER = off|lookup|customer_id
  std::optional<std::string> api_base;     // STRIPE_API_BASE
  std::optional<std::string> api_version;  // STRIPE_API_VERSION
  std::optional<std::string> environment;  // ENVIRONMENT
  std::optional<std::string>
      quantity;  // STRIPE_QUANTITY = total_tokens|prompt_tokens|completion_tokens|split|cost|
                 //                   token_types|priced
  std::optional<std::string> max_quantity;     // STRIPE_MAX_QUANTITY
  std::optional<std::string> prompt_price_id;  // STRIPE_PROMPT_PRICE_ID (usage records, split)
  std::optional<std::string>
      completion_price_id;  // STRIPE_COMPLETION_PRICE_ID (usage records, split)
  std::optional<std::string>
      cost_multiplier;  // STRIPE_COST_MULTIPLIER (cost: units per 1.0 of response_cost)
  // Token types (STRIPE_QUANTITY=token_types, priced).
  std::optional<std::string> token_types;        // STRIPE_TOKEN_TYPES = "input,output,..."
  std::optional<std::string> token_type_prices;  // STRIPE_TOKEN_TYPE_PRICES = "input=price_1,..."
  std::optional<std::string> token_type_meters;  // STRIPE_TOKEN_TYPE_METERS = "input=ev_in,..."
  std::optional<std::string> cache_hit;          // STRIPE_CACHE_HIT = bill|skip|token_type
  std::optional<std::string> skip_call_types;    // STRIPE_SKIP_CALL_TYPES = "aretrieve_batch,..."
  std::optional<std::string> model_slugs;        // STRIPE_MODEL_SLUGS = off|on
  std::optional<std::string> model_map_file;     // STRIPE_MODEL_MAP_FILE
  std::optional<std::string> price_table;        // STRIPE_PRICE_TABLE (priced: a file)
  std::optional<std::string> price_markup;       // STRIPE_PRICE_MARKUP (priced)
  std::optional<std::string> unpriced_model;     // STRIPE_UNPRICED_MODEL = token_types|reject
  std::optional<std::string> table_reload_s;     // STRIPE_TABLE_RELOAD_S
  std::optional<std::string> v2_api_version;     // STRIPE_V2_API_VERSION (meter_events_v2)
  // Billing meters.
  std::optional<std::string> meter_event_name;         // STRIPE_METER_EVENT_NAME
  std::optional<std::string> prompt_meter_event_name;  // STRIPE_PROMPT_METER_EVENT_NAME (split)
  std::optional<std::string>
      completion_meter_event_name;                // STRIPE_COMPLETION_METER_EVENT_NAME (split)
  std::optional<std::string> meter_customer_key;  // STRIPE_METER_CUSTOMER_KEY
  std::optional<std::string> meter_value_key;     // STRIPE_METER_VALUE_KEY
  std::optional<std::string>
      meter_token_type_key;                      // STRIPE_METER_TOKEN_TYPE_KEY (split, one meter)
  std::optional<std::string> meter_model_key;    // STRIPE_METER_MODEL_KEY (adds the model)
  std::optional<std::string> meter_stream_base;  // STRIPE_METER_STREAM_BASE
  std::optional<std::string> meter_rate_limit;   // STRIPE_METER_RATE_LIMIT (requests per second)
  std::optional<std::string> customer_metadata_key;  // STRIPE_CUSTOMER_METADATA_KEY
  std::optional<std::string> customer_map;           // STRIPE_CUSTOMER_MAP = "alice=cus_1,bob=si_2"
  std::optional<std::string> lookup_cache_ttl;       // STRIPE_LOOKUP_CACHE_TTL (seconds)
  std::optional<std::string> lookup_miss_ttl;        // STRIPE_LOOKUP_MISS_TTL (seconds)
  std::optional<std::string> connect_timeout_ms;     // STRIPE_CONNECT_TIMEOUT_MS
  std::optional<std::string> timeout_ms;             // STRIPE_TIMEOUT_MS
  std::optional<std::string> queue_capacity;         // STRIPE_QUEUE_CAPACITY
  // Delivery engine (durable outbox).
  std::optional<std::string> outbox_path;            // STRIPE_OUTBOX_PATH
  std::optional<std::string> outbox_url;             // STRIPE_OUTBOX_URL (PostgreSQL; secret)
  std::optional<std::string> outbox_schema;          // STRIPE_OUTBOX_SCHEMA
  std::optional<std::string> fleet_lease_s;          // STRIPE_FLEET_LEASE_S
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
  std::optional<std::string> log_format;             // STRIPE_LOG_FORMAT = text|json
  // Admission (docs/admission.md) and Stripe's webhooks.
  std::optional<std::string> admission;             // STRIPE_ADMISSION = off|static|credits
  std::optional<std::string> budgets;               // STRIPE_BUDGETS = "pro=1000000,*=50000"
  std::optional<std::string> budget_period;         // STRIPE_BUDGET_PERIOD = month|day
  std::optional<std::string> token_budgets;         // STRIPE_TOKEN_BUDGETS = "pro:output=200000"
  std::optional<std::string> admission_max_output;  // STRIPE_ADMISSION_MAX_OUTPUT (tokens)
  std::optional<std::string>
      admission_unestimable;  // STRIPE_ADMISSION_UNESTIMABLE = reject|allow|reserve
  std::optional<std::string> admission_reserve;     // STRIPE_ADMISSION_RESERVE (reserve: units)
  std::optional<std::string> admission_fail;        // STRIPE_ADMISSION_FAIL = closed|open
  std::optional<std::string> admission_wait_ms;     // STRIPE_ADMISSION_WAIT_MS
  std::optional<std::string> hold_ttl_s;            // STRIPE_HOLD_TTL_S
  std::optional<std::string> overage;               // STRIPE_OVERAGE = refuse|allow
  std::optional<std::string> credit_balance_ttl_s;  // STRIPE_CREDIT_BALANCE_TTL_S
  std::optional<std::string> webhook_secret;        // STRIPE_WEBHOOK_SECRET (whsec_…; secret)
  std::optional<std::string> webhook_tolerance_s;   // STRIPE_WEBHOOK_TOLERANCE_S
};

// Reads a variable of the environment; returns nullopt when unset. Injected so tests and hosts
// can supply their own environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup process_environment();

// Fills every field whose variable is set in `env`.
Config config_from_env(const EnvLookup& env = process_environment());

// One setting, described for people: docs, `--help`, and the form an admin UI renders from
// callback_ui_descriptor() (callback.h).
struct SettingInfo {
  const char* variable;  // STRIPE_API_KEY
  const char* description;
  const char* default_value;  // "" when there is none (required, or empty by default)
  const char* required_in;    // the modes that need it: "all", "usage_records dual", or ""
  bool secret = false;        // shown redacted, typed into a password field
};

// Every setting config_from_env reads, in documentation order.
const std::vector<SettingInfo>& config_settings();
// Their variable names, in the same order.
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
// Whether charge_by=end_user_id may fall back to the request body's `user`, which whoever calls
// the gateway writes, when the API key has no end user. off: never. lookup: only as a value
// matched through STRIPE_CUSTOMER_MAP or the customer metadata search, never as a `cus_…` id.
// customer_id: also as a `cus_…` id taken as it is (any caller may then pick who pays).
enum class RequestUserTrust { kOff, kLookup, kCustomerId };
// usage_records: legacy usage records on a subscription item. meter_events: v1 billing meter
// events, one request per event. meter_event_stream: the v2 stream, up to 100 events a request.
// dual: usage records and v1 meter events for every event, side by side (for migrating).
// meter_events_v2: POST /v2/billing/meter_events, one JSON event per request (token billing).
enum class BillingMode { kUsageRecords, kMeterEvents, kMeterEventStream, kDual, kMeterEventsV2 };
// split bills prompt and completion tokens as two quantities; cost bills response_cost in the
// currency's smallest unit (STRIPE_COST_MULTIPLIER, 100 for cents).
// token_types bills each non-zero token type (input, output, cached_input, cache_read,
// cache_write: docs/token-types.md) as its own dimension. priced bills the call's amount computed
// from STRIPE_PRICE_TABLE, in the currency's smallest unit.
enum class QuantitySource {
  kTotalTokens,
  kPromptTokens,
  kCompletionTokens,
  kSplit,
  kCost,
  kTokenTypes,
  kPriced
};
enum class Preset { kNone, kTokenBilling };
// bill: a call served from the gateway's cache bills like any other. skip: it bills nothing
// (counted as cache_hit_not_billed). token_type: its tokens bill as one type, cache_hit.
enum class CacheHitPolicy { kBill, kSkip, kTokenType };
// A priced call whose model (or one of its token types) has no price: token_types bills its
// tokens by type instead (counted unpriced_model); reject keeps it dead with reason unpriced_model.
enum class UnpricedPolicy { kTokenTypes, kReject };
// async: log_success_event returns once the event is in memory; the writer commits it within
// the commit interval. sync: it returns once the event is committed to the outbox.
enum class Durability { kAsync, kSync };
// text: key=value activity lines; json: one JSON object per activity line.
enum class LogFormat { kText, kJson };
// off: admit() allows everything and holds nothing. static: budgets from STRIPE_BUDGETS.
// credits: the customer's Stripe billing-credit balance is the budget.
enum class AdmissionMode { kOff, kStatic, kCredits };
enum class BudgetPeriod { kMonth, kDay };  // calendar periods, UTC
// A call admit() cannot estimate (cost mode, an unpriced model): refused, allowed holding
// nothing, or holding STRIPE_ADMISSION_RESERVE.
enum class UnestimablePolicy { kReject, kAllow, kReserve };

const char* to_string(ChargeBy value) noexcept;
const char* to_string(RequestUserTrust value) noexcept;
const char* to_string(BillingMode value) noexcept;
const char* to_string(QuantitySource value) noexcept;
const char* to_string(Durability value) noexcept;
const char* to_string(Preset value) noexcept;
const char* to_string(CacheHitPolicy value) noexcept;
const char* to_string(AdmissionMode value) noexcept;

// A static mapping target: either a customer (`cus_…`) or a subscription item (`si_…`).
struct StaticTarget {
  std::string customer_id;           // set when the mapping names a customer
  std::string subscription_item_id;  // set when the mapping names a subscription item
};

// One quantity a call bills (split bills two). Everything a sender needs to bill it.
struct BilledDimension {
  // total_tokens, prompt_tokens, completion_tokens, cost, a token type (input, output,
  // cached_input, cache_read, cache_write, cache_hit) or priced
  std::string name;
  QuantitySource source = QuantitySource::kTotalTokens;  // never kSplit
  std::string price_id;          // usage records: the price whose subscription item is billed
  std::string meter_event_name;  // meters: the meter's event name
  std::string token_type;        // meters, several dimensions on one meter: "input", ...; else ""
};

// Admission's settings, checked. Budgets and reserves are in the billed units: tokens, or the
// currency's smallest unit in the cost and priced modes.
struct AdmissionSettings {
  AdmissionMode mode = AdmissionMode::kOff;
  std::map<std::string, std::int64_t> budgets;  // customer key or plan (or "*") -> per period
  // STRIPE_TOKEN_BUDGETS: customer key or plan (or "*") -> token type (input, output, ...) -> per
  // period. Only with STRIPE_QUANTITY=token_types or split.
  std::map<std::string, std::map<std::string, std::int64_t>> token_budgets;
  BudgetPeriod period = BudgetPeriod::kMonth;
  std::int64_t max_output = 4096;  // the output tokens a call may reserve, at most
  UnestimablePolicy unestimable = UnestimablePolicy::kReject;
  std::int64_t fixed_reserve = 0;  // kReserve
  bool fail_open = false;          // STRIPE_ADMISSION_FAIL=open
  std::chrono::milliseconds wait{250};
  std::chrono::seconds hold_ttl{600};
  bool overage_allowed = false;  // STRIPE_OVERAGE=allow: past the budget, calls still go
  std::chrono::seconds credit_balance_ttl{60};
  Secret webhook_secret;  // "" : no webhook route
  std::chrono::seconds webhook_tolerance{300};
};

// The checked configuration. Only finalize_config() makes one.
class FinalizedConfig {
 public:
  const Secret& api_key() const noexcept { return api_key_; }
  bool live_mode() const noexcept { return live_mode_; }
  BillingMode billing_mode() const noexcept { return billing_mode_; }
  bool uses_usage_records() const noexcept {
    return billing_mode_ == BillingMode::kUsageRecords || billing_mode_ == BillingMode::kDual;
  }
  bool uses_meters() const noexcept { return billing_mode_ != BillingMode::kUsageRecords; }
  Preset preset() const noexcept { return preset_; }
  // The price the usage-record path checks the key against (STRIPE_PRICE_ID, or the prompt
  // price when split); "" in the meter modes.
  const std::string& price_id() const noexcept { return price_id_; }
  // What each call bills, in order; one entry, or two for split.
  const std::vector<BilledDimension>& dimensions() const noexcept { return dimensions_; }
  const BilledDimension* dimension(const std::string& name) const noexcept;
  double cost_multiplier() const noexcept { return cost_multiplier_; }
  // STRIPE_COST_MULTIPLIER as written (a decimal): priced mode computes with it exactly.
  const std::string& cost_multiplier_text() const noexcept { return cost_multiplier_text_; }
  CacheHitPolicy cache_hit() const noexcept { return cache_hit_; }
  // Call types that bill nothing (retrievals, not generations); counted call_type_not_billed.
  const std::vector<std::string>& skip_call_types() const noexcept { return skip_call_types_; }
  // Meter events carry the model as a `provider/model` slug (model_slug.h); a model that maps
  // to nothing is parked (unmapped_model).
  bool model_slugs() const noexcept { return model_slugs_; }
  const std::string& model_map_file() const noexcept { return model_map_file_; }  // "": none
  const std::string& price_table() const noexcept { return price_table_; }        // "": none
  const std::string& price_markup() const noexcept { return price_markup_; }      // "": the file's
  UnpricedPolicy unpriced_model() const noexcept { return unpriced_model_; }
  std::chrono::seconds table_reload() const noexcept { return table_reload_; }
  const std::string& v2_api_version() const noexcept { return v2_api_version_; }
  const std::string& meter_customer_key() const noexcept { return meter_customer_key_; }
  const std::string& meter_value_key() const noexcept { return meter_value_key_; }
  const std::string& meter_token_type_key() const noexcept { return meter_token_type_key_; }
  const std::string& meter_model_key() const noexcept { return meter_model_key_; }  // "": off
  const std::string& meter_stream_base() const noexcept { return meter_stream_base_; }
  double meter_rate_limit() const noexcept { return meter_rate_limit_; }
  ChargeBy charge_by() const noexcept { return charge_by_; }
  RequestUserTrust trust_request_user() const noexcept { return trust_request_user_; }
  const std::string& api_base() const noexcept { return api_base_; }  // no trailing slash
  const std::string& api_version() const noexcept { return api_version_; }
  const std::string& environment() const noexcept { return environment_; }
  QuantitySource quantity_source() const noexcept { return quantity_source_; }
  std::int64_t max_quantity() const noexcept { return max_quantity_; }
  const std::string& customer_metadata_key() const noexcept { return customer_metadata_key_; }
  const std::map<std::string, StaticTarget>& customer_map() const noexcept { return customer_map_; }
  std::chrono::seconds lookup_cache_ttl() const noexcept { return lookup_cache_ttl_; }
  std::chrono::seconds lookup_miss_ttl() const noexcept { return lookup_miss_ttl_; }
  std::chrono::milliseconds connect_timeout() const noexcept { return connect_timeout_; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }
  std::size_t queue_capacity() const noexcept { return queue_capacity_; }
  const std::string& outbox_path() const noexcept { return outbox_path_; }
  // PostgreSQL, shared by a fleet of gateways (empty: the SQLite file at outbox_path()). It may
  // hold a password: reveal() it only to connect.
  const Secret& outbox_url() const noexcept { return outbox_url_; }
  bool uses_postgres() const noexcept { return !outbox_url_.empty(); }
  const std::string& outbox_url_redacted() const noexcept { return outbox_url_redacted_; }
  const std::string& outbox_schema() const noexcept { return outbox_schema_; }
  // How long the fleet's engine lease (and a batch claim) lasts without renewal.
  std::chrono::seconds fleet_lease() const noexcept { return fleet_lease_; }
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
  LogFormat log_format() const noexcept { return log_format_; }
  const AdmissionSettings& admission() const noexcept { return admission_; }

  // One line for start-up logs: mode, redacted key, test/live, price, charge-by, API base.
  std::string summary() const;

 private:
  FinalizedConfig() = default;
  friend Expected<FinalizedConfig> finalize_config(const Config& config);

  Secret api_key_;
  bool live_mode_ = false;
  Preset preset_ = Preset::kNone;
  std::string cost_multiplier_text_ = "100";
  CacheHitPolicy cache_hit_ = CacheHitPolicy::kBill;
  std::vector<std::string> skip_call_types_;
  bool model_slugs_ = false;
  std::string model_map_file_;
  std::string price_table_;
  std::string price_markup_;
  UnpricedPolicy unpriced_model_ = UnpricedPolicy::kTokenTypes;
  std::chrono::seconds table_reload_{0};
  std::string v2_api_version_;
  BillingMode billing_mode_ = BillingMode::kUsageRecords;
  std::string price_id_;
  std::vector<BilledDimension> dimensions_;
  double cost_multiplier_ = 100;
  std::string meter_customer_key_;
  std::string meter_value_key_;
  std::string meter_token_type_key_;
  std::string meter_model_key_;
  std::string meter_stream_base_;
  double meter_rate_limit_ = 0;
  ChargeBy charge_by_ = ChargeBy::kEndUserId;
  RequestUserTrust trust_request_user_ = RequestUserTrust::kOff;
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
  Secret outbox_url_;
  std::string outbox_url_redacted_;
  std::string outbox_schema_;
  std::chrono::seconds fleet_lease_{0};
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
  LogFormat log_format_ = LogFormat::kText;
  AdmissionSettings admission_;
};

// Defaults, documented in docs/configuration.md.
inline constexpr const char* kDefaultApiBase = "https://api.stripe.com";
inline constexpr const char* kDefaultApiVersion = "2025-02-24.acacia";  // last with usage records
inline constexpr const char* kDefaultCustomerMetadataKey = "litellm_customer_id";
inline constexpr std::int64_t kDefaultMaxQuantity = 10'000'000;
// The largest STRIPE_MAX_QUANTITY: 15 digits, Stripe's limit for a meter value; sums of a few
// thousand such quantities stay far from INT64_MAX.
inline constexpr std::int64_t kLargestMaxQuantity = 999'999'999'999'999;
inline constexpr const char* kDefaultOutboxPath = "stripe-billing-outbox.db";
inline constexpr const char* kDefaultOutboxSchema = "stripe_billing";
inline constexpr const char* kDefaultMeterStreamBase = "https://meter-events.stripe.com";
inline constexpr const char* kDefaultMeterCustomerKey = "stripe_customer_id";
inline constexpr const char* kDefaultMeterValueKey = "value";
inline constexpr const char* kDefaultMeterTokenTypeKey = "token_type";
// Stripe's token billing ("Billing for LLM tokens"): its meter and the model payload key.
inline constexpr const char* kTokenBillingEventName = "token-billing-tokens";
inline constexpr const char* kTokenBillingModelKey = "model";
// The Stripe-Version sent to POST /v2/billing/meter_events (STRIPE_V2_API_VERSION).
inline constexpr const char* kDefaultV2ApiVersion = "2025-10-29.preview";
// Call types LiteLLM logs that retrieve what was billed already, rather than generate.
inline constexpr const char* kDefaultSkipCallTypes =
    "aretrieve_batch,retrieve_batch,alist_batches,list_batches,aget_responses,get_responses,"
    "alist_input_items,list_input_items,aretrieve_fine_tuning_job,retrieve_fine_tuning_job,"
    "alist_fine_tuning_jobs,list_fine_tuning_jobs,afile_retrieve,file_retrieve,afile_content,"
    "file_content,afile_list,file_list,aget_assistants,get_assistants,aget_thread,get_thread,"
    "aget_messages,get_messages,aretrieve_container,retrieve_container,alist_containers,"
    "list_containers,aget_vector_store,get_vector_store";

// Checks everything and reports every problem in one kInvalidConfig error, one problem per line
// after a first line "invalid Stripe billing configuration (N problems):".
Expected<FinalizedConfig> finalize_config(const Config& config);

}  // namespace stripe_billing
