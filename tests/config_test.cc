#include "stripe_billing/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "config_test_support.h"
#include "temp_dir.h"

namespace stripe_billing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr const char* kLiveKey = "sk_live_51NzQvRkLmYb_De7Fh3Jx9PaTuWc_GsHiKoAbCdEfGhwxyz";
constexpr const char* kEllipsis = "\xE2\x80\xA6";

using testing::Env;
using testing::kTestKey;
using testing::lookup_in;

Config valid_config() {
  Config config;
  config.api_key = kTestKey;
  config.price_id = "price_123";
  return config;
}

FinalizedConfig finalized(const Config& config) {
  Expected<FinalizedConfig> result = finalize_config(config);
  EXPECT_TRUE(result.has_value()) << (result ? "" : result.error().message);
  if (!result) throw std::runtime_error("finalize_config failed");
  return std::move(result).value();
}

// The message of a failed finalize_config(), after checking it is kInvalidConfig and never
// contains the API key.
std::string problems_of(const Config& config) {
  Expected<FinalizedConfig> result = finalize_config(config);
  EXPECT_FALSE(result.has_value());
  if (result) return "";
  const Error& error = result.error();
  EXPECT_EQ(error.code, ErrorCode::kInvalidConfig);
  if (config.api_key && config.api_key->size() > 8) {
    EXPECT_THAT(error.message, Not(HasSubstr(*config.api_key))) << "the message leaks the key";
  }
  return error.message;
}

// The lines after the header.
std::vector<std::string> problem_lines(const std::string& message) {
  std::vector<std::string> lines;
  std::istringstream in(message);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::string single_problem(const Config& config) {
  const std::string message = problems_of(config);
  EXPECT_THAT(message, StartsWith("invalid Stripe billing configuration (1 problem):\n- "));
  const std::vector<std::string> lines = problem_lines(message);
  EXPECT_EQ(lines.size(), 1u) << message;
  return lines.empty() ? "" : lines.front();
}

// ------------------------------------------------------------------------------------------
// Reading the environment

TEST(ConfigFromEnvTest, ReadsEveryVariable) {
  const Config config = config_from_env(lookup_in({
      {"STRIPE_API_KEY", kTestKey},
      {"STRIPE_PRICE_ID", "price_123"},
      {"STRIPE_CHARGE_BY", "team_id"},
      {"STRIPE_TRUST_REQUEST_USER", "lookup"},
      {"STRIPE_API_BASE", "http://localhost:12111"},
      {"STRIPE_API_VERSION", "2024-06-20"},
      {"ENVIRONMENT", "staging"},
      {"STRIPE_QUANTITY", "prompt_tokens"},
      {"STRIPE_MAX_QUANTITY", "500"},
      {"STRIPE_CUSTOMER_METADATA_KEY", "gateway_id"},
      {"STRIPE_CUSTOMER_MAP", "alice=cus_1"},
      {"STRIPE_LOOKUP_CACHE_TTL", "60"},
      {"STRIPE_LOOKUP_MISS_TTL", "5"},
      {"STRIPE_CONNECT_TIMEOUT_MS", "1000"},
      {"STRIPE_TIMEOUT_MS", "9000"},
      {"STRIPE_QUEUE_CAPACITY", "42"},
      {"STRIPE_OUTBOX_PATH", "/var/lib/gw/outbox.db"},
      {"STRIPE_DURABILITY", "sync"},
      {"STRIPE_COMMIT_INTERVAL_MS", "20"},
      {"STRIPE_SYNC_TIMEOUT_MS", "3000"},
      {"STRIPE_AGGREGATION_WINDOW_MS", "0"},
      {"STRIPE_MAX_BACKOFF_S", "120"},
      {"STRIPE_MAX_DELIVERY_AGE_S", "3600"},
      {"STRIPE_RATE_LIMIT", "12.5"},
      {"STRIPE_SENDER_THREADS", "8"},
      {"STRIPE_PARK_RETRY_S", "30"},
      {"STRIPE_LEDGER_RETENTION_DAYS", "7"},
      {"STRIPE_AUTH_PROBE_S", "10"},
  }));
  EXPECT_EQ(config.api_key, kTestKey);
  EXPECT_EQ(config.price_id, "price_123");
  EXPECT_EQ(config.charge_by, "team_id");
  EXPECT_EQ(config.trust_request_user, "lookup");
  EXPECT_EQ(config.api_base, "http://localhost:12111");
  EXPECT_EQ(config.api_version, "2024-06-20");
  EXPECT_EQ(config.environment, "staging");
  EXPECT_EQ(config.quantity, "prompt_tokens");
  EXPECT_EQ(config.max_quantity, "500");
  EXPECT_EQ(config.customer_metadata_key, "gateway_id");
  EXPECT_EQ(config.customer_map, "alice=cus_1");
  EXPECT_EQ(config.lookup_cache_ttl, "60");
  EXPECT_EQ(config.lookup_miss_ttl, "5");
  EXPECT_EQ(config.connect_timeout_ms, "1000");
  EXPECT_EQ(config.timeout_ms, "9000");
  EXPECT_EQ(config.queue_capacity, "42");
  EXPECT_EQ(config.outbox_path, "/var/lib/gw/outbox.db");
  EXPECT_EQ(config.durability, "sync");
  EXPECT_EQ(config.commit_interval_ms, "20");
  EXPECT_EQ(config.sync_timeout_ms, "3000");
  EXPECT_EQ(config.aggregation_window_ms, "0");
  EXPECT_EQ(config.max_backoff_s, "120");
  EXPECT_EQ(config.max_delivery_age_s, "3600");
  EXPECT_EQ(config.rate_limit, "12.5");
  EXPECT_EQ(config.sender_threads, "8");
  EXPECT_EQ(config.park_retry_s, "30");
  EXPECT_EQ(config.ledger_retention_days, "7");
  EXPECT_EQ(config.auth_probe_s, "10");
}

TEST(ConfigFromEnvTest, LeavesUnsetVariablesUnset) {
  const Config config = config_from_env(lookup_in({{"STRIPE_PRICE_ID", "price_123"}}));
  EXPECT_EQ(config.price_id, "price_123");
  EXPECT_FALSE(config.api_key.has_value());
  EXPECT_FALSE(config.environment.has_value());
  EXPECT_FALSE(config.queue_capacity.has_value());
}

TEST(ConfigFromEnvTest, TreatsAnEmptyVariableAsUnset) {
  const Config config = config_from_env(lookup_in({{"STRIPE_API_KEY", ""}, {"ENVIRONMENT", ""}}));
  EXPECT_FALSE(config.api_key.has_value());
  EXPECT_FALSE(config.environment.has_value());
}

TEST(ConfigFromEnvTest, ReadsExactlyTheListedVariables) {
  std::set<std::string> asked;
  config_from_env([&asked](const std::string& name) -> std::optional<std::string> {
    asked.insert(name);
    return std::nullopt;
  });
  const std::vector<std::string>& names = config_variable_names();
  EXPECT_EQ(asked, std::set<std::string>(names.begin(), names.end()));
  EXPECT_EQ(names.size(), 72u);
}

TEST(ConfigFromEnvTest, ListsVariablesInDocumentationOrder) {
  const std::vector<std::string>& names = config_variable_names();
  ASSERT_EQ(names.size(), 72u);
  EXPECT_EQ(names.front(), "STRIPE_API_KEY");
  EXPECT_EQ(names[1], "STRIPE_PRESET");
  EXPECT_EQ(names[2], "STRIPE_BILLING_MODE");
  EXPECT_EQ(names[3], "STRIPE_PRICE_ID");
  EXPECT_EQ(names[4], "STRIPE_CHARGE_BY");
  EXPECT_EQ(names[5], "STRIPE_TRUST_REQUEST_USER");
  EXPECT_EQ(names[8], "ENVIRONMENT");
  EXPECT_EQ(names[14], "STRIPE_TOKEN_TYPES");
  EXPECT_EQ(names[25], "STRIPE_V2_API_VERSION");
  EXPECT_EQ(names[41], "STRIPE_QUEUE_CAPACITY");
  EXPECT_EQ(names[56], "STRIPE_AUTH_PROBE_S");
  EXPECT_EQ(names[57], "STRIPE_LOG_FORMAT");
  EXPECT_EQ(names[58], "STRIPE_ADMISSION");
  EXPECT_EQ(names.back(), "STRIPE_WEBHOOK_TOLERANCE_S");
}

TEST(ConfigFromEnvTest, ListsTheDeliveryEngineVariables) {
  const std::vector<std::string>& names = config_variable_names();
  EXPECT_EQ(std::vector<std::string>(names.begin() + 42, names.begin() + 57),
            (std::vector<std::string>{
                "STRIPE_OUTBOX_PATH", "STRIPE_OUTBOX_URL", "STRIPE_OUTBOX_SCHEMA",
                "STRIPE_FLEET_LEASE_S", "STRIPE_DURABILITY", "STRIPE_COMMIT_INTERVAL_MS",
                "STRIPE_SYNC_TIMEOUT_MS", "STRIPE_AGGREGATION_WINDOW_MS", "STRIPE_MAX_BACKOFF_S",
                "STRIPE_MAX_DELIVERY_AGE_S", "STRIPE_RATE_LIMIT", "STRIPE_SENDER_THREADS",
                "STRIPE_PARK_RETRY_S", "STRIPE_LEDGER_RETENTION_DAYS", "STRIPE_AUTH_PROBE_S"}));
}

TEST(ConfigFromEnvTest, TheReferenceInTheDocsHasARowForEveryVariable) {
  std::ifstream in(std::string(STRIPE_BILLING_SOURCE_DIR) + "/docs/configuration.md");
  ASSERT_TRUE(in) << "docs/configuration.md not found";
  std::stringstream docs;
  docs << in.rdbuf();
  for (const std::string& variable : config_variable_names()) {
    std::string key = variable.rfind("STRIPE_", 0) == 0 ? variable.substr(7) : variable;
    for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_THAT(docs.str(), HasSubstr("\n| `" + variable + "` | `" + key + "` | ")) << variable;
  }
}

// ------------------------------------------------------------------------------------------
// Defaults and reporting

TEST(FinalizeConfigTest, FillsDocumentedDefaults) {
  const FinalizedConfig config = finalized(valid_config());
  EXPECT_EQ(config.api_key().reveal(), kTestKey);
  EXPECT_FALSE(config.live_mode());
  EXPECT_EQ(config.price_id(), "price_123");
  EXPECT_EQ(config.charge_by(), ChargeBy::kEndUserId);
  EXPECT_EQ(config.trust_request_user(), RequestUserTrust::kOff);
  EXPECT_EQ(config.api_base(), "https://api.stripe.com");
  EXPECT_EQ(config.api_version(), "2025-02-24.acacia");
  EXPECT_EQ(config.environment(), "development");
  EXPECT_EQ(config.quantity_source(), QuantitySource::kTotalTokens);
  EXPECT_EQ(config.max_quantity(), 10'000'000);
  EXPECT_EQ(config.customer_metadata_key(), "litellm_customer_id");
  EXPECT_TRUE(config.customer_map().empty());
  EXPECT_EQ(config.lookup_cache_ttl(), std::chrono::seconds(300));
  EXPECT_EQ(config.lookup_miss_ttl(), std::chrono::seconds(30));
  EXPECT_EQ(config.connect_timeout(), std::chrono::milliseconds(5000));
  EXPECT_EQ(config.timeout(), std::chrono::milliseconds(20000));
  EXPECT_EQ(config.queue_capacity(), 100'000u);
  EXPECT_EQ(config.outbox_path(), "stripe-billing-outbox.db");
  EXPECT_EQ(config.durability(), Durability::kSync);
  EXPECT_EQ(config.commit_interval(), std::chrono::milliseconds(50));
  EXPECT_EQ(config.sync_timeout(), std::chrono::milliseconds(5000));
  EXPECT_EQ(config.aggregation_window(), std::chrono::milliseconds(2000));
  EXPECT_EQ(config.max_backoff(), std::chrono::seconds(300));
  EXPECT_EQ(config.max_delivery_age(), std::chrono::seconds(82'800));
  EXPECT_EQ(config.rate_limit(), 25.0);
  EXPECT_EQ(config.sender_threads(), 4);
  EXPECT_EQ(config.park_retry(), std::chrono::seconds(60));
  EXPECT_EQ(config.ledger_retention(), std::chrono::hours(90 * 24));
  EXPECT_EQ(config.auth_probe_interval(), std::chrono::seconds(30));
}

TEST(FinalizeConfigTest, DefaultConstantsMatchTheDefaults) {
  EXPECT_STREQ(kDefaultApiBase, "https://api.stripe.com");
  EXPECT_STREQ(kDefaultApiVersion, "2025-02-24.acacia");
  EXPECT_STREQ(kDefaultCustomerMetadataKey, "litellm_customer_id");
  EXPECT_EQ(kDefaultMaxQuantity, 10'000'000);
  EXPECT_STREQ(kDefaultOutboxPath, "stripe-billing-outbox.db");
}

TEST(FinalizeConfigTest, UsesEveryGivenValue) {
  Config config = valid_config();
  config.charge_by = "user_id";
  config.trust_request_user = "lookup";
  config.api_base = "https://stripe-proxy.internal:8443/stripe";
  config.api_version = "2024-06-20";
  config.environment = "staging";
  config.quantity = "completion_tokens";
  config.max_quantity = "500";
  config.customer_metadata_key = "gateway-id";
  config.customer_map = "alice=cus_1";
  config.lookup_cache_ttl = "60";
  config.lookup_miss_ttl = "5";
  config.connect_timeout_ms = "1000";
  config.timeout_ms = "9000";
  config.queue_capacity = "42";
  config.outbox_path = ":memory:";
  config.durability = "sync";
  config.commit_interval_ms = "20";
  config.sync_timeout_ms = "3000";
  config.aggregation_window_ms = "0";
  config.max_backoff_s = "120";
  config.max_delivery_age_s = "3600";
  config.rate_limit = "12.5";
  config.sender_threads = "8";
  config.park_retry_s = "30";
  config.ledger_retention_days = "7";
  config.auth_probe_s = "10";
  const FinalizedConfig out = finalized(config);
  EXPECT_EQ(out.charge_by(), ChargeBy::kUserId);
  EXPECT_EQ(out.trust_request_user(), RequestUserTrust::kLookup);
  EXPECT_EQ(out.api_base(), "https://stripe-proxy.internal:8443/stripe");
  EXPECT_EQ(out.api_version(), "2024-06-20");
  EXPECT_EQ(out.environment(), "staging");
  EXPECT_EQ(out.quantity_source(), QuantitySource::kCompletionTokens);
  EXPECT_EQ(out.max_quantity(), 500);
  EXPECT_EQ(out.customer_metadata_key(), "gateway-id");
  EXPECT_EQ(out.customer_map().size(), 1u);
  EXPECT_EQ(out.lookup_cache_ttl(), std::chrono::seconds(60));
  EXPECT_EQ(out.lookup_miss_ttl(), std::chrono::seconds(5));
  EXPECT_EQ(out.connect_timeout(), std::chrono::milliseconds(1000));
  EXPECT_EQ(out.timeout(), std::chrono::milliseconds(9000));
  EXPECT_EQ(out.queue_capacity(), 42u);
  EXPECT_EQ(out.outbox_path(), ":memory:");
  EXPECT_EQ(out.durability(), Durability::kSync);
  EXPECT_EQ(out.commit_interval(), std::chrono::milliseconds(20));
  EXPECT_EQ(out.sync_timeout(), std::chrono::milliseconds(3000));
  EXPECT_EQ(out.aggregation_window(), std::chrono::milliseconds(0));
  EXPECT_EQ(out.max_backoff(), std::chrono::seconds(120));
  EXPECT_EQ(out.max_delivery_age(), std::chrono::seconds(3600));
  EXPECT_EQ(out.rate_limit(), 12.5);
  EXPECT_EQ(out.sender_threads(), 8);
  EXPECT_EQ(out.park_retry(), std::chrono::seconds(30));
  EXPECT_EQ(out.ledger_retention(), std::chrono::hours(7 * 24));
  EXPECT_EQ(out.auth_probe_interval(), std::chrono::seconds(10));
}

TEST(FinalizeConfigTest, ReportsAllProblemsTogether) {
  Config config = valid_config();
  config.api_key.reset();
  config.charge_by = "org_id";
  config.api_base = "http://api.stripe.com";
  const std::string message = problems_of(config);
  EXPECT_THAT(message, StartsWith("invalid Stripe billing configuration (3 problems):\n"));
  const std::vector<std::string> lines = problem_lines(message);
  ASSERT_EQ(lines.size(), 3u) << message;
  EXPECT_EQ(lines[0],
            "- STRIPE_API_KEY is required: a secret key (sk_test_\xE2\x80\xA6, "
            "sk_live_\xE2\x80\xA6) or a restricted key (rk_test_\xE2\x80\xA6, "
            "rk_live_\xE2\x80\xA6)");
  EXPECT_THAT(lines[1], StartsWith("- STRIPE_CHARGE_BY "));
  EXPECT_THAT(lines[2], StartsWith("- STRIPE_API_BASE "));
}

TEST(FinalizeConfigTest, SaysOneProblemInTheSingular) {
  Config config = valid_config();
  config.price_id.reset();
  EXPECT_THAT(problems_of(config),
              StartsWith("invalid Stripe billing configuration (1 problem):\n- STRIPE_PRICE_ID"));
}

TEST(FinalizeConfigTest, EveryProblemLineNamesItsVariable) {
  Config config;
  config.api_key = "pk_test_51NzQvRkLmYbDe7Fh3Jx9PaTuWcGsHiKoAbCdEfGhwxyz";
  config.price_id = "prod_123";
  config.charge_by = "org";
  config.api_base = "ftp://api.stripe.com";
  config.api_version = "latest";
  config.quantity = "tokens";
  config.max_quantity = "0";
  config.customer_metadata_key = "bad key";
  config.customer_map = "alice";
  config.lookup_cache_ttl = "-1";
  config.lookup_miss_ttl = "x";
  config.connect_timeout_ms = "0";
  config.timeout_ms = "0";
  config.queue_capacity = "0";
  config.outbox_path = "/nonexistent-stripe-billing-dir/outbox.db";
  config.durability = "fsync";
  config.commit_interval_ms = "0";
  config.sync_timeout_ms = "0";
  config.aggregation_window_ms = "-1";
  config.max_backoff_s = "0";
  config.max_delivery_age_s = "59";
  config.rate_limit = "0";
  config.sender_threads = "65";
  config.park_retry_s = "0";
  config.ledger_retention_days = "0";
  config.auth_probe_s = "3601";
  const std::string message = problems_of(config);
  const std::vector<std::string> lines = problem_lines(message);
  ASSERT_EQ(lines.size(), 26u) << message;
  const std::vector<std::string> variables = {"STRIPE_API_KEY",
                                              "STRIPE_CHARGE_BY",
                                              "STRIPE_API_BASE",
                                              "STRIPE_API_VERSION",
                                              "STRIPE_QUANTITY",
                                              "STRIPE_PRICE_ID",
                                              "STRIPE_CUSTOMER_METADATA_KEY",
                                              "STRIPE_CUSTOMER_MAP",
                                              "STRIPE_MAX_QUANTITY",
                                              "STRIPE_LOOKUP_CACHE_TTL",
                                              "STRIPE_LOOKUP_MISS_TTL",
                                              "STRIPE_CONNECT_TIMEOUT_MS",
                                              "STRIPE_TIMEOUT_MS",
                                              "STRIPE_QUEUE_CAPACITY",
                                              "STRIPE_OUTBOX_PATH",
                                              "STRIPE_DURABILITY",
                                              "STRIPE_COMMIT_INTERVAL_MS",
                                              "STRIPE_SYNC_TIMEOUT_MS",
                                              "STRIPE_AGGREGATION_WINDOW_MS",
                                              "STRIPE_MAX_BACKOFF_S",
                                              "STRIPE_MAX_DELIVERY_AGE_S",
                                              "STRIPE_RATE_LIMIT",
                                              "STRIPE_SENDER_THREADS",
                                              "STRIPE_PARK_RETRY_S",
                                              "STRIPE_LEDGER_RETENTION_DAYS",
                                              "STRIPE_AUTH_PROBE_S"};
  for (std::size_t i = 0; i < variables.size(); ++i) {
    EXPECT_THAT(lines[i], StartsWith("- " + variables[i] + " ")) << lines[i];
  }
}

// ------------------------------------------------------------------------------------------
// The API key

TEST(ApiKeyTest, IsRequired) {
  Config config = valid_config();
  config.api_key.reset();
  EXPECT_THAT(single_problem(config), StartsWith("- STRIPE_API_KEY is required"));
}

TEST(ApiKeyTest, EmptyKeyIsMissing) {
  Config config = valid_config();
  config.api_key = "";
  EXPECT_THAT(single_problem(config), StartsWith("- STRIPE_API_KEY is required"));
}

TEST(ApiKeyTest, AcceptsSecretAndRestrictedTestKeys) {
  for (const std::string key : {"sk_test_abc", "rk_test_A1_b2", "sk_test_x"}) {
    Config config = valid_config();
    config.api_key = key;
    EXPECT_TRUE(finalize_config(config).has_value()) << key;
  }
}

TEST(ApiKeyTest, AcceptsLiveKeysInProductionAndMarksLiveMode) {
  for (const std::string key : {kLiveKey, "rk_live_abc123"}) {
    Config config = valid_config();
    config.api_key = key;
    config.environment = "production";
    const FinalizedConfig out = finalized(config);
    EXPECT_TRUE(out.live_mode()) << key;
    EXPECT_EQ(out.api_key().reveal(), key);
  }
}

TEST(ApiKeyTest, RefusesPublishableTestKeyWithItsOwnMessage) {
  Config config = valid_config();
  config.api_key = "pk_test_51NzQvRkLmYbDe7Fh3Jx9PaTuWcGsHiKoAbCdEfGhwxyz";
  const std::string line = single_problem(config);
  EXPECT_THAT(line, AllOf(HasSubstr("publishable"), HasSubstr("cannot be used server-side"),
                          HasSubstr("secret key"), HasSubstr("restricted key"),
                          HasSubstr(std::string("pk_test_") + kEllipsis + "wxyz")));
}

TEST(ApiKeyTest, RefusesPublishableLiveKeyEvenInProduction) {
  Config config = valid_config();
  config.api_key = "pk_live_51NzQvRkLmYbDe7Fh3Jx9PaTuWcGsHiKoAbCdEfGhwxyz";
  config.environment = "production";
  EXPECT_THAT(single_problem(config), HasSubstr("publishable"));
}

TEST(ApiKeyTest, RefusesKeyOfUnknownShape) {
  Config config = valid_config();
  config.api_key = "sk_51NzQvRkLmYbDe7Fh3Jx9PaTuWcGsHiKoAbCdEfGhwxyz";
  EXPECT_THAT(single_problem(config),
              AllOf(StartsWith("- STRIPE_API_KEY "),
                    HasSubstr("must start with sk_test_, sk_live_, rk_test_ or rk_live_")));
}

TEST(ApiKeyTest, RefusesKeyWithNothingAfterThePrefix) {
  Config config = valid_config();
  config.api_key = "sk_test_";
  EXPECT_THAT(single_problem(config), HasSubstr("nothing after its prefix"));
}

TEST(ApiKeyTest, RefusesKeyWithTrailingNewlineWithoutEchoingIt) {
  Config config = valid_config();
  config.api_key = std::string(kTestKey) + "\n";
  const std::string line = single_problem(config);
  EXPECT_THAT(
      line, AllOf(StartsWith("- STRIPE_API_KEY "), HasSubstr("a newline"),
                  HasSubstr("character 56 of 56"), HasSubstr(std::string("sk_test_") + kEllipsis)));
  EXPECT_THAT(line, Not(HasSubstr(kTestKey)));
}

TEST(ApiKeyTest, RefusesKeyWithInnerSpace) {
  Config config = valid_config();
  config.api_key = "sk_test_51NzQvRkLmYbDe7 Fh3Jx9PaTuWcGsHiKoAbCdEfGhwxyz";
  EXPECT_THAT(single_problem(config), HasSubstr("a space at character 24"));
}

TEST(ApiKeyTest, RefusesKeyWithLeadingSpaceAsOneProblem) {
  Config config = valid_config();
  config.api_key = std::string(" ") + kTestKey;
  EXPECT_THAT(single_problem(config), HasSubstr("a space at character 1 "));
}

TEST(ApiKeyTest, RefusesKeyWithNonAsciiOrPunctuation) {
  Config config = valid_config();
  config.api_key = "sk_test_51NzQvRk\xC3\xA9LmYbDe7Fh3Jx9PaTuWcGsHiKoAbCdEfGhwxyz";
  EXPECT_THAT(single_problem(config), HasSubstr("a non-ASCII byte"));
  config.api_key = "\"sk_test_51NzQvRkLmYb_De7Fh3Jx9PaTuWc_GsHiKoAbCdEfGhwxyz\"";
  EXPECT_THAT(single_problem(config), HasSubstr("the character '\"'"));
}

TEST(ApiKeyTest, RefusesLiveKeyOutsideProduction) {
  Config config = valid_config();
  config.api_key = kLiveKey;
  const std::string line = single_problem(config);
  EXPECT_THAT(line, AllOf(StartsWith("- STRIPE_API_KEY "), HasSubstr("live-mode key"),
                          HasSubstr("ENVIRONMENT is unset (default \"development\")"),
                          HasSubstr("ENVIRONMENT=production")));
}

TEST(ApiKeyTest, RefusesLiveRestrictedKeyInStaging) {
  Config config = valid_config();
  config.api_key = "rk_live_51NzQvRkLmYbDe7Fh3Jx9PaTuWcGsHiKoAbCdEfGhwxyz";
  config.environment = "staging";
  EXPECT_THAT(single_problem(config), HasSubstr("ENVIRONMENT is \"staging\""));
}

TEST(ApiKeyTest, ProductionMustBeSpelledExactly) {
  Config config = valid_config();
  config.api_key = kLiveKey;
  config.environment = "Production";
  EXPECT_THAT(single_problem(config), HasSubstr("live-mode key"));
}

TEST(ApiKeyTest, KeyPastedIntoAnotherSettingIsNotEchoed) {
  Config config = valid_config();
  config.price_id = kTestKey;
  config.charge_by = kTestKey;
  config.customer_map = std::string("alice=") + kTestKey;
  config.api_base = std::string("https://example.com/") + kTestKey + "?x";
  const std::string message = problems_of(config);
  EXPECT_EQ(problem_lines(message).size(), 4u) << message;
}

TEST(ApiKeyTest, UnrelatedSecretKeyInAnotherSettingIsShownRedacted) {
  Config config = valid_config();
  config.price_id = "sk_test_OTHERKEY_0123456789abcd";
  const std::string line = single_problem(config);
  EXPECT_THAT(line, Not(HasSubstr("OTHERKEY")));
  EXPECT_THAT(line, HasSubstr(std::string("sk_test_") + kEllipsis + "abcd"));
}

// ------------------------------------------------------------------------------------------
// Secrets in settings other than the API key

// Every setting that must not hold a secret: all but the two that are secrets by design (the
// webhook secret has its own tests in config_admission_test.cc).
std::vector<std::string> settings_but_the_api_key() {
  std::vector<std::string> names;
  for (const std::string& name : config_variable_names()) {
    if (name != "STRIPE_API_KEY" && name != "STRIPE_WEBHOOK_SECRET") names.push_back(name);
  }
  return names;
}

// A valid configuration read from the environment, with `variable` set to `value`.
Config with_setting(const std::string& variable, const std::string& value) {
  Env env = {{"STRIPE_API_KEY", kTestKey}, {"STRIPE_PRICE_ID", "price_123"}};
  env[variable] = value;
  return config_from_env(lookup_in(env));
}

const std::vector<std::string> kSecrets = {kTestKey, testing::kOtherLiveKey,
                                           testing::kRestrictedKey, testing::kWebhookSecret};

TEST(SecretInSettingTest, AKeyInAnySettingButTheApiKeyIsAProblemShowingItRedacted) {
  for (const std::string& variable : settings_but_the_api_key()) {
    for (const std::string& secret : kSecrets) {
      const std::string message = problems_of(with_setting(variable, secret));
      EXPECT_THAT(message, HasSubstr("- " + variable + " holds what looks like a secret key (" +
                                     Secret::redact_key(secret) + ")"))
          << variable << " = " << Secret::redact_key(secret) << ":\n"
          << message;
      EXPECT_EQ(testing::leaked_secret(message, kSecrets), "") << message;
    }
  }
}

TEST(SecretInSettingTest, AKeyAnywhereInsideAValueIsAProblem) {
  const std::pair<const char*, std::string> cases[] = {
      {"STRIPE_METER_EVENT_NAME", std::string("llm.") + testing::kOtherLiveKey},
      {"STRIPE_METER_MODEL_KEY", std::string("model_") + testing::kRestrictedKey},
      {"ENVIRONMENT", std::string("staging ") + testing::kOtherLiveKey},
      {"STRIPE_CUSTOMER_MAP", std::string("alice=cus_1,") + testing::kRestrictedKey + "=cus_2"},
      {"STRIPE_API_BASE", std::string("https://example.com/") + testing::kWebhookSecret},
      {"STRIPE_OUTBOX_PATH", std::string("/tmp/") + kTestKey + ".db"},
  };
  for (const auto& [variable, value] : cases) {
    EXPECT_THAT(single_problem(with_setting(variable, value)),
                StartsWith(std::string("- ") + variable + " holds what looks like a secret key ("))
        << variable;
  }
}

TEST(SecretInSettingTest, ASettingHoldingAKeyIsReportedOnceAndNotCheckedFurther) {
  Config config = valid_config();
  config.price_id = testing::kOtherLiveKey;  // neither "must be price_…" nor "is required"
  EXPECT_EQ(single_problem(config),
            "- STRIPE_PRICE_ID holds what looks like a secret key (" +
                Secret::redact_key(testing::kOtherLiveKey) +
                "); a secret key belongs in STRIPE_API_KEY only, and a setting that holds one is "
                "neither used nor logged");
}

TEST(SecretInSettingTest, APublishableKeyOrAnIdContainingAPrefixIsNoSecret) {
  Config config = valid_config();
  config.billing_mode = "meter_events";
  config.meter_event_name = "pk_test_51NzQvRkLmYb_De7Fh3Jx9PaTuWc";
  config.meter_model_key = "risk_test_model";
  const FinalizedConfig out = finalized(config);
  EXPECT_EQ(out.dimensions()[0].meter_event_name, "pk_test_51NzQvRkLmYb_De7Fh3Jx9PaTuWc");
  EXPECT_EQ(out.meter_model_key(), "risk_test_model");
}

// Values a setting may hold a secret in: where it starts, after text, inside a URL, a path or a map
// entry, past the 80 characters a message quotes, with a newline or quotes around it.
std::vector<std::string> placements_of(const std::string& secret) {
  return {secret,
          "x " + secret,
          "llm." + secret,
          "alice=" + secret,
          secret + "=cus_1",
          "alice=cus_1, " + secret + " =cus_2",
          std::string(75, 'a') + " " + secret,
          std::string(79, 'a') + "/" + secret,
          "https://example.com/" + secret,
          "http://" + secret + ".example.com",
          "https://" + secret + "@api.stripe.com",
          "/nonexistent-stripe-billing-dir/" + secret + "/o.db",
          secret + "\n",
          "\"" + secret + "\"",
          secret + "-" + secret};
}

TEST(SecretInSettingTest, NoProblemMessageShowsASecretWhereverItIsPlaced) {
  // The configured key (a live one outside production too), absent, or malformed around another
  // secret.
  const std::vector<std::optional<std::string>> api_keys = {
      kTestKey, testing::kOtherLiveKey, std::nullopt, std::string("x") + testing::kOtherLiveKey,
      std::string(kTestKey) + " " + testing::kRestrictedKey};
  std::size_t scanned = 0;
  std::size_t leaking = 0;
  std::string first_leak;
  for (const auto& api_key : api_keys) {
    for (const std::string& variable : settings_but_the_api_key()) {
      for (const std::string& secret : kSecrets) {
        for (const std::string& value : placements_of(secret)) {
          Config config = with_setting(variable, value);
          config.api_key = api_key;
          const Expected<FinalizedConfig> result = finalize_config(config);
          if (result) continue;  // counted below: every one of them must be refused
          ++scanned;
          if (!testing::leaked_secret(result.error().message, kSecrets).empty() && !leaking++) {
            first_leak = result.error().message;
          }
        }
      }
    }
  }
  EXPECT_EQ(leaking, 0u) << "the first of them:\n" << first_leak;
  EXPECT_EQ(scanned, api_keys.size() * settings_but_the_api_key().size() * kSecrets.size() *
                         placements_of(kTestKey).size());
}

TEST(SecretInSettingTest, NoProblemMessageShowsAMalformedApiKey) {
  for (const std::string& secret : kSecrets) {
    for (const std::string& value : placements_of(secret)) {
      Config config = valid_config();
      config.api_key = value;
      const Expected<FinalizedConfig> result = finalize_config(config);
      if (result) continue;  // the key itself, well formed
      EXPECT_EQ(testing::leaked_secret(result.error().message, kSecrets), "")
          << result.error().message;
    }
  }
}

// ------------------------------------------------------------------------------------------
// Price, charge-by, quantity

TEST(PriceIdTest, IsRequired) {
  Config config = valid_config();
  config.price_id.reset();
  EXPECT_THAT(single_problem(config), StartsWith("- STRIPE_PRICE_ID is required"));
}

TEST(PriceIdTest, MustBePricePrefixAndWordCharacters) {
  for (const std::string price : {"prod_123", "price_", "price_12 3", "price-123", "PRICE_1"}) {
    Config config = valid_config();
    config.price_id = price;
    EXPECT_THAT(single_problem(config), StartsWith("- STRIPE_PRICE_ID must be price_")) << price;
  }
}

TEST(ChargeByTest, AcceptsEachChoice) {
  const std::pair<const char*, ChargeBy> choices[] = {{"end_user_id", ChargeBy::kEndUserId},
                                                      {"user_id", ChargeBy::kUserId},
                                                      {"team_id", ChargeBy::kTeamId}};
  for (const auto& [text, value] : choices) {
    Config config = valid_config();
    config.charge_by = text;
    EXPECT_EQ(finalized(config).charge_by(), value) << text;
    EXPECT_STREQ(to_string(value), text);
  }
}

TEST(ChargeByTest, RefusesAnythingElseNamingTheChoices) {
  Config config = valid_config();
  config.charge_by = "End_User_Id";
  EXPECT_EQ(single_problem(config),
            "- STRIPE_CHARGE_BY must be one of end_user_id, user_id, team_id; got "
            "\"End_User_Id\"");
}

TEST(TrustRequestUserTest, IsOffByDefault) {
  EXPECT_EQ(finalized(valid_config()).trust_request_user(), RequestUserTrust::kOff);
}

TEST(TrustRequestUserTest, AcceptsEachChoice) {
  const std::pair<const char*, RequestUserTrust> choices[] = {
      {"off", RequestUserTrust::kOff},
      {"lookup", RequestUserTrust::kLookup},
      {"customer_id", RequestUserTrust::kCustomerId}};
  for (const auto& [text, value] : choices) {
    Config config = valid_config();
    config.trust_request_user = text;
    EXPECT_EQ(finalized(config).trust_request_user(), value) << text;
    EXPECT_STREQ(to_string(value), text);
  }
}

TEST(TrustRequestUserTest, RefusesAnythingElseNamingTheChoices) {
  Config config = valid_config();
  config.trust_request_user = "true";
  EXPECT_EQ(single_problem(config),
            "- STRIPE_TRUST_REQUEST_USER must be one of off, lookup, customer_id; got \"true\"");
}

TEST(TrustRequestUserTest, TheSummaryNamesItWhenTheRequestsUserIsTrusted) {
  EXPECT_THAT(finalized(valid_config()).summary(), Not(HasSubstr("trust_request_user")));
  Config config = valid_config();
  config.trust_request_user = "customer_id";
  EXPECT_THAT(finalized(config).summary(),
              HasSubstr(" charge_by=end_user_id trust_request_user=customer_id api_base="));
}

TEST(QuantityTest, AcceptsEachChoice) {
  const std::pair<const char*, QuantitySource> choices[] = {
      {"total_tokens", QuantitySource::kTotalTokens},
      {"prompt_tokens", QuantitySource::kPromptTokens},
      {"completion_tokens", QuantitySource::kCompletionTokens}};
  for (const auto& [text, value] : choices) {
    Config config = valid_config();
    config.quantity = text;
    EXPECT_EQ(finalized(config).quantity_source(), value) << text;
    EXPECT_STREQ(to_string(value), text);
  }
}

TEST(QuantityTest, RefusesAnythingElse) {
  Config config = valid_config();
  config.quantity = "tokens";
  EXPECT_THAT(single_problem(config),
              StartsWith("- STRIPE_QUANTITY must be one of total_tokens, prompt_tokens, "
                         "completion_tokens"));
}

// ------------------------------------------------------------------------------------------
// API base

std::string api_base_after(const std::string& base) {
  Config config = valid_config();
  config.api_base = base;
  return finalized(config).api_base();
}

std::string api_base_problem(const std::string& base) {
  Config config = valid_config();
  config.api_base = base;
  return single_problem(config);
}

TEST(ApiBaseTest, RemovesTrailingSlashes) {
  EXPECT_EQ(api_base_after("https://api.stripe.com/"), "https://api.stripe.com");
  EXPECT_EQ(api_base_after("https://proxy.internal/stripe//"), "https://proxy.internal/stripe");
}

TEST(ApiBaseTest, KeepsPortAndPathPrefix) {
  EXPECT_EQ(api_base_after("https://proxy.internal:8443/stripe"),
            "https://proxy.internal:8443/stripe");
}

TEST(ApiBaseTest, LowercasesTheScheme) {
  EXPECT_EQ(api_base_after("HTTPS://api.stripe.com"), "https://api.stripe.com");
}

TEST(ApiBaseTest, AllowsPlainHttpOnlyForLoopbackHosts) {
  EXPECT_EQ(api_base_after("http://127.0.0.1:12111"), "http://127.0.0.1:12111");
  EXPECT_EQ(api_base_after("http://localhost:12111/"), "http://localhost:12111");
  EXPECT_EQ(api_base_after("http://[::1]:8080"), "http://[::1]:8080");
}

TEST(ApiBaseTest, RefusesPlainHttpForOtherHosts) {
  for (const std::string base : {"http://api.stripe.com", "http://10.0.0.1", "http://0.0.0.0",
                                 "http://localhost.evil.com", "http://[::2]"}) {
    EXPECT_THAT(api_base_problem(base), AllOf(StartsWith("- STRIPE_API_BASE must use https"),
                                              HasSubstr("127.0.0.1, localhost or [::1]")))
        << base;
  }
}

TEST(ApiBaseTest, RefusesRelativeUrl) {
  EXPECT_THAT(api_base_problem("api.stripe.com"),
              StartsWith("- STRIPE_API_BASE must be an absolute URL"));
}

TEST(ApiBaseTest, RefusesOtherSchemes) {
  EXPECT_THAT(api_base_problem("ftp://api.stripe.com"),
              StartsWith("- STRIPE_API_BASE must be an https:// URL"));
}

TEST(ApiBaseTest, RefusesUrlWithoutHost) {
  for (const std::string base : {"https://", "https:///v1", "https://:443", "https://a b.com"}) {
    EXPECT_THAT(api_base_problem(base), StartsWith("- STRIPE_API_BASE ")) << base;
  }
  EXPECT_THAT(api_base_problem("https:///v1"), HasSubstr("must name a host"));
}

TEST(ApiBaseTest, RefusesInvalidPort) {
  for (const std::string base : {"https://api.stripe.com:", "https://api.stripe.com:0",
                                 "https://api.stripe.com:65536", "https://api.stripe.com:x"}) {
    EXPECT_THAT(api_base_problem(base), HasSubstr("invalid port")) << base;
  }
}

TEST(ApiBaseTest, RefusesQueryAndFragment) {
  EXPECT_THAT(api_base_problem("https://api.stripe.com/?a=b"), HasSubstr("query (?)"));
  EXPECT_THAT(api_base_problem("https://api.stripe.com#top"), HasSubstr("fragment (#)"));
}

TEST(ApiBaseTest, RefusesUserInfoWithoutEchoingIt) {
  const std::string line = api_base_problem("https://admin:hunter2@api.stripe.com");
  EXPECT_THAT(line, HasSubstr("must not contain a user name or password"));
  EXPECT_THAT(line, Not(HasSubstr("hunter2")));
}

TEST(ApiBaseTest, RefusesWhitespace) {
  EXPECT_THAT(api_base_problem("https://api.stripe.com "),
              StartsWith("- STRIPE_API_BASE contains a space"));
}

// ------------------------------------------------------------------------------------------
// API version

TEST(ApiVersionTest, AcceptsDateWithOrWithoutName) {
  for (const std::string version :
       {"2024-06-20", "2025-02-24.acacia", "2020-08-27", "2025-03-30.x_1"}) {
    Config config = valid_config();
    config.api_version = version;
    EXPECT_EQ(finalized(config).api_version(), version);
  }
}

TEST(ApiVersionTest, RefusesOtherShapes) {
  for (const std::string version :
       {"latest", "2025-2-24", "2025-02-24.", "2025-02-24acacia", "2025-13-01", "2025-02-00",
        "2025-02-24.Acacia", "2025/02/24", "2025-02-24.acacia "}) {
    Config config = valid_config();
    config.api_version = version;
    EXPECT_THAT(single_problem(config),
                StartsWith("- STRIPE_API_VERSION must look like YYYY-MM-DD or YYYY-MM-DD.name"))
        << version;
  }
}

TEST(ApiVersionTest, RefusesBasilAndLaterBecauseUsageRecordsWereRemoved) {
  for (const std::string version :
       {"2025-03-31.basil", "2025-03-31", "2025-09-30.clover", "2026-01-01"}) {
    Config config = valid_config();
    config.api_version = version;
    EXPECT_THAT(single_problem(config),
                AllOf(StartsWith("- STRIPE_API_VERSION \"" + version + "\" is too new"),
                      HasSubstr("2025-03-31.basil removed usage records"),
                      HasSubstr("pin 2025-02-24.acacia or older")))
        << version;
  }
}

// ------------------------------------------------------------------------------------------
// Numbers

std::string number_problem(std::optional<std::string> Config::*field, const std::string& text) {
  Config config = valid_config();
  config.*field = text;
  return single_problem(config);
}

TEST(NumberTest, AcceptsOnlyDecimalDigits) {
  for (const std::string text : {"+5", "-5", " 5", "5 ", "1e3", "0x10", "5.0", "1_000", "５"}) {
    EXPECT_THAT(number_problem(&Config::queue_capacity, text),
                StartsWith("- STRIPE_QUEUE_CAPACITY must be a whole number written with decimal "
                           "digits only"))
        << text;
  }
}

TEST(NumberTest, AcceptsLeadingZeros) {
  Config config = valid_config();
  config.queue_capacity = "007";
  EXPECT_EQ(finalized(config).queue_capacity(), 7u);
}

TEST(NumberTest, RefusesValuesThatOverflow) {
  for (const std::string text : {"18446744073709551616", "99999999999999999999999999"}) {
    EXPECT_THAT(number_problem(&Config::queue_capacity, text),
                StartsWith("- STRIPE_QUEUE_CAPACITY must be from 1 to 10000000; got"))
        << text;
  }
}

TEST(MaxQuantityTest, AcceptsStripesLimitOfFifteenDigits) {
  Config config = valid_config();
  config.max_quantity = "999999999999999";
  EXPECT_EQ(finalized(config).max_quantity(), 999'999'999'999'999);
}

// Above 10^15 prompt + completion tokens, or a batch's sum, could overflow an int64, and Stripe
// refuses meter values of more than 15 significant digits anyway.
TEST(MaxQuantityTest, RefusesMoreThanFifteenDigitsSayingWhy) {
  for (const std::string text :
       {"1000000000000000", "4611686018427387905", "9223372036854775807", "9223372036854775808"}) {
    EXPECT_THAT(number_problem(&Config::max_quantity, text),
                AllOf(StartsWith("- STRIPE_MAX_QUANTITY must be from 1 to 999999999999999; got \"" +
                                 text + "\""),
                      HasSubstr("15 significant digits")))
        << text;
  }
}

TEST(MaxQuantityTest, MustBePositive) {
  EXPECT_THAT(number_problem(&Config::max_quantity, "0"),
              StartsWith("- STRIPE_MAX_QUANTITY must be from 1 to"));
}

TEST(LookupTtlTest, AcceptsZero) {
  Config config = valid_config();
  config.lookup_cache_ttl = "0";
  config.lookup_miss_ttl = "0";
  const FinalizedConfig out = finalized(config);
  EXPECT_EQ(out.lookup_cache_ttl(), std::chrono::seconds(0));
  EXPECT_EQ(out.lookup_miss_ttl(), std::chrono::seconds(0));
}

TEST(LookupTtlTest, MissTtlMayEqualCacheTtl) {
  Config config = valid_config();
  config.lookup_cache_ttl = "30";
  config.lookup_miss_ttl = "30";
  EXPECT_TRUE(finalize_config(config).has_value());
}

TEST(LookupTtlTest, MissTtlMustNotExceedCacheTtl) {
  Config config = valid_config();
  config.lookup_cache_ttl = "10";
  EXPECT_EQ(single_problem(config),
            "- STRIPE_LOOKUP_MISS_TTL (30 s) must not exceed STRIPE_LOOKUP_CACHE_TTL (10 s)");
}

TEST(LookupTtlTest, RefusesMoreThanAYear) {
  EXPECT_THAT(number_problem(&Config::lookup_cache_ttl, "31536001"),
              StartsWith("- STRIPE_LOOKUP_CACHE_TTL must be from 0 to 31536000 (seconds)"));
}

TEST(TimeoutTest, MustBePositive) {
  EXPECT_THAT(number_problem(&Config::timeout_ms, "0"),
              StartsWith("- STRIPE_TIMEOUT_MS must be from 1 to 3600000 (milliseconds)"));
  EXPECT_THAT(number_problem(&Config::connect_timeout_ms, "0"),
              StartsWith("- STRIPE_CONNECT_TIMEOUT_MS must be from 1 to"));
}

TEST(TimeoutTest, ConnectTimeoutMustNotExceedTotal) {
  Config config = valid_config();
  config.connect_timeout_ms = "30000";
  EXPECT_EQ(single_problem(config),
            "- STRIPE_CONNECT_TIMEOUT_MS (30000 ms) must not exceed STRIPE_TIMEOUT_MS (20000 ms)");
}

TEST(TimeoutTest, ConnectTimeoutMayEqualTotal) {
  Config config = valid_config();
  config.connect_timeout_ms = "20000";
  EXPECT_TRUE(finalize_config(config).has_value());
}

TEST(QueueCapacityTest, AcceptsOneToTenMillion) {
  for (const std::string text : {"1", "10000000"}) {
    Config config = valid_config();
    config.queue_capacity = text;
    EXPECT_EQ(finalized(config).queue_capacity(), std::stoul(text));
  }
  EXPECT_THAT(number_problem(&Config::queue_capacity, "0"),
              StartsWith("- STRIPE_QUEUE_CAPACITY must be from 1 to 10000000"));
  EXPECT_THAT(number_problem(&Config::queue_capacity, "10000001"),
              StartsWith("- STRIPE_QUEUE_CAPACITY must be from 1 to 10000000"));
}

// ------------------------------------------------------------------------------------------
// Delivery engine

// Each integer setting of the delivery engine: its field, accessor value in its own unit, and
// documented default and bounds.
struct DeliveryRule {
  std::optional<std::string> Config::*field;
  const char* variable;
  const char* unit;
  std::int64_t default_value;
  std::int64_t min;
  std::int64_t max;
  std::int64_t (*read)(const FinalizedConfig&);
};

const DeliveryRule kDeliveryRules[] = {
    {&Config::commit_interval_ms, "STRIPE_COMMIT_INTERVAL_MS", " (milliseconds)", 50, 1, 10'000,
     [](const FinalizedConfig& c) -> std::int64_t { return c.commit_interval().count(); }},
    {&Config::sync_timeout_ms, "STRIPE_SYNC_TIMEOUT_MS", " (milliseconds)", 5'000, 1, 600'000,
     [](const FinalizedConfig& c) -> std::int64_t { return c.sync_timeout().count(); }},
    {&Config::aggregation_window_ms, "STRIPE_AGGREGATION_WINDOW_MS", " (milliseconds)", 2'000, 0,
     3'600'000,
     [](const FinalizedConfig& c) -> std::int64_t { return c.aggregation_window().count(); }},
    {&Config::max_backoff_s, "STRIPE_MAX_BACKOFF_S", " (seconds)", 300, 1, 86'400,
     [](const FinalizedConfig& c) -> std::int64_t { return c.max_backoff().count(); }},
    {&Config::max_delivery_age_s, "STRIPE_MAX_DELIVERY_AGE_S", " (seconds)", 82'800, 60, 86'400,
     [](const FinalizedConfig& c) -> std::int64_t { return c.max_delivery_age().count(); }},
    {&Config::sender_threads, "STRIPE_SENDER_THREADS", "", 4, 1, 64,
     [](const FinalizedConfig& c) -> std::int64_t { return c.sender_threads(); }},
    {&Config::park_retry_s, "STRIPE_PARK_RETRY_S", " (seconds)", 60, 1, 86'400,
     [](const FinalizedConfig& c) -> std::int64_t { return c.park_retry().count(); }},
    {&Config::ledger_retention_days, "STRIPE_LEDGER_RETENTION_DAYS", " (days)", 90, 1, 3'650,
     [](const FinalizedConfig& c) -> std::int64_t { return c.ledger_retention().count() / 24; }},
    {&Config::auth_probe_s, "STRIPE_AUTH_PROBE_S", " (seconds)", 30, 1, 3'600,
     [](const FinalizedConfig& c) -> std::int64_t { return c.auth_probe_interval().count(); }},
};

TEST(DeliverySettingsTest, DefaultsAreDocumented) {
  const FinalizedConfig out = finalized(valid_config());
  for (const DeliveryRule& rule : kDeliveryRules) {
    EXPECT_EQ(rule.read(out), rule.default_value) << rule.variable;
  }
}

TEST(DeliverySettingsTest, AcceptsBothBounds) {
  for (const DeliveryRule& rule : kDeliveryRules) {
    for (const std::int64_t value : {rule.min, rule.max}) {
      Config config = valid_config();
      config.*rule.field = std::to_string(value);
      EXPECT_EQ(rule.read(finalized(config)), value) << rule.variable;
    }
  }
}

TEST(DeliverySettingsTest, RefusesValuesOutsideTheBounds) {
  for (const DeliveryRule& rule : kDeliveryRules) {
    const std::string expected = "- " + std::string(rule.variable) + " must be from " +
                                 std::to_string(rule.min) + " to " + std::to_string(rule.max) +
                                 rule.unit + "; got ";
    EXPECT_THAT(number_problem(rule.field, std::to_string(rule.max + 1)), StartsWith(expected));
    if (rule.min > 0) {
      EXPECT_THAT(number_problem(rule.field, std::to_string(rule.min - 1)), StartsWith(expected));
    }
  }
}

TEST(DeliverySettingsTest, RefusesValuesThatAreNotWholeNumbers) {
  for (const DeliveryRule& rule : kDeliveryRules) {
    for (const std::string text : {"-1", "1.5", "ten", " 5"}) {
      EXPECT_THAT(number_problem(rule.field, text),
                  StartsWith("- " + std::string(rule.variable) + " must be a whole number"))
          << rule.variable << " " << text;
    }
  }
}

TEST(DeliverySettingsTest, EmptyValueTakesTheDefault) {
  Config config = valid_config();
  for (const DeliveryRule& rule : kDeliveryRules) config.*rule.field = "";
  config.outbox_path = "";
  config.durability = "";
  config.rate_limit = "";
  const FinalizedConfig out = finalized(config);
  for (const DeliveryRule& rule : kDeliveryRules) {
    EXPECT_EQ(rule.read(out), rule.default_value) << rule.variable;
  }
  EXPECT_EQ(out.outbox_path(), kDefaultOutboxPath);
  EXPECT_EQ(out.durability(), Durability::kSync);
  EXPECT_EQ(out.rate_limit(), 25.0);
}

TEST(MaxDeliveryAgeTest, MoreThanADaySaysIdempotencyKeysMayBePruned) {
  const std::string line = number_problem(&Config::max_delivery_age_s, "86401");
  EXPECT_EQ(line,
            "- STRIPE_MAX_DELIVERY_AGE_S must be from 60 to 86400 (seconds); got \"86401\": "
            "Stripe may prune idempotency keys after 24 hours, so retrying an older event could "
            "bill it twice");
  EXPECT_THAT(number_problem(&Config::max_delivery_age_s, "99999999999999999999999"),
              HasSubstr("could bill it twice"));
}

TEST(MaxDeliveryAgeTest, LessThanAMinuteDoesNotMentionIdempotency) {
  EXPECT_EQ(number_problem(&Config::max_delivery_age_s, "59"),
            "- STRIPE_MAX_DELIVERY_AGE_S must be from 60 to 86400 (seconds); got \"59\"");
}

TEST(DurabilityTest, AcceptsEachChoice) {
  const std::pair<const char*, Durability> choices[] = {{"async", Durability::kAsync},
                                                        {"sync", Durability::kSync}};
  for (const auto& [text, value] : choices) {
    Config config = valid_config();
    config.durability = text;
    EXPECT_EQ(finalized(config).durability(), value) << text;
    EXPECT_STREQ(to_string(value), text);
  }
}

TEST(DurabilityTest, RefusesAnythingElse) {
  for (const std::string text : {"Sync", "fsync", "durable", "true"}) {
    Config config = valid_config();
    config.durability = text;
    EXPECT_EQ(single_problem(config),
              "- STRIPE_DURABILITY must be one of sync, async; got \"" + text + "\"");
  }
}

double rate_limit_of(const Config& config) { return finalized(config).rate_limit(); }

TEST(RateLimitTest, DefaultsTo25ForTestKeysAnd100ForLiveKeys) {
  EXPECT_EQ(rate_limit_of(valid_config()), 25.0);
  Config restricted = valid_config();
  restricted.api_key = "rk_test_abc";
  EXPECT_EQ(rate_limit_of(restricted), 25.0);
  for (const std::string key : {kLiveKey, "rk_live_abc"}) {
    Config live = valid_config();
    live.api_key = key;
    live.environment = "production";
    EXPECT_EQ(rate_limit_of(live), 100.0) << key;
  }
}

TEST(RateLimitTest, GivenValueWinsOverTheModeDefault) {
  Config live = valid_config();
  live.api_key = kLiveKey;
  live.environment = "production";
  live.rate_limit = "40";
  EXPECT_EQ(rate_limit_of(live), 40.0);
}

TEST(RateLimitTest, AcceptsDecimals) {
  const std::pair<const char*, double> cases[] = {
      {"12.5", 12.5},        {"0.5", 0.5},     {"1", 1.0},      {"10000", 10'000.0},
      {"10000.0", 10'000.0}, {"007.25", 7.25}, {"0.001", 0.001}};
  for (const auto& [text, value] : cases) {
    Config config = valid_config();
    config.rate_limit = text;
    EXPECT_DOUBLE_EQ(rate_limit_of(config), value) << text;
  }
}

TEST(RateLimitTest, RefusesZeroAndMoreThanTenThousand) {
  for (const std::string text :
       {"0", "0.0", "000", "10000.5", "10001", "99999999999999999999999999999999999"}) {
    EXPECT_THAT(number_problem(&Config::rate_limit, text),
                StartsWith("- STRIPE_RATE_LIMIT must be more than 0 and at most 10000 "
                           "(requests per second"))
        << text;
  }
}

TEST(RateLimitTest, RefusesOtherShapes) {
  for (const std::string text :
       {"-5", "+5", ".5", "5.", "1e3", "12,5", " 5", "5 ", "inf", "nan", "1.2.3", "0x10"}) {
    EXPECT_THAT(number_problem(&Config::rate_limit, text),
                StartsWith("- STRIPE_RATE_LIMIT must be a number of requests per second "
                           "written with decimal digits and an optional fraction"))
        << text;
  }
}

TEST(OutboxPathTest, AcceptsAFileInAnExistingDirectory) {
  const testing::TempDir dir;
  Config config = valid_config();
  config.outbox_path = dir.file("outbox.db");
  EXPECT_EQ(finalized(config).outbox_path(), dir.file("outbox.db"));
  EXPECT_FALSE(std::filesystem::exists(dir.file("outbox.db"))) << "must not create the file";
}

TEST(OutboxPathTest, AcceptsAnExistingFile) {
  const testing::TempDir dir;
  std::ofstream(dir.file("outbox.db")) << "";
  Config config = valid_config();
  config.outbox_path = dir.file("outbox.db");
  EXPECT_EQ(finalized(config).outbox_path(), dir.file("outbox.db"));
}

TEST(OutboxPathTest, AcceptsRelativePathsAndMemory) {
  for (const std::string path : {"outbox.db", "./outbox.db", ":memory:"}) {
    Config config = valid_config();
    config.outbox_path = path;
    EXPECT_EQ(finalized(config).outbox_path(), path);
  }
}

TEST(OutboxPathTest, AcceptsAFileInTheRootDirectory) {
  Config config = valid_config();
  config.outbox_path = "/outbox-never-created.db";
  EXPECT_EQ(finalized(config).outbox_path(), "/outbox-never-created.db");
}

TEST(OutboxPathTest, RefusesAMissingDirectory) {
  const testing::TempDir dir;
  Config config = valid_config();
  const std::string missing = dir.file("absent");
  config.outbox_path = missing + "/outbox.db";
  EXPECT_EQ(single_problem(config),
            "- STRIPE_OUTBOX_PATH \"" + missing + "/outbox.db\": its directory \"" + missing +
                "\" cannot be used (No such file or directory); the directory must exist (the "
                "library creates the file, not the directory)");
  EXPECT_FALSE(std::filesystem::exists(missing)) << "must not create the directory";
}

TEST(OutboxPathTest, RefusesADirectoryThatIsAFile) {
  const testing::TempDir dir;
  std::ofstream(dir.file("plain")) << "x";
  Config config = valid_config();
  config.outbox_path = dir.file("plain") + "/outbox.db";
  EXPECT_THAT(single_problem(config), StartsWith("- STRIPE_OUTBOX_PATH "));
}

TEST(OutboxPathTest, RefusesADirectory) {
  const testing::TempDir dir;
  for (const std::string& path : {dir.path().string(), dir.path().string() + "/"}) {
    Config config = valid_config();
    config.outbox_path = path;
    EXPECT_THAT(single_problem(config),
                StartsWith("- STRIPE_OUTBOX_PATH must name a file, not a directory"))
        << path;
  }
}

TEST(OutboxPathTest, RefusesANulByte) {
  Config config = valid_config();
  config.outbox_path = std::string("out\0box.db", 10);
  EXPECT_EQ(single_problem(config),
            "- STRIPE_OUTBOX_PATH contains a NUL byte at character 4 of 10; it must be a file "
            "path or :memory:");
}

TEST(OutboxPathTest, KeyPastedIntoThePathIsNotEchoed) {
  Config config = valid_config();
  config.outbox_path = std::string("/nonexistent-stripe-billing-dir/") + kTestKey + "/o.db";
  EXPECT_THAT(single_problem(config), StartsWith("- STRIPE_OUTBOX_PATH "));
}

// ------------------------------------------------------------------------------------------
// Customer metadata key and static map

TEST(CustomerMetadataKeyTest, AcceptsUpToFortyWordCharactersOrDashes) {
  Config config = valid_config();
  config.customer_metadata_key = std::string(39, 'a') + "-";
  EXPECT_EQ(finalized(config).customer_metadata_key(), std::string(39, 'a') + "-");
}

TEST(CustomerMetadataKeyTest, RefusesFortyOneCharacters) {
  Config config = valid_config();
  config.customer_metadata_key = std::string(41, 'a');
  EXPECT_THAT(single_problem(config), StartsWith("- STRIPE_CUSTOMER_METADATA_KEY must be 1 to 40"));
}

TEST(CustomerMetadataKeyTest, RefusesOtherCharacters) {
  for (const std::string key : {"user id", "meta[key]", "a.b"}) {
    Config config = valid_config();
    config.customer_metadata_key = key;
    EXPECT_THAT(single_problem(config), StartsWith("- STRIPE_CUSTOMER_METADATA_KEY ")) << key;
  }
}

std::map<std::string, StaticTarget> customer_map_of(const std::string& text) {
  Config config = valid_config();
  config.customer_map = text;
  return finalized(config).customer_map();
}

std::string customer_map_problems(const std::string& text) {
  Config config = valid_config();
  config.customer_map = text;
  return problems_of(config);
}

TEST(CustomerMapTest, MapsValuesToCustomersAndSubscriptionItems) {
  const auto map = customer_map_of("alice=cus_Abc123,team-42=si_Xyz_9");
  ASSERT_EQ(map.size(), 2u);
  EXPECT_EQ(map.at("alice").customer_id, "cus_Abc123");
  EXPECT_EQ(map.at("alice").subscription_item_id, "");
  EXPECT_EQ(map.at("team-42").customer_id, "");
  EXPECT_EQ(map.at("team-42").subscription_item_id, "si_Xyz_9");
}

TEST(CustomerMapTest, IgnoresSpacesAroundEntries) {
  const auto map = customer_map_of(" alice = cus_1 , bob=si_2 ");
  ASSERT_EQ(map.size(), 2u);
  EXPECT_EQ(map.at("alice").customer_id, "cus_1");
  EXPECT_EQ(map.at("bob").subscription_item_id, "si_2");
}

TEST(CustomerMapTest, KeyMayBeAnyTextWithoutEqualsOrComma) {
  const auto map = customer_map_of("user@example.com=cus_1,team:42/x y=si_2");
  EXPECT_EQ(map.at("user@example.com").customer_id, "cus_1");
  EXPECT_EQ(map.at("team:42/x y").subscription_item_id, "si_2");
}

TEST(CustomerMapTest, RefusesEntryWithoutEquals) {
  EXPECT_THAT(customer_map_problems("alice"),
              HasSubstr("- STRIPE_CUSTOMER_MAP entry 1 \"alice\" must be value=cus_"));
}

TEST(CustomerMapTest, RefusesEntryWithEmptyKey) {
  EXPECT_THAT(customer_map_problems("=cus_1"),
              HasSubstr("- STRIPE_CUSTOMER_MAP entry 1 \"=cus_1\" has nothing before '='"));
}

TEST(CustomerMapTest, RefusesTargetThatIsNotACustomerOrSubscriptionItem) {
  for (const std::string target : {"sub_1", "cus_", "si_", "cus_1-2", "", "cus_1=x"}) {
    EXPECT_THAT(customer_map_problems("alice=" + target),
                HasSubstr("- STRIPE_CUSTOMER_MAP entry 1 (\"alice\") must map to a customer "
                          "(cus_\xE2\x80\xA6) or a subscription item (si_\xE2\x80\xA6)"))
        << target;
  }
}

TEST(CustomerMapTest, RefusesEmptyEntry) {
  EXPECT_THAT(customer_map_problems("alice=cus_1,,bob=cus_2"),
              HasSubstr("- STRIPE_CUSTOMER_MAP entry 2 is empty"));
  EXPECT_THAT(customer_map_problems("alice=cus_1,"),
              HasSubstr("- STRIPE_CUSTOMER_MAP entry 2 is empty"));
}

TEST(CustomerMapTest, RefusesDuplicateKeys) {
  const std::string message = customer_map_problems("alice=cus_1,bob=cus_2,alice=si_3,alice=cus_4");
  EXPECT_EQ(problem_lines(message),
            std::vector<std::string>{"- STRIPE_CUSTOMER_MAP maps \"alice\" more than once"});
}

TEST(CustomerMapTest, ReportsEveryBadEntry) {
  const std::string message = customer_map_problems("alice,bob=sub_1,carol=cus_3");
  const std::vector<std::string> lines = problem_lines(message);
  ASSERT_EQ(lines.size(), 2u) << message;
  EXPECT_THAT(lines[0], StartsWith("- STRIPE_CUSTOMER_MAP entry 1 "));
  EXPECT_THAT(lines[1], StartsWith("- STRIPE_CUSTOMER_MAP entry 2 "));
}

// ------------------------------------------------------------------------------------------
// Environment and summary

TEST(EnvironmentTest, IsKeptAsGiven) {
  Config config = valid_config();
  config.environment = "production";
  EXPECT_EQ(finalized(config).environment(), "production");
}

TEST(SummaryTest, ShowsModeRedactedKeyAndSettings) {
  Config config = valid_config();
  EXPECT_EQ(finalized(config).summary(),
            std::string("mode=usage_records key=sk_test_") + kEllipsis +
                "wxyz (test) price=price_123 charge_by=end_user_id "
                "api_base=https://api.stripe.com api_version=2025-02-24.acacia "
                "durability=sync outbox=stripe-billing-outbox.db window=2000ms rate=25/s");
}

TEST(SummaryTest, ShowsTheDeliverySettings) {
  Config config = valid_config();
  config.durability = "sync";
  config.outbox_path = ":memory:";
  config.aggregation_window_ms = "0";
  config.rate_limit = "12.5";
  EXPECT_THAT(finalized(config).summary(),
              HasSubstr(" durability=sync outbox=:memory: window=0ms rate=12.5/s"));
  config.api_key = kLiveKey;
  config.environment = "production";
  config.rate_limit.reset();
  EXPECT_THAT(finalized(config).summary(), HasSubstr(" rate=100/s"));
}

TEST(SummaryTest, MarksLiveKeys) {
  Config config = valid_config();
  config.api_key = kLiveKey;
  config.environment = "production";
  config.charge_by = "team_id";
  const std::string summary = finalized(config).summary();
  EXPECT_THAT(summary, HasSubstr(std::string("key=sk_live_") + kEllipsis + "wxyz (live)"));
  EXPECT_THAT(summary, HasSubstr("charge_by=team_id"));
  EXPECT_THAT(summary, Not(HasSubstr(kLiveKey)));
}

TEST(SummaryTest, NeverContainsAKeyGluedToTheEndOfAWord) {
  // Accepted, since "llmsk_test_…" is no key as written; the summary redacts it all the same.
  Config config = valid_config();
  config.billing_mode = "dual";
  config.meter_event_name = std::string("llm") + testing::kOtherLiveKey;
  const std::string summary = finalized(config).summary();
  EXPECT_THAT(summary, HasSubstr(std::string(" meter=llmsk_live_") + kEllipsis + "live "));
  EXPECT_EQ(testing::leaked_secret(summary, {testing::kOtherLiveKey}), "") << summary;
}

TEST(SummaryTest, NeverContainsTheKey) {
  EXPECT_THAT(finalized(valid_config()).summary(), Not(HasSubstr(kTestKey)));
}

// ------------------------------------------------------------------------------------------
// Billing modes, dimensions and meters

Config meter_config(const char* mode = "meter_events") {
  Config config;
  config.api_key = kTestKey;
  config.billing_mode = mode;
  config.meter_event_name = "llm_tokens";
  return config;
}

TEST(BillingModeTest, UsageRecordsIsTheDefaultAndNeedsAPrice) {
  const FinalizedConfig config = finalized(valid_config());
  EXPECT_EQ(config.billing_mode(), BillingMode::kUsageRecords);
  EXPECT_TRUE(config.uses_usage_records());
  EXPECT_FALSE(config.uses_meters());
  ASSERT_EQ(config.dimensions().size(), 1u);
  EXPECT_EQ(config.dimensions()[0].name, "total_tokens");
  EXPECT_EQ(config.dimensions()[0].price_id, "price_123");
  EXPECT_EQ(config.dimensions()[0].meter_event_name, "");
  Config missing = valid_config();
  missing.price_id.reset();
  EXPECT_THAT(single_problem(missing),
              StartsWith("- STRIPE_PRICE_ID is required in STRIPE_BILLING_MODE=usage_records"));
}

TEST(BillingModeTest, MeterModesNeedAnEventNameAndNoPrice) {
  for (const char* mode : {"meter_events", "meter_event_stream"}) {
    const FinalizedConfig config = finalized(meter_config(mode));
    EXPECT_TRUE(config.uses_meters()) << mode;
    EXPECT_FALSE(config.uses_usage_records()) << mode;
    EXPECT_EQ(config.dimensions()[0].meter_event_name, "llm_tokens");
    EXPECT_EQ(config.price_id(), "");
    Config missing = meter_config(mode);
    missing.meter_event_name.reset();
    EXPECT_THAT(single_problem(missing),
                StartsWith(std::string("- STRIPE_METER_EVENT_NAME is required in "
                                       "STRIPE_BILLING_MODE=") +
                           mode));
  }
}

TEST(BillingModeTest, DualModeNeedsBothAPriceAndAMeter) {
  Config config = meter_config("dual");
  const std::string message = problems_of(config);
  EXPECT_THAT(message, HasSubstr("STRIPE_PRICE_ID is required in STRIPE_BILLING_MODE=dual"));
  config.price_id = "price_1";
  const FinalizedConfig dual = finalized(config);
  EXPECT_TRUE(dual.uses_meters());
  EXPECT_TRUE(dual.uses_usage_records());
  EXPECT_EQ(dual.dimensions()[0].price_id, "price_1");
  EXPECT_EQ(dual.dimensions()[0].meter_event_name, "llm_tokens");
}

TEST(BillingModeTest, AnUnknownModeIsNamedWithTheChoices) {
  Config config = valid_config();
  config.billing_mode = "meters";
  EXPECT_EQ(single_problem(config),
            "- STRIPE_BILLING_MODE must be one of usage_records, meter_events, "
            "meter_event_stream, dual, meter_events_v2; got \"meters\"");
}

TEST(BillingModeTest, AnUnknownModeBringsNoRequirementsOfAnotherMode) {
  Config config = meter_config();
  config.billing_mode = "meters";
  EXPECT_THAT(single_problem(config), StartsWith("- STRIPE_BILLING_MODE must be one of"));
}

TEST(BillingModeTest, MetersAcceptCurrentApiVersionsThatRemovedUsageRecords) {
  Config config = meter_config();
  config.api_version = "2025-03-31.basil";
  EXPECT_EQ(finalized(config).api_version(), "2025-03-31.basil");
  Config dual = meter_config("dual");
  dual.price_id = "price_1";
  dual.api_version = "2025-03-31.basil";
  EXPECT_THAT(single_problem(dual), HasSubstr("too new for usage records"));
}

TEST(BillingModeTest, SplitNeedsTwoDistinctPricesForUsageRecords) {
  Config config = valid_config();
  config.quantity = "split";
  const std::string message = problems_of(config);
  EXPECT_THAT(message, HasSubstr("STRIPE_PROMPT_PRICE_ID is required"));
  EXPECT_THAT(message, HasSubstr("STRIPE_COMPLETION_PRICE_ID is required"));
  config.prompt_price_id = "price_in";
  config.completion_price_id = "price_in";
  EXPECT_THAT(single_problem(config), HasSubstr("must differ"));
  config.completion_price_id = "price_out";
  const FinalizedConfig split = finalized(config);
  ASSERT_EQ(split.dimensions().size(), 2u);
  EXPECT_EQ(split.dimensions()[0].name, "prompt_tokens");
  EXPECT_EQ(split.dimensions()[0].price_id, "price_in");
  EXPECT_EQ(split.dimensions()[1].name, "completion_tokens");
  EXPECT_EQ(split.dimensions()[1].price_id, "price_out");
  EXPECT_EQ(split.dimension("completion_tokens"), &split.dimensions()[1]);
  EXPECT_EQ(split.dimension("total_tokens"), nullptr);
}

TEST(BillingModeTest, SplitOnOneMeterTagsTheTokenType) {
  Config config = meter_config();
  config.quantity = "split";
  const FinalizedConfig split = finalized(config);
  ASSERT_EQ(split.dimensions().size(), 2u);
  EXPECT_EQ(split.dimensions()[0].meter_event_name, "llm_tokens");
  EXPECT_EQ(split.dimensions()[0].token_type, "input");
  EXPECT_EQ(split.dimensions()[1].token_type, "output");
  EXPECT_EQ(split.meter_token_type_key(), "token_type");
}

TEST(BillingModeTest, SplitOnTwoMetersNeedsBothNamesDistinct) {
  Config config = meter_config();
  config.quantity = "split";
  config.prompt_meter_event_name = "input_tokens";
  EXPECT_THAT(single_problem(config), HasSubstr("STRIPE_COMPLETION_METER_EVENT_NAME is required"));
  config.completion_meter_event_name = "input_tokens";
  EXPECT_THAT(single_problem(config), HasSubstr("must differ"));
  config.completion_meter_event_name = "output_tokens";
  const FinalizedConfig split = finalized(config);
  EXPECT_EQ(split.dimensions()[0].meter_event_name, "input_tokens");
  EXPECT_EQ(split.dimensions()[1].meter_event_name, "output_tokens");
  EXPECT_EQ(split.dimensions()[0].token_type, "");
}

TEST(BillingModeTest, CostBillsOneDimensionWithAMultiplier) {
  Config config = meter_config();
  config.quantity = "cost";
  EXPECT_EQ(finalized(config).cost_multiplier(), 100);
  EXPECT_EQ(finalized(config).dimensions()[0].name, "cost");
  config.cost_multiplier = "1000.5";
  EXPECT_EQ(finalized(config).cost_multiplier(), 1000.5);
  config.cost_multiplier = "0";
  EXPECT_THAT(single_problem(config),
              StartsWith("- STRIPE_COST_MULTIPLIER must be more than 0 and at most 1000000"));
  config.cost_multiplier = "1e3";
  EXPECT_THAT(single_problem(config), StartsWith("- STRIPE_COST_MULTIPLIER must be a number"));
}

TEST(BillingModeTest, MeterEventNamesAndPayloadKeysAreChecked) {
  Config config = meter_config();
  config.meter_event_name = "llm tokens";
  config.meter_customer_key = "customer-id";
  config.meter_value_key = std::string(101, 'v');
  const std::string message = problems_of(config);
  EXPECT_THAT(message, HasSubstr("- STRIPE_METER_EVENT_NAME must be 1 to 100"));
  EXPECT_THAT(message, HasSubstr("- STRIPE_METER_CUSTOMER_KEY must be 1 to 100"));
  EXPECT_THAT(message, HasSubstr("- STRIPE_METER_VALUE_KEY must be 1 to 100"));
}

TEST(BillingModeTest, TwoPayloadFieldsCannotShareAKey) {
  Config config = meter_config();
  config.meter_model_key = "value";
  EXPECT_EQ(single_problem(config),
            "- STRIPE_METER_MODEL_KEY and STRIPE_METER_VALUE_KEY are both \"value\"; each meter "
            "payload key must be different");
}

TEST(BillingModeTest, MetersNeedCustomersNotSubscriptionItemsInTheMap) {
  Config config = meter_config();
  config.customer_map = "alice=cus_1,bob=si_2";
  EXPECT_THAT(single_problem(config),
              HasSubstr("STRIPE_CUSTOMER_MAP maps \"bob\" to a subscription item (si_2)"));
  Config split = valid_config();
  split.quantity = "split";
  split.prompt_price_id = "price_a";
  split.completion_price_id = "price_b";
  split.customer_map = "bob=si_2";
  EXPECT_THAT(single_problem(split), HasSubstr("split bills two subscription items"));
}

TEST(BillingModeTest, TheStreamBaseIsAnHttpsUrl) {
  Config config = meter_config("meter_event_stream");
  EXPECT_EQ(finalized(config).meter_stream_base(), "https://meter-events.stripe.com");
  config.meter_stream_base = "http://meter-events.stripe.com";
  EXPECT_THAT(single_problem(config),
              StartsWith("- STRIPE_METER_STREAM_BASE must use https; plain http is allowed only "
                         "for 127.0.0.1"));
  config.meter_stream_base = "http://127.0.0.1:9/";
  EXPECT_EQ(finalized(config).meter_stream_base(), "http://127.0.0.1:9");
}

TEST(BillingModeTest, LiveMeterEventsGetTheirOwnRateLimit) {
  EXPECT_EQ(finalized(meter_config()).meter_rate_limit(), 0) << "test mode shares the 25/s";
  Config live = meter_config();
  live.api_key = kLiveKey;
  live.environment = "production";
  EXPECT_EQ(finalized(live).meter_rate_limit(), 1000);
  live.meter_rate_limit = "250";
  EXPECT_EQ(finalized(live).meter_rate_limit(), 250);
}

TEST(BillingModeTest, TheSummaryNamesTheModeAndWhatIsBilled) {
  Config config = meter_config("dual");
  config.price_id = "price_1";
  config.quantity = "split";
  config.prompt_price_id = "price_in";
  config.completion_price_id = "price_out";
  EXPECT_THAT(finalized(config).summary(), HasSubstr("mode=dual key=sk_test_"));
  EXPECT_THAT(
      finalized(config).summary(),
      HasSubstr("(test) quantity=split prompt_tokens: price=price_in meter=llm_tokens[input] "
                "completion_tokens: price=price_out meter=llm_tokens[output] charge_by="));
}

TEST(BillingModeTest, SplitSettingsAreCheckedEvenWhenNotSplitting) {
  Config config = valid_config();
  config.prompt_price_id = "prod_1";
  config.completion_meter_event_name = "bad name";
  const std::string message = problems_of(config);
  EXPECT_THAT(message, HasSubstr("- STRIPE_PROMPT_PRICE_ID must be price_"));
  EXPECT_THAT(message, HasSubstr("- STRIPE_COMPLETION_METER_EVENT_NAME must be 1 to 100"));
}

TEST(BillingModeTest, TheTokenTypeKeyIsFreeWhenNoTokenTypeIsSent) {
  Config config = meter_config();
  config.meter_model_key = "token_type";
  EXPECT_EQ(finalized(config).meter_model_key(), "token_type");
  config.quantity = "split";
  EXPECT_THAT(single_problem(config),
              HasSubstr("STRIPE_METER_MODEL_KEY and STRIPE_METER_TOKEN_TYPE_KEY are both"));
}

TEST(LogFormatTest, IsTextByDefaultOrJson) {
  EXPECT_EQ(finalized(valid_config()).log_format(), LogFormat::kText);
  Config config = valid_config();
  config.log_format = "json";
  EXPECT_EQ(finalized(config).log_format(), LogFormat::kJson);
  config.log_format = "logfmt";
  EXPECT_EQ(single_problem(config),
            "- STRIPE_LOG_FORMAT must be one of text, json; got \"logfmt\"");
}

}  // namespace
}  // namespace stripe_billing

// ------------------------------------------------------------------------------------------
// The PostgreSQL outbox (a fleet)

namespace stripe_billing {
namespace {

constexpr const char* kDbPassword = "Pg5ecretPassw0rd";

TEST(OutboxUrlTest, TakesTheUriAndKeywordFormsOnLoopback) {
  for (const std::string& url : std::vector<std::string>{
           "postgresql://gw@127.0.0.1:5432/billing", "postgres://gw@localhost/billing",
           "host=127.0.0.1 port=5432 dbname=billing user=gw",
           "host=/var/run/postgresql dbname=b"}) {
    Config config = valid_config();
    config.outbox_url = url;
    const FinalizedConfig out = finalized(config);
    EXPECT_TRUE(out.uses_postgres()) << url;
    EXPECT_EQ(out.outbox_url().reveal(), url);
    EXPECT_EQ(out.outbox_schema(), "stripe_billing");
    EXPECT_EQ(out.fleet_lease(), std::chrono::seconds(10));
  }
  EXPECT_FALSE(finalized(valid_config()).uses_postgres());
}

TEST(OutboxUrlTest, ARemoteHostNeedsAVerifiedTlsConnection) {
  Config config = valid_config();
  config.outbox_url = "postgresql://gw@db.internal:5432/billing";
  EXPECT_THAT(single_problem(config),
              HasSubstr("STRIPE_OUTBOX_URL postgresql://gw@db.internal:5432/billing names the "
                        "remote host db.internal without sslmode=verify-full"));
  config.outbox_url = "postgresql://gw@db.internal:5432/billing?sslmode=require";
  EXPECT_THAT(single_problem(config), HasSubstr("without sslmode=verify-full"));
  config.outbox_url = "host=db.internal dbname=billing sslmode=prefer";
  EXPECT_THAT(single_problem(config), HasSubstr("without sslmode=verify-full"));
  config.outbox_url = "postgresql://gw@db.internal:5432/billing?sslmode=verify-full";
  EXPECT_TRUE(finalized(config).uses_postgres());
  config.outbox_url = "host=db.internal dbname=billing sslmode=verify-ca";
  EXPECT_TRUE(finalized(config).uses_postgres());
}

TEST(OutboxUrlTest, ThePasswordIsNeverShown) {
  Config config = valid_config();
  config.outbox_url = std::string("postgresql://gw:") + kDbPassword +
                      "@db.internal:5432/billing?sslmode=verify-full";
  const FinalizedConfig out = finalized(config);
  EXPECT_EQ(out.outbox_url_redacted(),
            "postgresql://gw:…@db.internal:5432/billing?sslmode=verify-full");
  EXPECT_THAT(out.summary(), HasSubstr("outbox=postgresql://gw:…@db.internal:5432/billing"));
  EXPECT_THAT(out.summary(), Not(HasSubstr(kDbPassword)));
  // Refused, for a remote host without verification and for a malformed string: the message
  // names the setting but never the password.
  for (const std::string& url :
       {std::string("postgresql://gw:") + kDbPassword + "@db.internal/billing",
        std::string("host=db.internal password=") + kDbPassword + " dbname=b",
        std::string("postgresql://gw:") + kDbPassword + "@db.internal/billing?nonsense=1",
        std::string("password=") + kDbPassword + " 'unterminated"}) {
    config.outbox_url = url;
    const std::string problems = problems_of(config);
    EXPECT_THAT(problems, HasSubstr("STRIPE_OUTBOX_URL")) << url;
    EXPECT_THAT(problems, Not(HasSubstr(kDbPassword))) << url;
  }
}

TEST(OutboxUrlTest, AnSslPasswordIsASecretToo) {
  Config config = valid_config();
  config.outbox_url = std::string("host=127.0.0.1 dbname=b sslpassword=") + kDbPassword;
  const FinalizedConfig out = finalized(config);
  EXPECT_THAT(out.outbox_url_redacted(), HasSubstr("sslpassword=…"));
  EXPECT_THAT(out.summary(), Not(HasSubstr(kDbPassword)));
}

TEST(OutboxUrlTest, RefusesWhatCouldNotBeCheckedOrShownSafely) {
  Config config = valid_config();
  // A URI given as the dbname would be shown, password and all, and its host never checked.
  config.outbox_url = std::string("dbname=postgresql://gw:") + kDbPassword + "@db.internal/b";
  std::string problems = problems_of(config);
  EXPECT_THAT(problems, HasSubstr("dbname that is itself a connection string"));
  EXPECT_THAT(problems, Not(HasSubstr(kDbPassword)));
  config.outbox_url = "service=billing";
  EXPECT_THAT(single_problem(config), HasSubstr("names a service"));
}

TEST(OutboxUrlTest, TheHostLibpqWouldTakeFromPghostIsCheckedToo) {
  Config config = valid_config();
  config.outbox_url = "dbname=billing user=gw";
  ::setenv("PGHOST", "db.internal", 1);
  const std::string problem = single_problem(config);
  ::unsetenv("PGHOST");
  EXPECT_THAT(problem, HasSubstr("remote host db.internal without sslmode=verify-full"));
  EXPECT_TRUE(finalized(config).uses_postgres()) << "without PGHOST: a local socket";
}

TEST(OutboxUrlTest, RefusesWhatIsNoConnectionString) {
  Config config = valid_config();
  config.outbox_url = "mysql://gw@127.0.0.1/billing";
  EXPECT_THAT(single_problem(config),
              HasSubstr("STRIPE_OUTBOX_URL must be a PostgreSQL connection string"));
}

TEST(OutboxSchemaTest, IsAPlainLowercaseIdentifier) {
  Config config = valid_config();
  config.outbox_schema = "gateway_eu_2";
  EXPECT_EQ(finalized(config).outbox_schema(), "gateway_eu_2");
  for (const std::string& bad : std::vector<std::string>{
           "Billing", "2fast", "pg_catalog", "a;drop table x", "a.b", std::string(64, 'a')}) {
    config.outbox_schema = bad;
    EXPECT_THAT(single_problem(config), HasSubstr("STRIPE_OUTBOX_SCHEMA must be")) << bad;
  }
}

TEST(FleetLeaseTest, IsFromTwoSecondsToFiveMinutes) {
  Config config = valid_config();
  config.fleet_lease_s = "3";
  EXPECT_EQ(finalized(config).fleet_lease(), std::chrono::seconds(3));
  config.fleet_lease_s = "1";
  EXPECT_THAT(single_problem(config), HasSubstr("STRIPE_FLEET_LEASE_S must be from 2 to 300"));
}

}  // namespace
}  // namespace stripe_billing
