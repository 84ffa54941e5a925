#include "stripe_billing/config.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <iomanip>
#include <limits>
#include <locale>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "model_slug.h"
#include "pg_conninfo.h"
#include "price_table.h"
#include "stripe_billing/http_transport.h"
#include "token_types.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

constexpr const char* kDefaultEnvironment = "development";
constexpr const char* kProductionEnvironment = "production";
// API version 2025-03-31.basil removed usage records and legacy metered prices.
constexpr std::string_view kFirstVersionWithoutUsageRecords = "2025-03-31";
constexpr std::size_t kMaxMetadataKeyLength = 40;  // Stripe's limit for metadata keys
constexpr std::size_t kMaxShownValueLength = 80;
// A configured key shorter than this is not searched for in other values (it would match words).
constexpr std::size_t kMinKeyLengthToFind = 8;

struct IntegerRule {
  const char* variable;
  const char* unit;  // "" when the number has no unit
  std::int64_t default_value;
  std::int64_t min;
  std::int64_t max;
  const char* above_max_reason = nullptr;  // appended to the message when the value is too big
};

// Upper bounds keep durations far from overflowing a clock's time_point arithmetic downstream.
constexpr std::int64_t kMaxTtlSeconds = 365LL * 24 * 60 * 60;
constexpr std::int64_t kMaxTimeoutMs = 60LL * 60 * 1000;

// Two quantities below 10^15 (prompt + completion, or the calls of a batch by the thousand) sum
// far below INT64_MAX; and Stripe takes no meter value of more than 15 significant digits.
constexpr IntegerRule kMaxQuantityRule{
    "STRIPE_MAX_QUANTITY",
    "",
    kDefaultMaxQuantity,
    1,
    kLargestMaxQuantity,
    "Stripe accepts no quantity of more than 15 significant digits, and sums of larger "
    "quantities could overflow"};
constexpr IntegerRule kLookupCacheTtlRule{"STRIPE_LOOKUP_CACHE_TTL", "seconds", 300, 0,
                                          kMaxTtlSeconds};
constexpr IntegerRule kLookupMissTtlRule{"STRIPE_LOOKUP_MISS_TTL", "seconds", 30, 0,
                                         kMaxTtlSeconds};
constexpr IntegerRule kConnectTimeoutRule{"STRIPE_CONNECT_TIMEOUT_MS", "milliseconds", 5'000, 1,
                                          kMaxTimeoutMs};
constexpr IntegerRule kTimeoutRule{"STRIPE_TIMEOUT_MS", "milliseconds", 20'000, 1, kMaxTimeoutMs};
constexpr IntegerRule kQueueCapacityRule{"STRIPE_QUEUE_CAPACITY", "", 100'000, 1, 10'000'000};
constexpr IntegerRule kFleetLeaseRule{"STRIPE_FLEET_LEASE_S", "s", 10, 2, 300};

// Delivery engine.
constexpr std::int64_t kDaySeconds = 24LL * 60 * 60;
constexpr IntegerRule kCommitIntervalRule{"STRIPE_COMMIT_INTERVAL_MS", "milliseconds", 50, 1,
                                          10'000};
constexpr IntegerRule kSyncTimeoutRule{"STRIPE_SYNC_TIMEOUT_MS", "milliseconds", 5'000, 1, 600'000};
constexpr IntegerRule kAggregationWindowRule{"STRIPE_AGGREGATION_WINDOW_MS", "milliseconds", 2'000,
                                             0, 3'600'000};
constexpr IntegerRule kMaxBackoffRule{"STRIPE_MAX_BACKOFF_S", "seconds", 300, 1, kDaySeconds};
// Stripe keeps an idempotency key for at least 24 hours and may prune it after that; a retry
// with a pruned key is a new request, so an event must die before its key can be forgotten.
constexpr IntegerRule kMaxDeliveryAgeRule{
    "STRIPE_MAX_DELIVERY_AGE_S",
    "seconds",
    23LL * 60 * 60,
    60,
    kDaySeconds,
    "Stripe may prune idempotency keys after 24 hours, so retrying an older event could bill it "
    "twice"};
constexpr IntegerRule kSenderThreadsRule{"STRIPE_SENDER_THREADS", "", 4, 1, 64};
constexpr IntegerRule kParkRetryRule{"STRIPE_PARK_RETRY_S", "seconds", 60, 1, kDaySeconds};
constexpr IntegerRule kLedgerRetentionRule{"STRIPE_LEDGER_RETENTION_DAYS", "days", 90, 1, 3'650};
constexpr IntegerRule kAuthProbeRule{"STRIPE_AUTH_PROBE_S", "seconds", 30, 1, 3'600};

// Admission.
constexpr IntegerRule kAdmissionMaxOutputRule{"STRIPE_ADMISSION_MAX_OUTPUT", "tokens", 4'096, 1,
                                              10'000'000};
constexpr IntegerRule kAdmissionReserveRule{"STRIPE_ADMISSION_RESERVE", "billed units", 0, 0,
                                            kLargestMaxQuantity};
constexpr IntegerRule kAdmissionWaitRule{"STRIPE_ADMISSION_WAIT_MS", "milliseconds", 250, 0, 5'000};
constexpr IntegerRule kHoldTtlRule{"STRIPE_HOLD_TTL_S", "seconds", 600, 5, kDaySeconds};
constexpr IntegerRule kCreditBalanceTtlRule{"STRIPE_CREDIT_BALANCE_TTL_S", "seconds", 60, 1,
                                            kDaySeconds};
constexpr IntegerRule kWebhookToleranceRule{"STRIPE_WEBHOOK_TOLERANCE_S", "seconds", 300, 1, 3'600};

constexpr double kDefaultTestRateLimit = 25;          // Stripe's test-mode limit is 25 requests/s
constexpr double kDefaultLiveRateLimit = 100;         // and live mode's 100
constexpr double kDefaultLiveMeterRateLimit = 1'000;  // live v1 meter events: their own limit
constexpr double kMaxRateLimit = 10'000;
constexpr const char* kMemoryOutbox = ":memory:";

// Every setting's variable and the Config field it fills, in documentation order (the order of
// config_settings(); ConfigFromEnvTest checks that both name the same variables).
struct SettingField {
  const char* variable;
  std::optional<std::string> Config::*field;
};

constexpr SettingField kSettingFields[] = {
    {"STRIPE_API_KEY", &Config::api_key},
    {"STRIPE_PRESET", &Config::preset},
    {"STRIPE_BILLING_MODE", &Config::billing_mode},
    {"STRIPE_PRICE_ID", &Config::price_id},
    {"STRIPE_CHARGE_BY", &Config::charge_by},
    {"STRIPE_TRUST_REQUEST_USER", &Config::trust_request_user},
    {"STRIPE_API_BASE", &Config::api_base},
    {"STRIPE_API_VERSION", &Config::api_version},
    {"ENVIRONMENT", &Config::environment},
    {"STRIPE_QUANTITY", &Config::quantity},
    {"STRIPE_MAX_QUANTITY", &Config::max_quantity},
    {"STRIPE_PROMPT_PRICE_ID", &Config::prompt_price_id},
    {"STRIPE_COMPLETION_PRICE_ID", &Config::completion_price_id},
    {"STRIPE_COST_MULTIPLIER", &Config::cost_multiplier},
    {"STRIPE_TOKEN_TYPES", &Config::token_types},
    {"STRIPE_TOKEN_TYPE_PRICES", &Config::token_type_prices},
    {"STRIPE_TOKEN_TYPE_METERS", &Config::token_type_meters},
    {"STRIPE_CACHE_HIT", &Config::cache_hit},
    {"STRIPE_SKIP_CALL_TYPES", &Config::skip_call_types},
    {"STRIPE_MODEL_SLUGS", &Config::model_slugs},
    {"STRIPE_MODEL_MAP_FILE", &Config::model_map_file},
    {"STRIPE_PRICE_TABLE", &Config::price_table},
    {"STRIPE_PRICE_MARKUP", &Config::price_markup},
    {"STRIPE_UNPRICED_MODEL", &Config::unpriced_model},
    {"STRIPE_TABLE_RELOAD_S", &Config::table_reload_s},
    {"STRIPE_V2_API_VERSION", &Config::v2_api_version},
    {"STRIPE_METER_EVENT_NAME", &Config::meter_event_name},
    {"STRIPE_PROMPT_METER_EVENT_NAME", &Config::prompt_meter_event_name},
    {"STRIPE_COMPLETION_METER_EVENT_NAME", &Config::completion_meter_event_name},
    {"STRIPE_METER_CUSTOMER_KEY", &Config::meter_customer_key},
    {"STRIPE_METER_VALUE_KEY", &Config::meter_value_key},
    {"STRIPE_METER_TOKEN_TYPE_KEY", &Config::meter_token_type_key},
    {"STRIPE_METER_MODEL_KEY", &Config::meter_model_key},
    {"STRIPE_METER_STREAM_BASE", &Config::meter_stream_base},
    {"STRIPE_METER_RATE_LIMIT", &Config::meter_rate_limit},
    {"STRIPE_CUSTOMER_METADATA_KEY", &Config::customer_metadata_key},
    {"STRIPE_CUSTOMER_MAP", &Config::customer_map},
    {"STRIPE_LOOKUP_CACHE_TTL", &Config::lookup_cache_ttl},
    {"STRIPE_LOOKUP_MISS_TTL", &Config::lookup_miss_ttl},
    {"STRIPE_CONNECT_TIMEOUT_MS", &Config::connect_timeout_ms},
    {"STRIPE_TIMEOUT_MS", &Config::timeout_ms},
    {"STRIPE_QUEUE_CAPACITY", &Config::queue_capacity},
    {"STRIPE_OUTBOX_PATH", &Config::outbox_path},
    {"STRIPE_OUTBOX_URL", &Config::outbox_url},
    {"STRIPE_OUTBOX_SCHEMA", &Config::outbox_schema},
    {"STRIPE_FLEET_LEASE_S", &Config::fleet_lease_s},
    {"STRIPE_DURABILITY", &Config::durability},
    {"STRIPE_COMMIT_INTERVAL_MS", &Config::commit_interval_ms},
    {"STRIPE_SYNC_TIMEOUT_MS", &Config::sync_timeout_ms},
    {"STRIPE_AGGREGATION_WINDOW_MS", &Config::aggregation_window_ms},
    {"STRIPE_MAX_BACKOFF_S", &Config::max_backoff_s},
    {"STRIPE_MAX_DELIVERY_AGE_S", &Config::max_delivery_age_s},
    {"STRIPE_RATE_LIMIT", &Config::rate_limit},
    {"STRIPE_SENDER_THREADS", &Config::sender_threads},
    {"STRIPE_PARK_RETRY_S", &Config::park_retry_s},
    {"STRIPE_LEDGER_RETENTION_DAYS", &Config::ledger_retention_days},
    {"STRIPE_AUTH_PROBE_S", &Config::auth_probe_s},
    {"STRIPE_LOG_FORMAT", &Config::log_format},
    {"STRIPE_ADMISSION", &Config::admission},
    {"STRIPE_BUDGETS", &Config::budgets},
    {"STRIPE_BUDGET_PERIOD", &Config::budget_period},
    {"STRIPE_TOKEN_BUDGETS", &Config::token_budgets},
    {"STRIPE_ADMISSION_MAX_OUTPUT", &Config::admission_max_output},
    {"STRIPE_ADMISSION_UNESTIMABLE", &Config::admission_unestimable},
    {"STRIPE_ADMISSION_RESERVE", &Config::admission_reserve},
    {"STRIPE_ADMISSION_FAIL", &Config::admission_fail},
    {"STRIPE_ADMISSION_WAIT_MS", &Config::admission_wait_ms},
    {"STRIPE_HOLD_TTL_S", &Config::hold_ttl_s},
    {"STRIPE_OVERAGE", &Config::overage},
    {"STRIPE_CREDIT_BALANCE_TTL_S", &Config::credit_balance_ttl_s},
    {"STRIPE_WEBHOOK_SECRET", &Config::webhook_secret},
    {"STRIPE_WEBHOOK_TOLERANCE_S", &Config::webhook_tolerance_s},
};

// ---------------------------------------------------------------------------------------------
// Collecting problems

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

class Problems {
 public:
  explicit Problems(std::string api_key) : api_key_(std::move(api_key)) {}

  void add(std::string problem) {
    for (const std::string& variable : withheld_) {
      if (starts_with(problem, variable + " ")) return;
    }
    lines_.push_back(std::move(problem));
  }
  // Drops every later problem of `variable`: it held a secret, which has been reported once.
  void withhold(std::string variable) { withheld_.push_back(std::move(variable)); }
  bool empty() const { return lines_.empty(); }
  std::size_t size() const { return lines_.size(); }
  // "X is required in mode M": said only when the mode itself is valid, since an unknown mode
  // would otherwise bring requirements of a mode nobody asked for.
  void add_required(std::string problem) {
    if (mode_known_) add(std::move(problem));
  }
  void set_mode_known(bool known) { mode_known_ = known; }

  // A value quoted for a message, at most 80 characters of it. The configured key and anything
  // that looks like a secret key, wherever they are in the value, are shown redacted.
  std::string shown(std::string_view value) const;
  // `text` with the configured key and every secret-looking word redacted.
  std::string scrubbed(std::string_view text) const;

  // Every line is scrubbed once more: no check's wording can let a secret through.
  Error to_error() const {
    std::string message = "invalid Stripe billing configuration (" + std::to_string(lines_.size()) +
                          (lines_.size() == 1 ? " problem):" : " problems):");
    for (const std::string& line : lines_) message += "\n- " + scrubbed(line);
    return Error{ErrorCode::kInvalidConfig, std::move(message), std::nullopt};
  }

 private:
  std::string api_key_;
  std::vector<std::string> lines_;
  std::vector<std::string> withheld_;
  bool mode_known_ = true;
};

bool looks_like_secret_key(std::string_view value) {
  return starts_with(value, "sk_") || starts_with(value, "rk_");
}

bool contains_configured_key(std::string_view value, const std::string& api_key) {
  return api_key.size() >= kMinKeyLengthToFind && value.find(api_key) != std::string_view::npos;
}

std::string Problems::scrubbed(std::string_view text) const {
  std::string out(text);
  if (contains_configured_key(out, api_key_)) {
    const std::string redacted = Secret::redact_key(api_key_);
    for (std::size_t at = out.find(api_key_); at != std::string::npos;
         at = out.find(api_key_, at + redacted.size())) {
      out.replace(at, api_key_.size(), redacted);
    }
  }
  return Secret::redact_secrets_in(out);
}

std::string Problems::shown(std::string_view raw) const {
  if (looks_like_secret_key(raw)) return "\"" + Secret::redact_key(raw) + "\" (redacted)";
  const std::string value = scrubbed(raw);
  const std::string suffix = value == raw ? "" : " (redacted)";
  // Cut at a character boundary, so a redacted form's '…' is never split.
  std::size_t shown_length = std::min(value.size(), kMaxShownValueLength);
  while (shown_length > 0 && shown_length < value.size() &&
         (static_cast<unsigned char>(value[shown_length]) & 0xC0) == 0x80) {
    --shown_length;
  }
  std::string out = "\"";
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (i == shown_length) {
      out += "\xE2\x80\xA6";
      break;
    }
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"" + suffix;
}

// ---------------------------------------------------------------------------------------------
// Small text helpers

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
}

bool all_word_chars(std::string_view text) {
  for (char c : text) {
    if (!is_word_char(c)) return false;
  }
  return true;
}

// `prefix` followed by at least one of [A-Za-z0-9_].
bool is_prefixed_id(std::string_view text, std::string_view prefix) {
  return starts_with(text, prefix) && text.size() > prefix.size() &&
         all_word_chars(text.substr(prefix.size()));
}

std::string to_lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

bool value_set(const std::optional<std::string>& value) { return value && !value->empty(); }

// ---------------------------------------------------------------------------------------------
// The API key

constexpr std::string_view kSecretKeyPrefixes[] = {"sk_test_", "sk_live_", "rk_test_", "rk_live_"};

std::string describe_byte(char c) {
  const unsigned char byte = static_cast<unsigned char>(c);
  switch (byte) {
    case ' ':
      return "a space";
    case '\t':
      return "a tab";
    case '\n':
      return "a newline";
    case '\r':
      return "a carriage return";
    default:
      break;
  }
  if (byte < 0x20 || byte == 0x7f) return "a control character";
  if (byte >= 0x80) return "a non-ASCII byte";
  return std::string("the character '") + c + "'";
}

struct KeyCheck {
  Secret key;
  bool live = false;
};

KeyCheck check_api_key(Problems& problems, const std::optional<std::string>& raw,
                       const std::optional<std::string>& environment) {
  if (!value_set(raw)) {
    problems.add(
        "STRIPE_API_KEY is required: a secret key (sk_test_…, sk_live_…) or a restricted key "
        "(rk_test_…, rk_live_…)");
    return {};
  }
  const std::string& key = *raw;
  const std::string redacted = Secret::redact_key(key);
  if (starts_with(key, "pk_test_") || starts_with(key, "pk_live_")) {
    problems.add("STRIPE_API_KEY (" + redacted +
                 ") is a publishable key: it cannot be used server-side; use a secret key "
                 "(sk_…) or a restricted key (rk_…)");
    return {};
  }
  KeyCheck result{Secret(key), starts_with(key, "sk_live_") || starts_with(key, "rk_live_")};
  bool shape_ok = true;
  for (std::size_t i = 0; i < key.size(); ++i) {
    if (!is_word_char(key[i])) {
      problems.add("STRIPE_API_KEY (" + redacted + ") contains " + describe_byte(key[i]) +
                   " at character " + std::to_string(i + 1) + " of " + std::to_string(key.size()) +
                   "; a Stripe key has only letters, digits and '_' (was whitespace or a quote "
                   "copied with it?)");
      shape_ok = false;
      break;
    }
  }
  if (shape_ok) {
    bool prefixed = false;
    for (std::string_view prefix : kSecretKeyPrefixes) {
      if (starts_with(key, prefix)) {
        prefixed = true;
        if (key.size() == prefix.size()) {
          problems.add("STRIPE_API_KEY has nothing after its prefix " + std::string(prefix));
        }
      }
    }
    if (!prefixed) {
      problems.add("STRIPE_API_KEY (" + redacted +
                   ") is not a Stripe secret or restricted key: it must start with sk_test_, "
                   "sk_live_, rk_test_ or rk_live_");
    }
  }
  if (result.live && environment.value_or("") != kProductionEnvironment) {
    const std::string actual =
        value_set(environment) ? "is " + problems.shown(*environment)
                               : std::string("is unset (default \"") + kDefaultEnvironment + "\")";
    problems.add("STRIPE_API_KEY (" + redacted + ") is a live-mode key but ENVIRONMENT " + actual +
                 "; live keys are accepted only with ENVIRONMENT=production");
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Secrets in other settings

// A setting other than the API key that holds the configured key or anything that looks like a
// secret key is reported once, redacted, and then treated as unset: no later check quotes it, and
// nothing that logs the configuration (the summary) ever sees it.
Config without_secrets(Problems& problems, const Config& config) {
  Config out = config;
  const std::string api_key = config.api_key.value_or("");
  for (const SettingField& setting : kSettingFields) {
    std::optional<std::string>& value = out.*setting.field;
    // The webhook secret is a secret by design, handled like the key (checked below).
    if (setting.field == &Config::api_key || setting.field == &Config::webhook_secret ||
        !value_set(value)) {
      continue;
    }
    std::string redacted;
    if (contains_configured_key(*value, api_key)) {
      redacted = Secret::redact_key(api_key);
    } else if (const auto span = Secret::find_secret_in(*value)) {
      redacted = Secret::redact_key(std::string_view(*value).substr(span->position, span->length));
    } else {
      continue;
    }
    problems.add(std::string(setting.variable) + " holds what looks like a secret key (" +
                 redacted +
                 "); a secret key belongs in STRIPE_API_KEY only, and a setting that holds one is "
                 "neither used nor logged");
    problems.withhold(setting.variable);
    value.reset();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Choices

template <typename Enum, std::size_t N>
Enum check_choice(Problems& problems, const char* variable, const std::optional<std::string>& raw,
                  const std::pair<const char*, Enum> (&choices)[N]) {
  if (!value_set(raw)) return choices[0].second;
  for (const auto& [name, value] : choices) {
    if (*raw == name) return value;
  }
  std::string names;
  for (const auto& choice : choices) names += std::string(names.empty() ? "" : ", ") + choice.first;
  problems.add(std::string(variable) + " must be one of " + names + "; got " +
               problems.shown(*raw));
  return choices[0].second;
}

constexpr std::pair<const char*, ChargeBy> kChargeByChoices[] = {
    {"end_user_id", ChargeBy::kEndUserId},
    {"user_id", ChargeBy::kUserId},
    {"team_id", ChargeBy::kTeamId},
};

constexpr std::pair<const char*, RequestUserTrust> kRequestUserTrustChoices[] = {
    {"off", RequestUserTrust::kOff},
    {"lookup", RequestUserTrust::kLookup},
    {"customer_id", RequestUserTrust::kCustomerId},
};

constexpr std::pair<const char*, QuantitySource> kQuantityChoices[] = {
    {"total_tokens", QuantitySource::kTotalTokens},
    {"prompt_tokens", QuantitySource::kPromptTokens},
    {"completion_tokens", QuantitySource::kCompletionTokens},
    {"split", QuantitySource::kSplit},
    {"cost", QuantitySource::kCost},
    {"token_types", QuantitySource::kTokenTypes},
    {"priced", QuantitySource::kPriced},
};

constexpr std::pair<const char*, Preset> kPresetChoices[] = {
    {"none", Preset::kNone},
    {"token_billing", Preset::kTokenBilling},
};

constexpr std::pair<const char*, CacheHitPolicy> kCacheHitChoices[] = {
    {"bill", CacheHitPolicy::kBill},
    {"skip", CacheHitPolicy::kSkip},
    {"token_type", CacheHitPolicy::kTokenType},
};

constexpr std::pair<const char*, bool> kOnOffChoices[] = {{"off", false}, {"on", true}};

constexpr std::pair<const char*, UnpricedPolicy> kUnpricedChoices[] = {
    {"token_types", UnpricedPolicy::kTokenTypes},
    {"reject", UnpricedPolicy::kReject},
};

constexpr std::pair<const char*, BillingMode> kBillingModeChoices[] = {
    {"usage_records", BillingMode::kUsageRecords},
    {"meter_events", BillingMode::kMeterEvents},
    {"meter_event_stream", BillingMode::kMeterEventStream},
    {"dual", BillingMode::kDual},
    {"meter_events_v2", BillingMode::kMeterEventsV2},
};

// The first is the default: a billing library loses nothing unless told otherwise.
constexpr std::pair<const char*, Durability> kDurabilityChoices[] = {
    {"sync", Durability::kSync},
    {"async", Durability::kAsync},
};

constexpr std::pair<const char*, LogFormat> kLogFormatChoices[] = {
    {"text", LogFormat::kText},
    {"json", LogFormat::kJson},
};

constexpr std::pair<const char*, AdmissionMode> kAdmissionChoices[] = {
    {"off", AdmissionMode::kOff},
    {"static", AdmissionMode::kStatic},
    {"credits", AdmissionMode::kCredits},
};
constexpr std::pair<const char*, BudgetPeriod> kBudgetPeriodChoices[] = {
    {"month", BudgetPeriod::kMonth},
    {"day", BudgetPeriod::kDay},
};
constexpr std::pair<const char*, UnestimablePolicy> kUnestimableChoices[] = {
    {"reject", UnestimablePolicy::kReject},
    {"allow", UnestimablePolicy::kAllow},
    {"reserve", UnestimablePolicy::kReserve},
};
constexpr std::pair<const char*, bool> kFailChoices[] = {{"closed", false}, {"open", true}};
constexpr std::pair<const char*, bool> kOverageChoices[] = {{"refuse", false}, {"allow", true}};

// ---------------------------------------------------------------------------------------------
// Numbers

// nullopt when the value is present but not a whole number in range (the problem is recorded).
std::optional<std::int64_t> check_integer(Problems& problems, const IntegerRule& rule,
                                          const std::optional<std::string>& raw) {
  if (!value_set(raw)) return rule.default_value;
  const std::string& text = *raw;
  const std::string unit = *rule.unit ? std::string(" (") + rule.unit + ")" : std::string();
  bool digits_only = true;
  for (char c : text) digits_only = digits_only && is_digit(c);
  if (!digits_only) {
    problems.add(std::string(rule.variable) + " must be a whole number" + unit +
                 " written with decimal digits only; got " + problems.shown(text));
    return std::nullopt;
  }
  std::uint64_t value = 0;
  bool overflow = false;
  for (char c : text) {
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) {
      overflow = true;
      break;
    }
    value = value * 10 + digit;
  }
  const bool too_big = overflow || value > static_cast<std::uint64_t>(rule.max);
  if (too_big || value < static_cast<std::uint64_t>(rule.min)) {
    problems.add(std::string(rule.variable) + " must be from " + std::to_string(rule.min) + " to " +
                 std::to_string(rule.max) + unit + "; got " + problems.shown(text) +
                 (too_big && rule.above_max_reason != nullptr
                      ? std::string(": ") + rule.above_max_reason
                      : std::string()));
    return std::nullopt;
  }
  return static_cast<std::int64_t>(value);
}

struct DecimalRule {
  const char* variable;
  const char* what;      // "a number of requests per second"
  const char* examples;  // "25 or 12.5"
  double max;
  const char* range;  // "(requests per second, over all Stripe requests)"
};

constexpr DecimalRule kRateLimitRule{"STRIPE_RATE_LIMIT", "a number of requests per second",
                                     "25 or 12.5", kMaxRateLimit,
                                     "(requests per second, over all Stripe requests)"};
constexpr DecimalRule kMeterRateLimitRule{
    "STRIPE_METER_RATE_LIMIT", "a number of requests per second", "1000 or 12.5", kMaxRateLimit,
    "(meter event and stream requests per second)"};
constexpr DecimalRule kCostMultiplierRule{
    "STRIPE_COST_MULTIPLIER", "a number of billed units per 1.0 of response_cost", "100 or 0.5",
    1'000'000, "(100 bills cents of a USD response_cost)"};

// Decimal digits with an optional fraction ("25", "12.5", "0.5"), read without the C library so
// that the host's locale cannot change the decimal point. nullopt when the value is present but
// not accepted (the problem is recorded); the default when unset.
std::optional<double> check_decimal(Problems& problems, const DecimalRule& rule,
                                    const std::optional<std::string>& raw, double default_value) {
  if (!value_set(raw)) return default_value;
  const std::string& text = *raw;
  const std::size_t point = text.find('.');
  const std::string_view whole = std::string_view(text).substr(0, point);
  const std::string_view fraction =
      point == std::string::npos ? std::string_view() : std::string_view(text).substr(point + 1);
  bool shape_ok = !whole.empty() && (point == std::string::npos || !fraction.empty());
  for (char c : whole) shape_ok = shape_ok && is_digit(c);
  for (char c : fraction) shape_ok = shape_ok && is_digit(c);
  if (!shape_ok) {
    problems.add(std::string(rule.variable) + " must be " + rule.what +
                 " written with decimal digits and an optional fraction, such as " + rule.examples +
                 "; got " + problems.shown(text));
    return std::nullopt;
  }
  double value = 0;
  for (char c : whole) {
    value = value * 10 + (c - '0');
    if (value > rule.max) break;  // out of range already; stop before it grows unbounded
  }
  double scale = 1;
  for (char c : fraction) {
    scale /= 10;
    value += (c - '0') * scale;
  }
  if (!(value > 0) || value > rule.max) {
    std::ostringstream max;
    max.imbue(std::locale::classic());
    max << std::fixed << std::setprecision(0) << rule.max;
    problems.add(std::string(rule.variable) + " must be more than 0 and at most " + max.str() +
                 " " + rule.range + "; got " + problems.shown(text));
    return std::nullopt;
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// The outbox path

// Checks the path without creating or opening anything: it must name a file (or be :memory:)
// in a directory that exists.
std::string check_outbox_path(Problems& problems, const std::optional<std::string>& raw) {
  if (!value_set(raw)) return kDefaultOutboxPath;
  const std::string& path = *raw;
  constexpr const char* kVar = "STRIPE_OUTBOX_PATH";
  if (const std::size_t nul = path.find('\0'); nul != std::string::npos) {
    problems.add(std::string(kVar) + " contains a NUL byte at character " +
                 std::to_string(nul + 1) + " of " + std::to_string(path.size()) +
                 "; it must be a file path or :memory:");
    return {};
  }
  if (path == kMemoryOutbox) return path;
  if (path.back() == '/') {
    problems.add(std::string(kVar) + " must name a file, not a directory; got " +
                 problems.shown(path));
    return {};
  }
  const std::size_t slash = path.rfind('/');
  const std::string directory = slash == std::string::npos ? std::string(".")
                                : slash == 0               ? "/"
                                                           : path.substr(0, slash);
  struct stat info {};
  if (::stat(directory.c_str(), &info) != 0) {
    const std::string reason = std::error_code(errno, std::generic_category()).message();
    problems.add(std::string(kVar) + " " + problems.shown(path) + ": its directory " +
                 problems.shown(directory) + " cannot be used (" + reason +
                 "); the directory must exist (the library creates the file, not the directory)");
    return {};
  }
  if (!S_ISDIR(info.st_mode)) {
    problems.add(std::string(kVar) + " " + problems.shown(path) + ": " + problems.shown(directory) +
                 " is not a directory");
    return {};
  }
  if (::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) {
    problems.add(std::string(kVar) + " must name a file, not a directory; got " +
                 problems.shown(path));
    return {};
  }
  return path;
}

// The PostgreSQL store: a libpq connection string that is never shown with its password.
void check_outbox_url(Problems& problems, const std::optional<std::string>& raw, Secret& url,
                      std::string& redacted) {
  if (!value_set(raw)) return;
  constexpr const char* kVar = "STRIPE_OUTBOX_URL";
  if (raw->find('\0') != std::string::npos) {
    problems.add(std::string(kVar) + " contains a NUL byte");
    return;
  }
  PgConninfoCheck check = check_pg_conninfo(*raw);
  for (const std::string& problem : check.problems) {
    problems.add(std::string(kVar) + (check.redacted.empty() ? "" : " " + check.redacted) + " " +
                 problem);
  }
  if (!check.problems.empty()) return;
  url = Secret(*raw);
  redacted = std::move(check.redacted);
}

// A PostgreSQL schema the library creates and owns: a plain lowercase identifier, so it is never
// quoted wrongly and several gateways can share one database under their own names.
std::string check_outbox_schema(Problems& problems, const std::optional<std::string>& raw) {
  if (!value_set(raw)) return kDefaultOutboxSchema;
  const std::string& name = *raw;
  bool valid = !name.empty() && name.size() <= 63 && !(name[0] >= '0' && name[0] <= '9');
  for (char c : name) {
    valid = valid && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
  }
  if (!valid || starts_with(name, "pg_")) {
    problems.add(
        "STRIPE_OUTBOX_SCHEMA must be 1-63 characters of a-z, 0-9 and _, not starting "
        "with a digit or pg_; got " +
        problems.shown(name));
    return {};
  }
  return name;
}

// ---------------------------------------------------------------------------------------------
// The API base URL

bool is_valid_host(std::string_view host) {
  if (host.empty()) return false;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return false;
    for (char c : host.substr(1, host.size() - 2)) {
      const bool hex = is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
      if (!hex && c != ':' && c != '.') return false;
    }
    return true;
  }
  for (char c : host) {
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!letter && !is_digit(c) && c != '.' && c != '-') return false;
  }
  return true;
}

bool is_valid_port(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  int value = 0;
  for (char c : port) {
    if (!is_digit(c)) return false;
    value = value * 10 + (c - '0');
  }
  return value >= 1 && value <= 65535;
}

// An https URL (plain http for loopback only) of `variable`; `fallback` when unset.
std::string check_base_url(Problems& problems, const char* kVar, const char* fallback,
                           const std::optional<std::string>& raw) {
  if (!value_set(raw)) return fallback;
  const std::string& url = *raw;
  const std::string example = std::string(" such as ") + fallback;
  for (char c : url) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= ' ' || byte >= 0x7f) {
      problems.add(std::string(kVar) + " contains " + describe_byte(c) + "; it must be a URL" +
                   example);
      return {};
    }
  }
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) {
    problems.add(std::string(kVar) + " must be an absolute URL" + example + "; got " +
                 problems.shown(url));
    return {};
  }
  const std::string scheme = to_lower(std::string_view(url).substr(0, scheme_end));
  const std::size_t authority_begin = scheme_end + 3;
  const std::size_t authority_end = url.find_first_of("/?#", authority_begin);
  const std::string_view authority = std::string_view(url).substr(
      authority_begin,
      authority_end == std::string::npos ? std::string::npos : authority_end - authority_begin);
  if (authority.find('@') != std::string_view::npos) {
    // Never echoed: the part before '@' may hold a password.
    problems.add(std::string(kVar) +
                 " must not contain a user name or password (user@host); Stripe authenticates "
                 "with STRIPE_API_KEY");
    return {};
  }
  bool ok = true;
  if (scheme != "https" && scheme != "http") {
    problems.add(std::string(kVar) + " must be an https:// URL; got " + problems.shown(url));
    ok = false;
  }
  std::string_view host = authority;
  std::string_view port;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close != std::string_view::npos) {
      host = authority.substr(0, close + 1);
      std::string_view rest = authority.substr(close + 1);
      if (!rest.empty()) {
        has_port = rest.front() == ':';
        port = has_port ? rest.substr(1) : rest;
        if (!has_port) host = authority;  // junk after ']': reported as an invalid host
      }
    }
  } else if (const std::size_t colon = authority.find(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    has_port = true;
  }
  if (!is_valid_host(host)) {
    problems.add(std::string(kVar) + " must name a host, as in " + fallback + "; got " +
                 problems.shown(url));
    ok = false;
  } else if (has_port && !is_valid_port(port)) {
    problems.add(std::string(kVar) + " has an invalid port (1 to 65535); got " +
                 problems.shown(url));
    ok = false;
  } else if (scheme == "http" && !is_loopback_url(url)) {
    problems.add(std::string(kVar) +
                 " must use https; plain http is allowed only for 127.0.0.1, localhost or "
                 "[::1]; got " +
                 problems.shown(url));
    ok = false;
  }
  if (authority_end != std::string::npos &&
      url.find_first_of("?#", authority_end) != std::string::npos) {
    problems.add(std::string(kVar) + " must not contain a query (?) or a fragment (#); got " +
                 problems.shown(url));
    ok = false;
  }
  if (!ok) return {};
  std::string normalized = scheme + url.substr(scheme_end);
  while (!normalized.empty() && normalized.back() == '/') normalized.pop_back();
  return normalized;
}

// ---------------------------------------------------------------------------------------------
// The API version

bool is_version_shape(std::string_view version) {
  if (version.size() < 10) return false;
  constexpr std::size_t kDigitPositions[] = {0, 1, 2, 3, 5, 6, 8, 9};
  for (std::size_t i : kDigitPositions) {
    if (!is_digit(version[i])) return false;
  }
  if (version[4] != '-' || version[7] != '-') return false;
  const int month = (version[5] - '0') * 10 + (version[6] - '0');
  const int day = (version[8] - '0') * 10 + (version[9] - '0');
  if (month < 1 || month > 12 || day < 1 || day > 31) return false;
  if (version.size() == 10) return true;
  if (version[10] != '.' || version.size() == 11) return false;
  for (char c : version.substr(11)) {
    if (!((c >= 'a' && c <= 'z') || is_digit(c) || c == '_')) return false;
  }
  return true;
}

// `usage_records`: the mode sends usage records, which API 2025-03-31.basil removed.
std::string check_api_version(Problems& problems, const std::optional<std::string>& raw,
                              bool usage_records) {
  if (!value_set(raw)) return kDefaultApiVersion;
  const std::string& version = *raw;
  if (!is_version_shape(version)) {
    problems.add("STRIPE_API_VERSION must look like YYYY-MM-DD or YYYY-MM-DD.name (e.g. " +
                 std::string(kDefaultApiVersion) + "); got " + problems.shown(version));
    return {};
  }
  if (usage_records &&
      std::string_view(version).substr(0, 10) >= kFirstVersionWithoutUsageRecords) {
    problems.add("STRIPE_API_VERSION " + problems.shown(version) +
                 " is too new for usage records: API version 2025-03-31.basil removed usage "
                 "records and legacy metered prices; pin " +
                 std::string(kDefaultApiVersion) + " or older");
    return {};
  }
  return version;
}

// ---------------------------------------------------------------------------------------------
// Ids, metadata key, static customer map

std::string in_mode(BillingMode mode) {
  return std::string(" in STRIPE_BILLING_MODE=") + to_string(mode);
}

// A price id; `required` names what it bills (empty: optional, checked only when set).
std::string check_price_id(Problems& problems, const char* variable,
                           const std::optional<std::string>& raw, BillingMode mode,
                           const std::string& required) {
  if (!value_set(raw)) {
    if (!required.empty()) {
      problems.add_required(std::string(variable) + " is required" + in_mode(mode) +
                            ": the id of the metered price (price_…) " + required);
    }
    return {};
  }
  if (!is_prefixed_id(*raw, "price_")) {
    problems.add(std::string(variable) +
                 " must be price_ followed by letters, digits or '_'; got " + problems.shown(*raw));
    return {};
  }
  return *raw;
}

// A meter's event name: 1 to 100 of [A-Za-z0-9_.:-] (Stripe's limit is 100 characters).
std::string check_event_name(Problems& problems, const char* variable,
                             const std::optional<std::string>& raw, BillingMode mode,
                             const std::string& required) {
  if (!value_set(raw)) {
    if (!required.empty()) {
      problems.add_required(std::string(variable) + " is required" + in_mode(mode) +
                            ": the event_name of the billing meter " + required);
    }
    return {};
  }
  bool ok = raw->size() <= 100;
  for (char c : *raw) ok = ok && (is_word_char(c) || c == '.' || c == ':' || c == '-');
  if (!ok) {
    problems.add(std::string(variable) +
                 " must be 1 to 100 letters, digits, '_', '.', ':' or '-'; got " +
                 problems.shown(*raw));
    return {};
  }
  return *raw;
}

// A meter payload key: 1 to 100 of [A-Za-z0-9_].
std::string check_payload_key(Problems& problems, const char* variable,
                              const std::optional<std::string>& raw, const char* fallback) {
  if (!value_set(raw)) return fallback;
  if (raw->size() > 100 || !all_word_chars(*raw)) {
    problems.add(std::string(variable) + " must be 1 to 100 letters, digits or '_'; got " +
                 problems.shown(*raw));
    return {};
  }
  return *raw;
}

// ---------------------------------------------------------------------------------------------
// Token types and the token-billing preset

// The preset fills what Stripe's token billing expects; a setting given another value is a
// problem (the preset would no longer be what Stripe's rate card reads).
void apply_preset(Problems& problems, Config& config, Preset preset) {
  if (preset != Preset::kTokenBilling) return;
  const auto require = [&](const char* variable, std::optional<std::string>& field,
                           const std::string& value, std::vector<std::string> allowed = {}) {
    if (!value_set(field)) {
      field = value;
      return;
    }
    if (*field == value) return;
    for (const std::string& other : allowed) {
      if (*field == other) return;
    }
    std::string choices = value;
    for (const std::string& other : allowed) choices += " or " + other;
    problems.add(std::string(variable) + " must be " + choices +
                 " with STRIPE_PRESET=token_billing (Stripe's token billing reads it); got " +
                 problems.shown(*field));
  };
  require("STRIPE_BILLING_MODE", config.billing_mode, "meter_events_v2", {"meter_event_stream"});
  require("STRIPE_QUANTITY", config.quantity, "token_types");
  require("STRIPE_METER_EVENT_NAME", config.meter_event_name, kTokenBillingEventName);
  require("STRIPE_METER_CUSTOMER_KEY", config.meter_customer_key, kDefaultMeterCustomerKey);
  require("STRIPE_METER_VALUE_KEY", config.meter_value_key, kDefaultMeterValueKey);
  require("STRIPE_METER_TOKEN_TYPE_KEY", config.meter_token_type_key, kDefaultMeterTokenTypeKey);
  require("STRIPE_METER_MODEL_KEY", config.meter_model_key, kTokenBillingModelKey);
  require("STRIPE_MODEL_SLUGS", config.model_slugs, "on");
  if (value_set(config.token_type_meters)) {
    problems.add(
        "STRIPE_TOKEN_TYPE_METERS cannot be used with STRIPE_PRESET=token_billing: Stripe's "
        "token billing counts every type on one meter, " +
        std::string(kTokenBillingEventName));
  }
  if (value_set(config.cache_hit) && *config.cache_hit == "token_type") {
    problems.add(
        "STRIPE_CACHE_HIT=token_type cannot be used with STRIPE_PRESET=token_billing: Stripe's "
        "token billing knows only the types input, output, cached_input, cache_read and "
        "cache_write (use bill or skip)");
  }
}

// The names a token-type setting may use: the billable types, and cache_hit.
std::optional<std::string> token_dimension_name(std::string_view name) {
  if (token_type_from_string(name)) return std::string(name);
  if (name == "cache_hit") return std::string(name);
  return std::nullopt;
}

std::string token_dimension_names() {
  std::string names;
  for (TokenType type : kAllTokenTypes) names += std::string(to_string(type)) + ", ";
  return names + "cache_hit";
}

// "input=price_1,output=price_2": type -> target, every entry checked.
std::map<std::string, std::string> check_type_map(Problems& problems, const char* variable,
                                                  const std::optional<std::string>& raw,
                                                  bool prices, BillingMode mode) {
  std::map<std::string, std::string> map;
  if (!value_set(raw)) return map;
  std::string_view rest = *raw;
  for (int index = 1;; ++index) {
    const std::size_t comma = rest.find(',');
    const std::string_view entry = trim(rest.substr(0, comma));
    const std::size_t equals = entry.find('=');
    const std::string label = std::string(variable) + " entry " + std::to_string(index);
    if (equals == std::string_view::npos) {
      problems.add(label + " " + problems.shown(entry) +
                   " must be type=" + (prices ? "price_…" : "event_name"));
    } else {
      const std::string_view type = trim(entry.substr(0, equals));
      const std::optional<std::string> target(std::string(trim(entry.substr(equals + 1))));
      const auto name = token_dimension_name(type);
      if (!name) {
        problems.add(label + " names " + problems.shown(type) + ", not a token type (" +
                     token_dimension_names() + ")");
      } else if (map.count(*name) != 0) {
        problems.add(std::string(variable) + " names " + *name + " more than once");
      } else {
        const std::string what = std::string(variable) + "[" + *name + "]";
        const std::string checked =
            prices ? check_price_id(problems, what.c_str(), target, mode, "")
                   : check_event_name(problems, what.c_str(), target, mode, "");
        if (!checked.empty()) map[*name] = checked;
      }
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return map;
}

// STRIPE_TOKEN_TYPES: the types that have a target; default all five.
std::vector<std::string> check_token_types(Problems& problems,
                                           const std::optional<std::string>& raw) {
  std::vector<std::string> types;
  if (!value_set(raw)) {
    for (TokenType type : kAllTokenTypes) types.emplace_back(to_string(type));
    return types;
  }
  std::string_view rest = *raw;
  for (;;) {
    const std::size_t comma = rest.find(',');
    const std::string_view name = trim(rest.substr(0, comma));
    if (!token_type_from_string(name)) {
      problems.add("STRIPE_TOKEN_TYPES names " + problems.shown(name) +
                   ", not a token type (input, output, cached_input, cache_read, cache_write)");
    } else if (std::find(types.begin(), types.end(), name) == types.end()) {
      types.emplace_back(name);
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  for (const char* needed : {"input", "output"}) {
    if (std::find(types.begin(), types.end(), needed) == types.end()) {
      problems.add(std::string("STRIPE_TOKEN_TYPES must include ") + needed +
                   " (every call has it)");
    }
  }
  return types;
}

// One dimension per token type (and cache_hit when it bills as its own type), each with its
// price (STRIPE_TOKEN_TYPE_PRICES) or meter (STRIPE_TOKEN_TYPE_METERS, or one
// STRIPE_METER_EVENT_NAME with the type in STRIPE_METER_TOKEN_TYPE_KEY). `one_meter` is the
// shared meter ("" when types have meters of their own or the cost uses it).
std::vector<BilledDimension> token_type_dimensions(Problems& problems, const Config& config,
                                                   BillingMode mode, bool cache_hit_type,
                                                   const std::string& one_meter,
                                                   const std::string& why) {
  const bool records = mode == BillingMode::kUsageRecords || mode == BillingMode::kDual;
  const bool meters = mode != BillingMode::kUsageRecords;
  std::vector<std::string> names = check_token_types(problems, config.token_types);
  if (cache_hit_type) names.emplace_back("cache_hit");
  const auto prices =
      check_type_map(problems, "STRIPE_TOKEN_TYPE_PRICES", config.token_type_prices, true, mode);
  const auto own_meters =
      check_type_map(problems, "STRIPE_TOKEN_TYPE_METERS", config.token_type_meters, false, mode);
  std::vector<BilledDimension> dimensions;
  std::set<std::string> seen_prices;
  for (const std::string& name : names) {
    BilledDimension dimension{name, QuantitySource::kTokenTypes, {}, {}, {}};
    if (records) {
      auto it = prices.find(name);
      if (it == prices.end()) {
        problems.add_required("STRIPE_TOKEN_TYPE_PRICES has no price for " + name + in_mode(mode) +
                              " " + why + ": add " + name + "=price_…");
      } else {
        dimension.price_id = it->second;
        if (!seen_prices.insert(it->second).second) {
          problems.add("STRIPE_TOKEN_TYPE_PRICES bills " + it->second +
                       " for two types; each type needs its own price (its own subscription "
                       "item)");
        }
      }
    }
    if (meters) {
      auto it = own_meters.find(name);
      if (it != own_meters.end()) {
        dimension.meter_event_name = it->second;
      } else if (own_meters.empty() && !one_meter.empty()) {
        dimension.meter_event_name = one_meter;
        dimension.token_type = name;
      } else {
        problems.add_required("STRIPE_TOKEN_TYPE_METERS has no meter for " + name + in_mode(mode) +
                              " " + why + ": add " + name + "=<event_name>" +
                              (one_meter.empty() && own_meters.empty()
                                   ? ", or set STRIPE_METER_EVENT_NAME to count every type on "
                                     "one meter"
                                   : ""));
      }
    }
    dimensions.push_back(std::move(dimension));
  }
  for (const auto* map : {&prices, &own_meters}) {
    for (const auto& [name, target] : *map) {
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        problems.add((map == &prices ? std::string("STRIPE_TOKEN_TYPE_PRICES")
                                     : std::string("STRIPE_TOKEN_TYPE_METERS")) +
                     " names " + name +
                     ", which STRIPE_TOKEN_TYPES (or STRIPE_CACHE_HIT) does "
                     "not bill");
      }
    }
  }
  return dimensions;
}

// What each call bills: one dimension, or prompt and completion for split, each with the price
// (usage records) and the meter (meters) that bill it.
std::vector<BilledDimension> check_dimensions(Problems& problems, const Config& config,
                                              BillingMode mode, QuantitySource quantity,
                                              CacheHitPolicy cache_hit, UnpricedPolicy unpriced) {
  const bool records = mode == BillingMode::kUsageRecords || mode == BillingMode::kDual;
  const bool meters = mode != BillingMode::kUsageRecords;
  const bool split = quantity == QuantitySource::kSplit;
  const bool by_type = quantity == QuantitySource::kTokenTypes;
  const bool priced = quantity == QuantitySource::kPriced;
  if (cache_hit == CacheHitPolicy::kTokenType && !by_type &&
      !(priced && unpriced == UnpricedPolicy::kTokenTypes)) {
    problems.add(
        "STRIPE_CACHE_HIT=token_type needs STRIPE_QUANTITY=token_types (cache hits then "
        "bill as the type cache_hit)");
  }
  if (!by_type && !priced) {
    for (const auto& [variable, field] :
         {std::pair{"STRIPE_TOKEN_TYPES", &config.token_types},
          std::pair{"STRIPE_TOKEN_TYPE_PRICES", &config.token_type_prices},
          std::pair{"STRIPE_TOKEN_TYPE_METERS", &config.token_type_meters}}) {
      if (value_set(*field)) {
        problems.add(std::string(variable) +
                     " is set but only STRIPE_QUANTITY=token_types or priced bills token types");
      }
    }
  }
  if (by_type || priced) {
    check_price_id(problems, "STRIPE_PROMPT_PRICE_ID", config.prompt_price_id, mode, "");
    check_price_id(problems, "STRIPE_COMPLETION_PRICE_ID", config.completion_price_id, mode, "");
    check_event_name(problems, "STRIPE_PROMPT_METER_EVENT_NAME", config.prompt_meter_event_name,
                     mode, "");
    check_event_name(problems, "STRIPE_COMPLETION_METER_EVENT_NAME",
                     config.completion_meter_event_name, mode, "");
    const std::string price = check_price_id(
        problems, "STRIPE_PRICE_ID", config.price_id, mode,
        records && priced ? "to bill the priced amount (STRIPE_QUANTITY=priced)" : "");
    const std::string meter = check_event_name(
        problems, "STRIPE_METER_EVENT_NAME", config.meter_event_name, mode,
        meters && priced ? "to bill the priced amount (STRIPE_QUANTITY=priced)" : "");
    if (by_type) {
      return token_type_dimensions(problems, config, mode, cache_hit == CacheHitPolicy::kTokenType,
                                   meter, "(STRIPE_QUANTITY=token_types)");
    }
    std::vector<BilledDimension> dimensions;
    dimensions.push_back(
        {"priced", QuantitySource::kPriced, records ? price : "", meters ? meter : "", {}});
    if (!value_set(config.price_table)) {
      problems.add_required(
          "STRIPE_PRICE_TABLE is required with STRIPE_QUANTITY=priced: the file of prices per "
          "model and token type (docs/token-types.md)");
    }
    if (unpriced == UnpricedPolicy::kTokenTypes) {
      for (BilledDimension& dimension : token_type_dimensions(
               problems, config, mode, cache_hit == CacheHitPolicy::kTokenType, "",
               "(a call without a price bills by token type: STRIPE_UNPRICED_MODEL=token_types)")) {
        dimensions.push_back(std::move(dimension));
      }
    }
    return dimensions;
  }
  std::vector<BilledDimension> dimensions;
  if (split) {
    dimensions.push_back({"prompt_tokens", QuantitySource::kPromptTokens, {}, {}, {}});
    dimensions.push_back({"completion_tokens", QuantitySource::kCompletionTokens, {}, {}, {}});
  } else {
    dimensions.push_back({to_string(quantity), quantity, {}, {}, {}});
  }
  const std::string price = check_price_id(problems, "STRIPE_PRICE_ID", config.price_id, mode,
                                           records && !split ? "to bill" : "");
  const std::string meter =
      check_event_name(problems, "STRIPE_METER_EVENT_NAME", config.meter_event_name, mode,
                       meters && !split ? "to bill" : "");
  if (!split) {
    // Settings only split uses are still checked when set, so a typo is never silent.
    check_price_id(problems, "STRIPE_PROMPT_PRICE_ID", config.prompt_price_id, mode, "");
    check_price_id(problems, "STRIPE_COMPLETION_PRICE_ID", config.completion_price_id, mode, "");
    check_event_name(problems, "STRIPE_PROMPT_METER_EVENT_NAME", config.prompt_meter_event_name,
                     mode, "");
    check_event_name(problems, "STRIPE_COMPLETION_METER_EVENT_NAME",
                     config.completion_meter_event_name, mode, "");
    if (records) dimensions[0].price_id = price;
    if (meters) dimensions[0].meter_event_name = meter;
    return dimensions;
  }
  if (!records) {
    check_price_id(problems, "STRIPE_PROMPT_PRICE_ID", config.prompt_price_id, mode, "");
    check_price_id(problems, "STRIPE_COMPLETION_PRICE_ID", config.completion_price_id, mode, "");
  }
  if (!meters) {
    check_event_name(problems, "STRIPE_PROMPT_METER_EVENT_NAME", config.prompt_meter_event_name,
                     mode, "");
    check_event_name(problems, "STRIPE_COMPLETION_METER_EVENT_NAME",
                     config.completion_meter_event_name, mode, "");
  }
  if (records) {
    dimensions[0].price_id =
        check_price_id(problems, "STRIPE_PROMPT_PRICE_ID", config.prompt_price_id, mode,
                       "that bills prompt tokens (STRIPE_QUANTITY=split)");
    dimensions[1].price_id =
        check_price_id(problems, "STRIPE_COMPLETION_PRICE_ID", config.completion_price_id, mode,
                       "that bills completion tokens (STRIPE_QUANTITY=split)");
    if (!dimensions[0].price_id.empty() && dimensions[0].price_id == dimensions[1].price_id) {
      problems.add(
          "STRIPE_PROMPT_PRICE_ID and STRIPE_COMPLETION_PRICE_ID must differ "
          "(STRIPE_QUANTITY=split bills them on two subscription items)");
    }
  }
  if (meters) {
    const bool two_meters =
        value_set(config.prompt_meter_event_name) || value_set(config.completion_meter_event_name);
    if (two_meters) {
      dimensions[0].meter_event_name = check_event_name(
          problems, "STRIPE_PROMPT_METER_EVENT_NAME", config.prompt_meter_event_name, mode,
          "that counts prompt tokens (set both split meters, or neither and one "
          "STRIPE_METER_EVENT_NAME with a token type)");
      dimensions[1].meter_event_name = check_event_name(
          problems, "STRIPE_COMPLETION_METER_EVENT_NAME", config.completion_meter_event_name, mode,
          "that counts completion tokens (set both split meters, or neither and one "
          "STRIPE_METER_EVENT_NAME with a token type)");
      if (!dimensions[0].meter_event_name.empty() &&
          dimensions[0].meter_event_name == dimensions[1].meter_event_name) {
        problems.add(
            "STRIPE_PROMPT_METER_EVENT_NAME and STRIPE_COMPLETION_METER_EVENT_NAME must "
            "differ; to bill both on one meter, set only STRIPE_METER_EVENT_NAME");
      }
    } else {
      if (meter.empty() && !value_set(config.meter_event_name)) {
        problems.add_required(
            "STRIPE_METER_EVENT_NAME is required" + in_mode(mode) +
            " with STRIPE_QUANTITY=split, unless STRIPE_PROMPT_METER_EVENT_NAME and "
            "STRIPE_COMPLETION_METER_EVENT_NAME name two meters");
      }
      dimensions[0].meter_event_name = meter;
      dimensions[1].meter_event_name = meter;
      dimensions[0].token_type = "input";
      dimensions[1].token_type = "output";
    }
  }
  return dimensions;
}

std::string check_metadata_key(Problems& problems, const std::optional<std::string>& raw) {
  if (!value_set(raw)) return kDefaultCustomerMetadataKey;
  const std::string& key = *raw;
  bool ok = key.size() <= kMaxMetadataKeyLength;
  for (char c : key) ok = ok && (is_word_char(c) || c == '-');
  if (!ok) {
    problems.add("STRIPE_CUSTOMER_METADATA_KEY must be 1 to 40 letters, digits, '_' or '-'; got " +
                 problems.shown(key));
    return {};
  }
  return key;
}

std::map<std::string, StaticTarget> check_customer_map(Problems& problems,
                                                       const std::optional<std::string>& raw) {
  std::map<std::string, StaticTarget> map;
  if (!value_set(raw)) return map;
  constexpr const char* kVar = "STRIPE_CUSTOMER_MAP";
  std::set<std::string> reported_duplicates;
  std::string_view rest = *raw;
  for (int index = 1;; ++index) {
    const std::size_t comma = rest.find(',');
    const std::string_view entry = trim(rest.substr(0, comma));
    const std::string label = std::string(kVar) + " entry " + std::to_string(index);
    const std::size_t equals = entry.find('=');
    if (entry.empty()) {
      problems.add(label + " is empty (a stray comma?); expected value=cus_… or value=si_…");
    } else if (equals == std::string_view::npos) {
      problems.add(label + " " + problems.shown(entry) + " must be value=cus_… or value=si_…");
    } else {
      const std::string key(trim(entry.substr(0, equals)));
      const std::string_view target = trim(entry.substr(equals + 1));
      if (key.empty()) {
        problems.add(label + " " + problems.shown(entry) + " has nothing before '='");
      } else if (!is_prefixed_id(target, "cus_") && !is_prefixed_id(target, "si_")) {
        problems.add(label + " (" + problems.shown(key) +
                     ") must map to a customer (cus_…) or a subscription item (si_…); got " +
                     problems.shown(target));
      } else if (map.count(key) != 0) {
        if (reported_duplicates.insert(key).second) {
          problems.add(std::string(kVar) + " maps " + problems.shown(key) + " more than once");
        }
      } else {
        StaticTarget& mapped = map[key];
        if (starts_with(target, "cus_")) {
          mapped.customer_id = std::string(target);
        } else {
          mapped.subscription_item_id = std::string(target);
        }
      }
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return map;
}

// A subscription item in the map bills one price through usage records; meters need the customer.
void check_map_targets(Problems& problems, const std::map<std::string, StaticTarget>& map,
                       BillingMode mode, QuantitySource quantity, std::size_t prices) {
  std::string why;
  if (mode != BillingMode::kUsageRecords) {
    why = std::string("STRIPE_BILLING_MODE=") + to_string(mode) +
          " bills meters, which need the customer";
  } else if (quantity == QuantitySource::kSplit) {
    why = "STRIPE_QUANTITY=split bills two subscription items, found from the customer";
  } else if (prices > 1) {
    why = std::string("STRIPE_QUANTITY=") + to_string(quantity) +
          " bills several subscription items, found from the customer";
  }
  if (why.empty()) return;
  for (const auto& [key, target] : map) {
    if (!target.subscription_item_id.empty()) {
      problems.add("STRIPE_CUSTOMER_MAP maps " + problems.shown(key) + " to a subscription item (" +
                   target.subscription_item_id + "); " + why + ": map it to its cus_… instead");
    }
  }
}

constexpr IntegerRule kTableReloadRule{"STRIPE_TABLE_RELOAD_S", "seconds", 10, 0, 3600};

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> out;
  for (;;) {
    const std::size_t comma = text.find(',');
    const std::string_view item = trim(text.substr(0, comma));
    if (!item.empty()) out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

// The settings of token types, model slugs and priced calls that stand on their own. The files
// are read once here, so that a broken table is refused at start-up with everything else.
struct TokenSettings {
  std::vector<std::string> skip_call_types_;
  bool model_slugs_ = false;
  std::string model_map_file_;
  std::string price_table_;
  std::string price_markup_;
  std::string cost_multiplier_text_;
  std::chrono::seconds table_reload_{0};
  std::string v2_api_version_;
};

TokenSettings check_token_settings(Problems& problems, const Config& config,
                                   QuantitySource quantity) {
  TokenSettings out;
  out.skip_call_types_ = split_list(
      config.skip_call_types ? std::string_view(*config.skip_call_types) : kDefaultSkipCallTypes);
  if (config.skip_call_types && *config.skip_call_types == "none") out.skip_call_types_.clear();
  for (const std::string& type : out.skip_call_types_) {
    bool ok = type.size() <= 100;
    for (char c : type) ok = ok && is_word_char(c);
    if (!ok) {
      problems.add(
          "STRIPE_SKIP_CALL_TYPES entries must be LiteLLM call types (letters, digits, "
          "'_'), or the whole value none; got " +
          problems.shown(type));
    }
  }
  out.model_slugs_ =
      check_choice(problems, "STRIPE_MODEL_SLUGS", config.model_slugs, kOnOffChoices);
  if (out.model_slugs_ && !value_set(config.meter_model_key)) {
    problems.add("STRIPE_MODEL_SLUGS=on needs STRIPE_METER_MODEL_KEY: the slug is sent under it");
  }
  if (value_set(config.model_map_file)) {
    out.model_map_file_ = *config.model_map_file;
    if (auto slugs = ModelSlugs::from_file(out.model_map_file_); !slugs) {
      problems.add("STRIPE_MODEL_MAP_FILE: " + slugs.error().message);
    }
    if (!out.model_slugs_) {
      problems.add("STRIPE_MODEL_MAP_FILE is set but STRIPE_MODEL_SLUGS is off");
    }
  }
  const bool priced = quantity == QuantitySource::kPriced;
  if (value_set(config.price_table)) {
    out.price_table_ = *config.price_table;
    if (!priced) {
      problems.add("STRIPE_PRICE_TABLE is set but only STRIPE_QUANTITY=priced uses it");
    } else if (auto table = PriceTable::from_file(out.price_table_); !table) {
      problems.add("STRIPE_PRICE_TABLE: " + table.error().message);
    }
  }
  if (value_set(config.price_markup)) {
    out.price_markup_ = *config.price_markup;
    const auto markup = Decimal::parse(out.price_markup_);
    if (!markup || markup->nanos == 0) {
      problems.add(
          "STRIPE_PRICE_MARKUP must be a decimal multiplier such as 1.2 (at most 9 "
          "decimals, more than 0, at most 1000000); got " +
          problems.shown(out.price_markup_));
    }
  }
  out.cost_multiplier_text_ = value_set(config.cost_multiplier) ? *config.cost_multiplier : "100";
  if (priced && !Decimal::parse(out.cost_multiplier_text_)) {
    problems.add(
        "STRIPE_COST_MULTIPLIER must be an exact decimal with STRIPE_QUANTITY=priced; "
        "got " +
        problems.shown(out.cost_multiplier_text_));
  }
  if (const auto reload = check_integer(problems, kTableReloadRule, config.table_reload_s)) {
    out.table_reload_ = std::chrono::seconds(*reload);
  }
  out.v2_api_version_ = kDefaultV2ApiVersion;
  if (value_set(config.v2_api_version)) {
    if (!is_version_shape(*config.v2_api_version)) {
      problems.add("STRIPE_V2_API_VERSION must look like YYYY-MM-DD or YYYY-MM-DD.name (e.g. " +
                   std::string(kDefaultV2ApiVersion) + "); got " +
                   problems.shown(*config.v2_api_version));
    }
    out.v2_api_version_ = *config.v2_api_version;
  }
  return out;
}

void check_distinct_payload_keys(Problems& problems, const FinalizedConfig& config) {
  if (!config.uses_meters()) return;
  std::map<std::string, std::string> used;
  const std::pair<const char*, const std::string*> keys[] = {
      {"STRIPE_METER_CUSTOMER_KEY", &config.meter_customer_key()},
      {"STRIPE_METER_VALUE_KEY", &config.meter_value_key()},
      {"STRIPE_METER_TOKEN_TYPE_KEY", &config.meter_token_type_key()},
      {"STRIPE_METER_MODEL_KEY", &config.meter_model_key()},
  };
  const bool token_type =
      !config.dimensions().empty() && config.dimensions().front().token_type.size() > 0;
  for (const auto& [variable, key] : keys) {
    if (key->empty()) continue;
    if (!token_type && key == &config.meter_token_type_key()) continue;  // not sent
    auto [it, inserted] = used.emplace(*key, variable);
    if (!inserted) {
      problems.add(std::string(variable) + " and " + it->second + " are both " +
                   problems.shown(*key) + "; each meter payload key must be different");
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public functions

const char* to_string(ChargeBy value) noexcept {
  switch (value) {
    case ChargeBy::kEndUserId:
      return "end_user_id";
    case ChargeBy::kUserId:
      return "user_id";
    case ChargeBy::kTeamId:
      return "team_id";
  }
  return "unknown";
}

const char* to_string(RequestUserTrust value) noexcept {
  switch (value) {
    case RequestUserTrust::kOff:
      return "off";
    case RequestUserTrust::kLookup:
      return "lookup";
    case RequestUserTrust::kCustomerId:
      return "customer_id";
  }
  return "unknown";
}

const char* to_string(QuantitySource value) noexcept {
  switch (value) {
    case QuantitySource::kTotalTokens:
      return "total_tokens";
    case QuantitySource::kPromptTokens:
      return "prompt_tokens";
    case QuantitySource::kCompletionTokens:
      return "completion_tokens";
    case QuantitySource::kSplit:
      return "split";
    case QuantitySource::kCost:
      return "cost";
    case QuantitySource::kTokenTypes:
      return "token_types";
    case QuantitySource::kPriced:
      return "priced";
  }
  return "unknown";
}

const char* to_string(BillingMode value) noexcept {
  switch (value) {
    case BillingMode::kUsageRecords:
      return "usage_records";
    case BillingMode::kMeterEvents:
      return "meter_events";
    case BillingMode::kMeterEventStream:
      return "meter_event_stream";
    case BillingMode::kDual:
      return "dual";
    case BillingMode::kMeterEventsV2:
      return "meter_events_v2";
  }
  return "unknown";
}

const char* to_string(Preset value) noexcept {
  return value == Preset::kTokenBilling ? "token_billing" : "none";
}

const char* to_string(CacheHitPolicy value) noexcept {
  switch (value) {
    case CacheHitPolicy::kBill:
      return "bill";
    case CacheHitPolicy::kSkip:
      return "skip";
    case CacheHitPolicy::kTokenType:
      return "token_type";
  }
  return "unknown";
}

const BilledDimension* FinalizedConfig::dimension(const std::string& name) const noexcept {
  for (const BilledDimension& dimension : dimensions_) {
    if (dimension.name == name) return &dimension;
  }
  return nullptr;
}

const char* to_string(AdmissionMode value) noexcept {
  switch (value) {
    case AdmissionMode::kOff:
      return "off";
    case AdmissionMode::kStatic:
      return "static";
    case AdmissionMode::kCredits:
      return "credits";
  }
  return "off";
}

const char* to_string(Durability value) noexcept {
  switch (value) {
    case Durability::kAsync:
      return "async";
    case Durability::kSync:
      return "sync";
  }
  return "unknown";
}

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

const std::vector<std::string>& config_variable_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const SettingInfo& setting : config_settings()) out.emplace_back(setting.variable);
    return out;
  }();
  return names;
}

Config config_from_env(const EnvLookup& env) {
  Config config;
  for (const SettingField& setting : kSettingFields) {
    std::optional<std::string> value = env(setting.variable);
    if (value && !value->empty()) config.*setting.field = std::move(value);
  }
  return config;
}

// ---------------------------------------------------------------------------------------------
// Admission and webhooks

// One budget entry: "key=amount" (STRIPE_BUDGETS) or "key:type=amount" (STRIPE_TOKEN_BUDGETS,
// split at the last ':' so that keys may hold one). Keys are stored text (no control bytes,
// valid UTF-8, at most 256 bytes); amounts are whole units.
struct BudgetEntry {
  std::string key;
  std::string type;
  std::int64_t amount = 0;
};

std::vector<BudgetEntry> check_budget_entries(Problems& problems, const char* variable,
                                              const std::optional<std::string>& raw, bool typed) {
  std::vector<BudgetEntry> out;
  if (!value_set(raw)) return out;
  for (const std::string& item : split_list(*raw)) {
    const std::size_t equals = item.rfind('=');
    std::string key =
        equals == std::string::npos ? std::string() : std::string(trim(item.substr(0, equals)));
    const std::string amount =
        equals == std::string::npos ? std::string() : std::string(trim(item.substr(equals + 1)));
    std::string type;
    if (typed) {
      const std::size_t colon = key.rfind(':');
      type = colon == std::string::npos ? std::string() : std::string(trim(key.substr(colon + 1)));
      key = colon == std::string::npos ? std::string() : std::string(trim(key.substr(0, colon)));
    }
    const bool control = std::any_of(key.begin(), key.end(),
                                     [](char c) { return static_cast<unsigned char>(c) < 0x20; });
    if (key.empty() || amount.empty() || key.size() > 256 || control || !is_storable_text(key) ||
        (typed && type.empty())) {
      problems.add(std::string(variable) + " entries must be " +
                   (typed ? "key:type=tokens (a customer key, a plan or *, a token type, then "
                            "whole tokens)"
                          : "key=amount (a customer key, a plan or *, then whole billed units)") +
                   "; got " + problems.shown(item));
      continue;
    }
    const IntegerRule rule{variable, "billed units per period", 0, 0, kLargestMaxQuantity};
    const auto value = check_integer(problems, rule, amount);
    if (!value) continue;
    const bool twice = std::any_of(out.begin(), out.end(), [&](const BudgetEntry& entry) {
      return entry.key == key && entry.type == type;
    });
    if (twice) {
      problems.add(std::string(variable) + " names " +
                   problems.shown(typed ? key + ":" + type : key) + " twice");
      continue;
    }
    out.push_back({std::move(key), std::move(type), *value});
  }
  return out;
}

// "pro=1000000, cus_A=5000, *=100": a budget per customer key or plan, `*` for the rest.
std::map<std::string, std::int64_t> check_budgets(Problems& problems,
                                                  const std::optional<std::string>& raw) {
  std::map<std::string, std::int64_t> out;
  for (BudgetEntry& entry : check_budget_entries(problems, "STRIPE_BUDGETS", raw, false)) {
    out.emplace(std::move(entry.key), entry.amount);
  }
  return out;
}

// "pro:output=200000, *:input=1000000": budgets per token type, in the types the quantity
// bills: token_types' five, or split's input and output.
std::map<std::string, std::map<std::string, std::int64_t>> check_token_budgets(
    Problems& problems, const std::optional<std::string>& raw, QuantitySource quantity) {
  std::map<std::string, std::map<std::string, std::int64_t>> out;
  const std::vector<BudgetEntry> entries =
      check_budget_entries(problems, "STRIPE_TOKEN_BUDGETS", raw, true);
  if (entries.empty()) return out;
  if (quantity != QuantitySource::kTokenTypes && quantity != QuantitySource::kSplit) {
    problems.add(
        "STRIPE_TOKEN_BUDGETS needs STRIPE_QUANTITY=token_types or split (the modes that bill "
        "tokens by type); use STRIPE_BUDGETS for the others");
    return out;
  }
  for (const BudgetEntry& entry : entries) {
    const auto type = token_type_from_string(entry.type);
    const bool billed = type && (quantity == QuantitySource::kTokenTypes ||
                                 *type == TokenType::kInput || *type == TokenType::kOutput);
    if (!billed) {
      std::string names;
      for (const TokenType each : kAllTokenTypes) {
        if (quantity == QuantitySource::kSplit && each != TokenType::kInput &&
            each != TokenType::kOutput) {
          continue;
        }
        names += (names.empty() ? "" : ", ") + std::string(to_string(each));
      }
      problems.add("STRIPE_TOKEN_BUDGETS: " + problems.shown(entry.type) +
                   " is not a token type this quantity bills (" + names + ")");
      continue;
    }
    out[entry.key][entry.type] = entry.amount;
  }
  return out;
}

AdmissionSettings check_admission(Problems& problems, const Config& config,
                                  QuantitySource quantity) {
  AdmissionSettings out;
  out.mode = check_choice(problems, "STRIPE_ADMISSION", config.admission, kAdmissionChoices);
  out.budgets = check_budgets(problems, config.budgets);
  out.token_budgets = check_token_budgets(problems, config.token_budgets, quantity);
  out.period =
      check_choice(problems, "STRIPE_BUDGET_PERIOD", config.budget_period, kBudgetPeriodChoices);
  out.unestimable = check_choice(problems, "STRIPE_ADMISSION_UNESTIMABLE",
                                 config.admission_unestimable, kUnestimableChoices);
  out.fail_open =
      check_choice(problems, "STRIPE_ADMISSION_FAIL", config.admission_fail, kFailChoices);
  out.overage_allowed = check_choice(problems, "STRIPE_OVERAGE", config.overage, kOverageChoices);
  const auto max_output =
      check_integer(problems, kAdmissionMaxOutputRule, config.admission_max_output);
  const auto reserve = check_integer(problems, kAdmissionReserveRule, config.admission_reserve);
  const auto wait = check_integer(problems, kAdmissionWaitRule, config.admission_wait_ms);
  const auto hold_ttl = check_integer(problems, kHoldTtlRule, config.hold_ttl_s);
  const auto balance_ttl =
      check_integer(problems, kCreditBalanceTtlRule, config.credit_balance_ttl_s);
  const auto tolerance = check_integer(problems, kWebhookToleranceRule, config.webhook_tolerance_s);
  if (max_output) out.max_output = *max_output;
  if (reserve) out.fixed_reserve = *reserve;
  if (wait) out.wait = std::chrono::milliseconds(*wait);
  if (hold_ttl) out.hold_ttl = std::chrono::seconds(*hold_ttl);
  if (balance_ttl) out.credit_balance_ttl = std::chrono::seconds(*balance_ttl);
  if (tolerance) out.webhook_tolerance = std::chrono::seconds(*tolerance);
  if (out.mode == AdmissionMode::kStatic && out.budgets.empty() && out.token_budgets.empty() &&
      !value_set(config.token_budgets)) {
    problems.add(
        "STRIPE_ADMISSION=static needs STRIPE_BUDGETS (key=amount per customer key, "
        "plan or *) or STRIPE_TOKEN_BUDGETS (key:type=tokens)");
  }
  if (out.mode == AdmissionMode::kCredits && value_set(config.token_budgets)) {
    problems.add(
        "STRIPE_TOKEN_BUDGETS applies to STRIPE_ADMISSION=static; credits are one balance, in "
        "money, for every token type");
  }
  if (out.mode == AdmissionMode::kCredits && quantity != QuantitySource::kCost &&
      quantity != QuantitySource::kPriced) {
    problems.add(
        "STRIPE_ADMISSION=credits needs STRIPE_QUANTITY=cost or priced: Stripe's credit "
        "balance is money, and tokens cannot be compared with it");
  }
  if (out.unestimable == UnestimablePolicy::kReserve && out.fixed_reserve <= 0) {
    problems.add(
        "STRIPE_ADMISSION_UNESTIMABLE=reserve needs STRIPE_ADMISSION_RESERVE (the units "
        "a call that cannot be estimated holds), more than 0");
  }
  if (value_set(config.webhook_secret)) {
    const std::string& secret = *config.webhook_secret;
    if (secret.rfind("whsec_", 0) != 0 || secret.size() < 14 || !all_word_chars(secret)) {
      problems.add(
          "STRIPE_WEBHOOK_SECRET must be an endpoint's signing secret (whsec_…, as the "
          "Dashboard or `stripe listen` shows it); the value given is not one (not shown)");
    } else {
      out.webhook_secret = Secret(secret);
    }
  }
  return out;
}

Expected<FinalizedConfig> finalize_config(const Config& given) {
  Problems problems(given.api_key.value_or(""));
  Config config = without_secrets(problems, given);
  FinalizedConfig out;
  out.preset_ = check_choice(problems, "STRIPE_PRESET", config.preset, kPresetChoices);
  apply_preset(problems, config, out.preset_);

  out.environment_ = value_set(config.environment) ? *config.environment : kDefaultEnvironment;
  // The given ENVIRONMENT, even if it held a secret: a live key needs exactly "production".
  KeyCheck key = check_api_key(problems, config.api_key, given.environment);
  out.api_key_ = std::move(key.key);
  out.live_mode_ = key.live;
  const std::size_t before_mode = problems.size();
  out.billing_mode_ =
      check_choice(problems, "STRIPE_BILLING_MODE", config.billing_mode, kBillingModeChoices);
  problems.set_mode_known(problems.size() == before_mode);
  out.charge_by_ = check_choice(problems, "STRIPE_CHARGE_BY", config.charge_by, kChargeByChoices);
  out.trust_request_user_ = check_choice(problems, "STRIPE_TRUST_REQUEST_USER",
                                         config.trust_request_user, kRequestUserTrustChoices);
  out.api_base_ = check_base_url(problems, "STRIPE_API_BASE", kDefaultApiBase, config.api_base);
  out.api_version_ = check_api_version(problems, config.api_version, out.uses_usage_records());
  out.quantity_source_ =
      check_choice(problems, "STRIPE_QUANTITY", config.quantity, kQuantityChoices);
  out.cache_hit_ = check_choice(problems, "STRIPE_CACHE_HIT", config.cache_hit, kCacheHitChoices);
  out.unpriced_model_ =
      check_choice(problems, "STRIPE_UNPRICED_MODEL", config.unpriced_model, kUnpricedChoices);
  out.dimensions_ = check_dimensions(problems, config, out.billing_mode_, out.quantity_source_,
                                     out.cache_hit_, out.unpriced_model_);
  out.price_id_ = out.dimensions_.empty() ? std::string() : out.dimensions_.front().price_id;
  out.customer_metadata_key_ = check_metadata_key(problems, config.customer_metadata_key);
  out.customer_map_ = check_customer_map(problems, config.customer_map);
  check_map_targets(problems, out.customer_map_, out.billing_mode_, out.quantity_source_,
                    out.dimensions_.size());
  {
    TokenSettings token = check_token_settings(problems, config, out.quantity_source_);
    out.skip_call_types_ = std::move(token.skip_call_types_);
    out.model_slugs_ = token.model_slugs_;
    out.model_map_file_ = std::move(token.model_map_file_);
    out.price_table_ = std::move(token.price_table_);
    out.price_markup_ = std::move(token.price_markup_);
    out.cost_multiplier_text_ = std::move(token.cost_multiplier_text_);
    out.table_reload_ = token.table_reload_;
    out.v2_api_version_ = std::move(token.v2_api_version_);
  }
  const auto cost_multiplier =
      check_decimal(problems, kCostMultiplierRule, config.cost_multiplier, 100);
  out.meter_customer_key_ = check_payload_key(problems, "STRIPE_METER_CUSTOMER_KEY",
                                              config.meter_customer_key, kDefaultMeterCustomerKey);
  out.meter_value_key_ = check_payload_key(problems, "STRIPE_METER_VALUE_KEY",
                                           config.meter_value_key, kDefaultMeterValueKey);
  out.meter_token_type_key_ =
      check_payload_key(problems, "STRIPE_METER_TOKEN_TYPE_KEY", config.meter_token_type_key,
                        kDefaultMeterTokenTypeKey);
  out.meter_model_key_ =
      check_payload_key(problems, "STRIPE_METER_MODEL_KEY", config.meter_model_key, "");
  check_distinct_payload_keys(problems, out);
  out.meter_stream_base_ = check_base_url(problems, "STRIPE_METER_STREAM_BASE",
                                          kDefaultMeterStreamBase, config.meter_stream_base);
  // Live meter events have their own limit (1,000/s); in test mode they count toward the
  // general one, so by default they share its bucket (0).
  const auto meter_rate_limit =
      check_decimal(problems, kMeterRateLimitRule, config.meter_rate_limit,
                    out.live_mode_ ? kDefaultLiveMeterRateLimit : 0);

  const auto max_quantity = check_integer(problems, kMaxQuantityRule, config.max_quantity);
  const auto cache_ttl = check_integer(problems, kLookupCacheTtlRule, config.lookup_cache_ttl);
  const auto miss_ttl = check_integer(problems, kLookupMissTtlRule, config.lookup_miss_ttl);
  const auto connect_timeout =
      check_integer(problems, kConnectTimeoutRule, config.connect_timeout_ms);
  const auto timeout = check_integer(problems, kTimeoutRule, config.timeout_ms);
  const auto queue_capacity = check_integer(problems, kQueueCapacityRule, config.queue_capacity);

  out.outbox_path_ = check_outbox_path(problems, config.outbox_path);
  check_outbox_url(problems, config.outbox_url, out.outbox_url_, out.outbox_url_redacted_);
  out.outbox_schema_ = check_outbox_schema(problems, config.outbox_schema);
  const auto fleet_lease = check_integer(problems, kFleetLeaseRule, config.fleet_lease_s);
  out.durability_ =
      check_choice(problems, "STRIPE_DURABILITY", config.durability, kDurabilityChoices);
  out.log_format_ =
      check_choice(problems, "STRIPE_LOG_FORMAT", config.log_format, kLogFormatChoices);
  const auto commit_interval =
      check_integer(problems, kCommitIntervalRule, config.commit_interval_ms);
  const auto sync_timeout = check_integer(problems, kSyncTimeoutRule, config.sync_timeout_ms);
  const auto aggregation_window =
      check_integer(problems, kAggregationWindowRule, config.aggregation_window_ms);
  const auto max_backoff = check_integer(problems, kMaxBackoffRule, config.max_backoff_s);
  const auto max_delivery_age =
      check_integer(problems, kMaxDeliveryAgeRule, config.max_delivery_age_s);
  // The default depends on the key's mode, known above (a refused key counts as test mode; the
  // configuration is refused anyway).
  const auto rate_limit =
      check_decimal(problems, kRateLimitRule, config.rate_limit,
                    out.live_mode_ ? kDefaultLiveRateLimit : kDefaultTestRateLimit);
  const auto sender_threads = check_integer(problems, kSenderThreadsRule, config.sender_threads);
  const auto park_retry = check_integer(problems, kParkRetryRule, config.park_retry_s);
  const auto ledger_retention =
      check_integer(problems, kLedgerRetentionRule, config.ledger_retention_days);
  const auto auth_probe = check_integer(problems, kAuthProbeRule, config.auth_probe_s);

  out.admission_ = check_admission(problems, config, out.quantity_source_);

  if (cache_ttl && miss_ttl && *miss_ttl > *cache_ttl) {
    problems.add("STRIPE_LOOKUP_MISS_TTL (" + std::to_string(*miss_ttl) +
                 " s) must not exceed STRIPE_LOOKUP_CACHE_TTL (" + std::to_string(*cache_ttl) +
                 " s)");
  }
  if (connect_timeout && timeout && *connect_timeout > *timeout) {
    problems.add("STRIPE_CONNECT_TIMEOUT_MS (" + std::to_string(*connect_timeout) +
                 " ms) must not exceed STRIPE_TIMEOUT_MS (" + std::to_string(*timeout) + " ms)");
  }

  if (!problems.empty()) return problems.to_error();

  out.max_quantity_ = *max_quantity;
  out.cost_multiplier_ = *cost_multiplier;
  out.meter_rate_limit_ = *meter_rate_limit;
  out.lookup_cache_ttl_ = std::chrono::seconds(*cache_ttl);
  out.lookup_miss_ttl_ = std::chrono::seconds(*miss_ttl);
  out.connect_timeout_ = std::chrono::milliseconds(*connect_timeout);
  out.timeout_ = std::chrono::milliseconds(*timeout);
  out.queue_capacity_ = static_cast<std::size_t>(*queue_capacity);
  out.commit_interval_ = std::chrono::milliseconds(*commit_interval);
  out.sync_timeout_ = std::chrono::milliseconds(*sync_timeout);
  out.aggregation_window_ = std::chrono::milliseconds(*aggregation_window);
  out.max_backoff_ = std::chrono::seconds(*max_backoff);
  out.max_delivery_age_ = std::chrono::seconds(*max_delivery_age);
  out.rate_limit_ = *rate_limit;
  out.sender_threads_ = static_cast<int>(*sender_threads);
  out.park_retry_ = std::chrono::seconds(*park_retry);
  out.ledger_retention_ = std::chrono::hours(*ledger_retention * 24);
  out.auth_probe_interval_ = std::chrono::seconds(*auth_probe);
  out.fleet_lease_ = std::chrono::seconds(*fleet_lease);
  return out;
}

std::string FinalizedConfig::summary() const {
  std::ostringstream rate;
  rate.imbue(std::locale::classic());
  rate << rate_limit_;  // 25, 12.5
  std::string billed;
  const auto describe = [](const BilledDimension& dimension) {
    std::string text;
    if (!dimension.price_id.empty()) text += " price=" + dimension.price_id;
    if (!dimension.meter_event_name.empty()) text += " meter=" + dimension.meter_event_name;
    if (!dimension.token_type.empty()) text += "[" + dimension.token_type + "]";
    return text;
  };
  if (preset_ != Preset::kNone) billed += std::string(" preset=") + to_string(preset_);
  if (quantity_source_ != QuantitySource::kTotalTokens) {
    billed += std::string(" quantity=") + to_string(quantity_source_);
  }
  if (cache_hit_ != CacheHitPolicy::kBill) {
    billed += std::string(" cache_hit=") + to_string(cache_hit_);
  }
  if (model_slugs_) billed += " model_slugs=on";
  // Shown only when a caller's request may choose the customer, so operators notice it.
  const std::string trust =
      trust_request_user_ == RequestUserTrust::kOff
          ? std::string()
          : std::string(" trust_request_user=") + to_string(trust_request_user_);
  for (const BilledDimension& dimension : dimensions_) {
    billed += (dimensions_.size() > 1 ? " " + dimension.name + ":" : "") + describe(dimension);
  }
  // finalize_config() refuses a value that holds the key or another one; a key glued to a word
  // ("llmsk_live_…") is no key as written and passes, but is redacted here all the same.
  return Secret::redact_secrets_in(
      std::string("mode=") + to_string(billing_mode_) + " key=" + api_key_.redacted() +
      (live_mode_ ? " (live)" : " (test)") + billed + " charge_by=" + to_string(charge_by_) +
      trust + " api_base=" + api_base_ + " api_version=" + api_version_ +
      " durability=" + to_string(durability_) + " outbox=" +
      (uses_postgres() ? outbox_url_redacted_ + " schema=" + outbox_schema_ : outbox_path_) +
      " window=" + std::to_string(aggregation_window_.count()) + "ms rate=" + rate.str() + "/s" +
      (admission_.mode == AdmissionMode::kOff
           ? std::string()
           : std::string(" admission=") + to_string(admission_.mode)) +
      (admission_.webhook_secret.empty() ? "" : " webhooks=on"));
}

}  // namespace stripe_billing
