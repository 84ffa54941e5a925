#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "config_test_support.h"
#include "stripe_billing/config.h"
#include "stripe_billing/secret.h"

namespace stripe_billing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

constexpr const char* kOtherKey = "sk_test_51OTHERkLmYb_De7Fh3Jx9PaTuWc_GsHiKoAbCdEfGh1234";
constexpr const char* kEllipsis = "\xE2\x80\xA6";

using testing::Env;
using testing::kTestKey;
using testing::lookup_in;

YamlSettings read_ok(const std::string& yaml, const Env& env = {}) {
  Expected<YamlSettings> result = config_from_yaml_string(yaml, lookup_in(env));
  EXPECT_TRUE(result.has_value()) << (result ? "" : result.error().message);
  if (!result) throw std::runtime_error("config_from_yaml_string failed");
  return std::move(result).value();
}

// The message of a failed read, after checking its code and that no secret leaked into it.
std::string read_error(const std::string& yaml, const Env& env = {}) {
  Expected<YamlSettings> result = config_from_yaml_string(yaml, lookup_in(env));
  EXPECT_FALSE(result.has_value());
  if (result) return "";
  EXPECT_EQ(result.error().code, ErrorCode::kInvalidConfig);
  EXPECT_THAT(result.error().message, AllOf(Not(HasSubstr(kTestKey)), Not(HasSubstr(kOtherKey))));
  return result.error().message;
}

constexpr const char* kLiteLlmConfig = R"yaml(
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY

litellm_settings:
  success_callback: ["stripe", "langfuse"]
  drop_params: true

general_settings:
  master_key: sk-1234

stripe_billing:
  api_key: os.environ/STRIPE_SECRET
  price_id: price_1PzTokens
  charge_by: team_id
  api_base: http://localhost:12111
  api_version: 2024-06-20
  environment: staging
  quantity: completion_tokens
  max_quantity: 250000
  customer_metadata_key: gateway_customer
  customer_map:
    alice: cus_Alice1
    team-42: si_Team42
  lookup_cache_ttl: 600
  lookup_miss_ttl: 15
  connect_timeout_ms: 2000
  timeout_ms: 15000
  queue_capacity: 5000
  outbox_path: /var/lib/litellm/stripe-outbox.db
  durability: sync
  commit_interval_ms: 20
  sync_timeout_ms: 3000
  aggregation_window_ms: 0
  max_backoff_s: 120
  max_delivery_age_s: 3600
  rate_limit: 12.5
  sender_threads: 8
  park_retry_s: 30
  ledger_retention_days: 7
  auth_probe_s: 10
)yaml";

// ------------------------------------------------------------------------------------------
// The happy path

TEST(ConfigYamlTest, ReadsEverySettingFromLiteLlmShapedConfig) {
  const YamlSettings settings = read_ok(kLiteLlmConfig, {{"STRIPE_SECRET", kTestKey}});
  const Config& config = settings.config;
  EXPECT_EQ(config.api_key, kTestKey);
  EXPECT_EQ(config.price_id, "price_1PzTokens");
  EXPECT_EQ(config.charge_by, "team_id");
  EXPECT_EQ(config.api_base, "http://localhost:12111");
  EXPECT_EQ(config.api_version, "2024-06-20");
  EXPECT_EQ(config.environment, "staging");
  EXPECT_EQ(config.quantity, "completion_tokens");
  EXPECT_EQ(config.max_quantity, "250000");
  EXPECT_EQ(config.customer_metadata_key, "gateway_customer");
  EXPECT_EQ(config.customer_map, "alice=cus_Alice1,team-42=si_Team42");
  EXPECT_EQ(config.lookup_cache_ttl, "600");
  EXPECT_EQ(config.lookup_miss_ttl, "15");
  EXPECT_EQ(config.connect_timeout_ms, "2000");
  EXPECT_EQ(config.timeout_ms, "15000");
  EXPECT_EQ(config.queue_capacity, "5000");
  EXPECT_EQ(config.outbox_path, "/var/lib/litellm/stripe-outbox.db");
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

TEST(ConfigYamlTest, ReadsSuccessCallbacks) {
  const YamlSettings settings = read_ok(kLiteLlmConfig, {{"STRIPE_SECRET", kTestKey}});
  EXPECT_THAT(settings.success_callbacks, ElementsAre("stripe", "langfuse"));
}

TEST(ConfigYamlTest, HappyPathFinalizes) {
  YamlSettings settings = read_ok(kLiteLlmConfig, {{"STRIPE_SECRET", kTestKey}});
  settings.config.outbox_path = ":memory:";  // /var/lib/litellm need not exist here
  const Expected<FinalizedConfig> config = finalize_config(settings.config);
  ASSERT_TRUE(config.has_value()) << config.error().message;
  EXPECT_EQ(config->charge_by(), ChargeBy::kTeamId);
  EXPECT_EQ(config->timeout(), std::chrono::milliseconds(15000));
  EXPECT_EQ(config->customer_map().at("alice").customer_id, "cus_Alice1");
  EXPECT_EQ(config->customer_map().at("team-42").subscription_item_id, "si_Team42");
  EXPECT_EQ(config->durability(), Durability::kSync);
  EXPECT_EQ(config->aggregation_window(), std::chrono::milliseconds(0));
  EXPECT_EQ(config->max_delivery_age(), std::chrono::seconds(3600));
  EXPECT_EQ(config->rate_limit(), 12.5);
  EXPECT_EQ(config->sender_threads(), 8);
  EXPECT_EQ(config->ledger_retention(), std::chrono::hours(7 * 24));
}

TEST(ConfigYamlTest, DeliverySettingsHaveLowercaseKeysWithoutPrefix) {
  const YamlSettings settings = read_ok(R"yaml(
stripe_billing:
  outbox_path: ":memory:"
  durability: async
  commit_interval_ms: 100
  sync_timeout_ms: "250"
  aggregation_window_ms: 5000
  max_backoff_s: 60
  max_delivery_age_s: 82800
  rate_limit: 0.5
  sender_threads: 2
  park_retry_s: 600
  ledger_retention_days: 365
  auth_probe_s: 5
)yaml");
  const Config& config = settings.config;
  EXPECT_EQ(config.outbox_path, ":memory:");
  EXPECT_EQ(config.durability, "async");
  EXPECT_EQ(config.commit_interval_ms, "100");
  EXPECT_EQ(config.sync_timeout_ms, "250");
  EXPECT_EQ(config.aggregation_window_ms, "5000");
  EXPECT_EQ(config.max_backoff_s, "60");
  EXPECT_EQ(config.max_delivery_age_s, "82800");
  EXPECT_EQ(config.rate_limit, "0.5");
  EXPECT_EQ(config.sender_threads, "2");
  EXPECT_EQ(config.park_retry_s, "600");
  EXPECT_EQ(config.ledger_retention_days, "365");
  EXPECT_EQ(config.auth_probe_s, "5");
}

// yaml-cpp does not accept a plain scalar starting with ':'; the documentation says to quote it.
TEST(ConfigYamlTest, UnquotedMemoryOutboxIsASyntaxErrorOnItsLine) {
  EXPECT_THAT(read_error("stripe_billing:\n  outbox_path: :memory:\n"),
              StartsWith("invalid YAML in <yaml string> at line 2, "));
  EXPECT_EQ(read_ok("stripe_billing:\n  outbox_path: ':memory:'\n").config.outbox_path, ":memory:");
}

TEST(ConfigYamlTest, DeliverySettingsFallBackToTheirEnvironmentVariables) {
  const YamlSettings settings =
      read_ok("stripe_billing:\n  durability: sync\n", {{"STRIPE_DURABILITY", "async"},
                                                        {"STRIPE_RATE_LIMIT", "40"},
                                                        {"STRIPE_OUTBOX_PATH", "/tmp/o.db"}});
  EXPECT_EQ(settings.config.durability, "sync");
  EXPECT_EQ(settings.config.rate_limit, "40");
  EXPECT_EQ(settings.config.outbox_path, "/tmp/o.db");
}

TEST(ConfigYamlTest, UpperCaseDeliveryVariableIsAnUnknownKey) {
  EXPECT_THAT(read_error("stripe_billing:\n  STRIPE_RATE_LIMIT: 5\n  ratelimit: 5\n"),
              HasSubstr("unknown keys STRIPE_RATE_LIMIT (line 2), ratelimit (line 3); the "
                        "settings are"));
}

TEST(ConfigYamlTest, NumbersAndStringsAreReadAsText) {
  const YamlSettings settings = read_ok(R"yaml(
stripe_billing:
  sender_threads: 7
  timeout_ms: "9000"
  max_quantity: 1e3
)yaml");
  EXPECT_EQ(settings.config.sender_threads, "7");
  EXPECT_EQ(settings.config.timeout_ms, "9000");
  EXPECT_EQ(settings.config.max_quantity, "1e3");  // finalize_config refuses it
}

TEST(ConfigYamlTest, IgnoresOtherSections) {
  const YamlSettings settings = read_ok(R"yaml(
model_list: [1, 2, {a: b}]
general_settings: "anything"
router_settings: {routing_strategy: simple-shuffle}
stripe_billing:
  price_id: price_1
)yaml");
  EXPECT_EQ(settings.config.price_id, "price_1");
  EXPECT_THAT(settings.success_callbacks, IsEmpty());
}

// ------------------------------------------------------------------------------------------
// os.environ/ references

TEST(ConfigYamlTest, ResolvesOsEnvironReference) {
  const YamlSettings settings = read_ok(R"yaml(
stripe_billing:
  api_key: os.environ/MY_STRIPE_KEY
  price_id: os.environ/MY_PRICE
)yaml",
                                        {{"MY_STRIPE_KEY", kTestKey}, {"MY_PRICE", "price_9"}});
  EXPECT_EQ(settings.config.api_key, kTestKey);
  EXPECT_EQ(settings.config.price_id, "price_9");
}

TEST(ConfigYamlTest, TheOutboxUrlComesFromTheEnvironmentAsTheKeyDoes) {
  const std::string url = "postgresql://gw:Pg5ecretPassw0rd@127.0.0.1:5432/billing";
  const YamlSettings settings =
      read_ok(R"yaml(
stripe_billing:
  api_key: os.environ/MY_STRIPE_KEY
  price_id: price_9
  outbox_url: os.environ/GATEWAY_DATABASE_URL
  outbox_schema: gateway_eu
)yaml",
              {{"MY_STRIPE_KEY", kTestKey}, {"GATEWAY_DATABASE_URL", url}});
  EXPECT_EQ(settings.config.outbox_url, url);
  EXPECT_EQ(settings.config.outbox_schema, "gateway_eu");
  auto finalized = finalize_config(settings.config);
  ASSERT_TRUE(finalized) << finalized.error().message;
  EXPECT_EQ(finalized->outbox_url_redacted(), "postgresql://gw:…@127.0.0.1:5432/billing");
}

TEST(ConfigYamlTest, UnsetOsEnvironReferenceNamesTheVariableAndTheKey) {
  const std::string message = read_error(R"yaml(
stripe_billing:
  api_key: os.environ/MY_STRIPE_KEY
)yaml",
                                         {{"STRIPE_API_KEY", kTestKey}});
  EXPECT_THAT(message, StartsWith("invalid Stripe billing configuration in <yaml string> "
                                  "(1 problem):\n"));
  EXPECT_THAT(message, HasSubstr("- line 3: stripe_billing.api_key refers to "
                                 "os.environ/MY_STRIPE_KEY, but MY_STRIPE_KEY is not set"));
}

TEST(ConfigYamlTest, EmptyOsEnvironReferenceIsUnset) {
  EXPECT_THAT(read_error("stripe_billing:\n  price_id: os.environ/P\n", {{"P", ""}}),
              HasSubstr("P is not set"));
}

TEST(ConfigYamlTest, OsEnvironWithoutNameIsAnError) {
  EXPECT_THAT(read_error("stripe_billing:\n  price_id: os.environ/\n"),
              HasSubstr("stripe_billing.price_id: os.environ/ must be followed by a variable"));
}

// ------------------------------------------------------------------------------------------
// Keys of the stripe_billing section

TEST(ConfigYamlTest, UnknownKeyIsAnErrorNamingIt) {
  const std::string message = read_error(R"yaml(
stripe_billing:
  price_id: price_1
  chargeby: team_id
)yaml");
  EXPECT_THAT(message,
              HasSubstr("- stripe_billing has unknown key chargeby (line 4); the "
                        "settings are api_key, preset, billing_mode, price_id, charge_by,"));
}

TEST(ConfigYamlTest, AllUnknownKeysAreNamedInOneProblem) {
  const std::string message = read_error(R"yaml(
stripe_billing:
  STRIPE_API_KEY: x
  price_id: price_1
  secret: y
)yaml");
  EXPECT_THAT(message, HasSubstr("(1 problem)"));
  EXPECT_THAT(message,
              HasSubstr("unknown keys STRIPE_API_KEY (line 3), secret (line 5); the settings"));
}

TEST(ConfigYamlTest, EveryDocumentedVariableHasAYamlKey) {
  std::string yaml = "stripe_billing:\n";
  for (const std::string& variable : config_variable_names()) {
    std::string key = variable.rfind("STRIPE_", 0) == 0 ? variable.substr(7) : variable;
    for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    yaml += "  " + key + ": v_" + variable + "\n";
  }
  const Config config = read_ok(yaml).config;
  EXPECT_EQ(config.api_key, "v_STRIPE_API_KEY");
  EXPECT_EQ(config.environment, "v_ENVIRONMENT");
  EXPECT_EQ(config.customer_metadata_key, "v_STRIPE_CUSTOMER_METADATA_KEY");
  EXPECT_EQ(config.queue_capacity, "v_STRIPE_QUEUE_CAPACITY");
  EXPECT_EQ(config.outbox_path, "v_STRIPE_OUTBOX_PATH");
  EXPECT_EQ(config.rate_limit, "v_STRIPE_RATE_LIMIT");
  EXPECT_EQ(config.auth_probe_s, "v_STRIPE_AUTH_PROBE_S");
}

TEST(ConfigYamlTest, UnknownKeyMessageListsTheDeliverySettings) {
  EXPECT_THAT(read_error("stripe_billing:\n  nope: 1\n"),
              HasSubstr("queue_capacity, outbox_path, outbox_url, outbox_schema, fleet_lease_s, "
                        "durability, commit_interval_ms, "
                        "sync_timeout_ms, aggregation_window_ms, max_backoff_s, "
                        "max_delivery_age_s, rate_limit, sender_threads, park_retry_s, "
                        "ledger_retention_days, auth_probe_s"));
}

TEST(ConfigYamlTest, RepeatedKeyIsAnError) {
  EXPECT_THAT(read_error("stripe_billing:\n  price_id: price_1\n  price_id: price_2\n"),
              HasSubstr("- line 3: stripe_billing.price_id appears more than once"));
}

TEST(ConfigYamlTest, ListForAScalarSettingIsAnErrorWithoutEchoingIt) {
  const std::string message =
      read_error(std::string("stripe_billing:\n  api_key: [") + kTestKey + "]\n");
  EXPECT_THAT(message, HasSubstr("- line 2: stripe_billing.api_key must be a string or a number"));
}

TEST(ConfigYamlTest, StripeSectionMustBeAMap) {
  EXPECT_THAT(read_error("stripe_billing: [a, b]\n"),
              HasSubstr("stripe_billing must be a map of settings"));
}

// ------------------------------------------------------------------------------------------
// Falling back to the environment

TEST(ConfigYamlTest, AbsentSettingFallsBackToItsEnvironmentVariable) {
  const YamlSettings settings =
      read_ok("stripe_billing:\n  price_id: price_1\n", {{"STRIPE_API_KEY", kTestKey},
                                                         {"STRIPE_CHARGE_BY", "user_id"},
                                                         {"ENVIRONMENT", "production"}});
  EXPECT_EQ(settings.config.api_key, kTestKey);
  EXPECT_EQ(settings.config.charge_by, "user_id");
  EXPECT_EQ(settings.config.environment, "production");
  EXPECT_FALSE(settings.config.timeout_ms.has_value());
}

TEST(ConfigYamlTest, FileSettingWinsOverEnvironmentVariable) {
  const YamlSettings settings =
      read_ok("stripe_billing:\n  price_id: price_file\n", {{"STRIPE_PRICE_ID", "price_env"}});
  EXPECT_EQ(settings.config.price_id, "price_file");
}

TEST(ConfigYamlTest, NullOrEmptySettingFallsBackToEnvironment) {
  const YamlSettings settings =
      read_ok("stripe_billing:\n  price_id:\n  charge_by: \"\"\n",
              {{"STRIPE_PRICE_ID", "price_env"}, {"STRIPE_CHARGE_BY", "team_id"}});
  EXPECT_EQ(settings.config.price_id, "price_env");
  EXPECT_EQ(settings.config.charge_by, "team_id");
}

TEST(ConfigYamlTest, MissingStripeSectionReadsEverythingFromEnvironment) {
  const YamlSettings settings =
      read_ok("litellm_settings:\n  success_callback: [stripe]\n",
              {{"STRIPE_API_KEY", kTestKey}, {"STRIPE_PRICE_ID", "price_env"}});
  EXPECT_EQ(settings.config.api_key, kTestKey);
  EXPECT_EQ(settings.config.price_id, "price_env");
  EXPECT_THAT(settings.success_callbacks, ElementsAre("stripe"));
}

TEST(ConfigYamlTest, EmptyDocumentReadsEverythingFromEnvironment) {
  const YamlSettings settings = read_ok("", {{"STRIPE_PRICE_ID", "price_env"}});
  EXPECT_EQ(settings.config.price_id, "price_env");
}

TEST(ConfigYamlTest, EnvironmentVariablesSectionOverridesProcessEnvironment) {
  const YamlSettings settings = read_ok(R"yaml(
environment_variables:
  STRIPE_PRICE_ID: price_from_section
  STRIPE_SENDER_THREADS: 9
)yaml",
                                        {{"STRIPE_PRICE_ID", "price_env"}});
  EXPECT_EQ(settings.config.price_id, "price_from_section");
  EXPECT_EQ(settings.config.sender_threads, "9");
}

TEST(ConfigYamlTest, StripeSectionWinsOverEnvironmentVariablesSection) {
  const YamlSettings settings = read_ok(R"yaml(
environment_variables:
  STRIPE_PRICE_ID: price_from_section
stripe_billing:
  price_id: price_from_stripe_billing
)yaml");
  EXPECT_EQ(settings.config.price_id, "price_from_stripe_billing");
}

TEST(ConfigYamlTest, EnvironmentVariablesSectionFeedsOsEnvironReferences) {
  const YamlSettings settings = read_ok(R"yaml(
environment_variables:
  MY_PRICE: price_section
stripe_billing:
  price_id: os.environ/MY_PRICE
)yaml",
                                        {{"MY_PRICE", "price_env"}});
  EXPECT_EQ(settings.config.price_id, "price_section");
}

// ------------------------------------------------------------------------------------------
// customer_map

TEST(ConfigYamlTest, CustomerMapAsMapBecomesTheVariableForm) {
  const YamlSettings settings = read_ok(R"yaml(
stripe_billing:
  customer_map:
    alice@example.com: cus_1
    "team 7": si_2
)yaml");
  EXPECT_EQ(settings.config.customer_map, "alice@example.com=cus_1,team 7=si_2");
}

TEST(ConfigYamlTest, CustomerMapAsString) {
  const YamlSettings settings =
      read_ok("stripe_billing:\n  customer_map: \"alice=cus_1,bob=si_2\"\n");
  EXPECT_EQ(settings.config.customer_map, "alice=cus_1,bob=si_2");
}

TEST(ConfigYamlTest, CustomerMapValueMayUseOsEnviron) {
  const YamlSettings settings =
      read_ok("stripe_billing:\n  customer_map:\n    alice: os.environ/ALICE\n",
              {{"ALICE", "cus_from_env"}});
  EXPECT_EQ(settings.config.customer_map, "alice=cus_from_env");
}

TEST(ConfigYamlTest, CustomerMapKeyWithCommaOrEqualsIsAnError) {
  const std::string message = read_error(R"yaml(
stripe_billing:
  customer_map:
    "a,b": cus_1
    "c=d": cus_2
)yaml");
  EXPECT_THAT(message, HasSubstr("- line 4: stripe_billing.customer_map: the key \"a,b\" must "
                                 "not contain '=' or ','"));
  EXPECT_THAT(message, HasSubstr("- line 5: stripe_billing.customer_map: the key \"c=d\""));
}

TEST(ConfigYamlTest, CustomerMapValueWithCommaIsAnError) {
  EXPECT_THAT(read_error("stripe_billing:\n  customer_map:\n    alice: \"cus_1,bob=cus_2\"\n"),
              HasSubstr("stripe_billing.customer_map.alice must be a single cus_"));
}

TEST(ConfigYamlTest, CustomerMapListIsAnError) {
  EXPECT_THAT(read_error("stripe_billing:\n  customer_map: [cus_1]\n"),
              HasSubstr("stripe_billing.customer_map must be a string or a number, or a map"));
}

// ------------------------------------------------------------------------------------------
// litellm_settings and malformed files

TEST(ConfigYamlTest, SuccessCallbackMustBeAList) {
  EXPECT_THAT(read_error("litellm_settings:\n  success_callback: stripe\n"),
              HasSubstr("- line 2: litellm_settings.success_callback must be a list"));
}

TEST(ConfigYamlTest, TopLevelMustBeAMap) {
  EXPECT_THAT(read_error("- a\n- b\n"), HasSubstr("the top level must be a map"));
}

TEST(ConfigYamlTest, SyntaxErrorNamesTheSourceAndLine) {
  const std::string message = read_error(std::string("stripe_billing:\n  api_key: ") + kTestKey +
                                         "\n  price_id: [price_1\n");
  EXPECT_THAT(message, StartsWith("invalid YAML in <yaml string> at line "));
}

TEST(ConfigYamlTest, SyntaxErrorMessageReportsTheLineOfTheMistake) {
  const std::string message = read_error("stripe_billing:\n  price_id: price_1\n bad: [\n");
  EXPECT_THAT(message, StartsWith("invalid YAML in <yaml string> at line 3, column "));
}

TEST(ConfigYamlTest, SecretsNeverAppearInMessages) {
  const Env env = {{"STRIPE_API_KEY", kTestKey}, {"K", kOtherKey}};
  read_error(std::string("stripe_billing:\n  api_key: ") + kTestKey + "\n  bogus: 1\n", env);
  read_error(std::string("stripe_billing:\n  api_key: {a: ") + kTestKey + "}\n", env);
  read_error(std::string("environment_variables:\n  STRIPE_API_KEY: [") + kOtherKey + "]\n", env);
  read_error(std::string("stripe_billing:\n  api_key: os.environ/K\n  price_id: os.environ/Q\n"),
             env);
  read_error(std::string("stripe_billing:\n  api_key: ") + kTestKey + "\n bad: [\n", env);
}

const std::vector<std::string> kSecrets = {kTestKey, kOtherKey, testing::kOtherLiveKey,
                                           testing::kRestrictedKey, testing::kWebhookSecret};

TEST(ConfigYamlTest, AKeyInAnyOtherSettingOfTheFileIsAProblemWhenFinalized) {
  const Env env = {{"STRIPE_API_KEY", kTestKey}, {"PRICE", testing::kRestrictedKey}};
  const std::string yamls[] = {
      std::string("stripe_billing:\n  price_id: price_1\n  meter_event_name: ") +
          testing::kOtherLiveKey + "\n",
      "stripe_billing:\n  price_id: os.environ/PRICE\n",
      std::string("stripe_billing:\n  price_id: price_1\n  customer_map:\n    alice: ") +
          testing::kWebhookSecret + "\n",
  };
  const char* variables[] = {"STRIPE_METER_EVENT_NAME", "STRIPE_PRICE_ID", "STRIPE_CUSTOMER_MAP"};
  for (std::size_t i = 0; i < std::size(yamls); ++i) {
    const Expected<FinalizedConfig> result = finalize_config(read_ok(yamls[i], env).config);
    ASSERT_FALSE(result) << variables[i];
    EXPECT_THAT(result.error().message, HasSubstr(std::string("- ") + variables[i] +
                                                  " holds what looks like a secret key"));
    EXPECT_EQ(testing::leaked_secret(result.error().message, kSecrets), "")
        << result.error().message;
  }
}

// Files whose keys, names or references hold a secret: the reader quotes keys and names, never
// values, but a key pasted into the wrong line ends up in a key.
std::vector<std::string> yaml_placements_of(const std::string& secret) {
  return {
      "stripe_billing:\n  " + secret + ": 1\n",
      "stripe_billing:\n  \"x " + secret + "\": 1\n",
      "stripe_billing:\n  \"" + std::string(75, 'k') + "/" + secret + "\": 1\n",
      "stripe_billing:\n  customer_map:\n    \"a," + secret + "\": cus_1\n",
      "stripe_billing:\n  customer_map:\n    " + secret + ": [cus_1]\n",
      "stripe_billing:\n  customer_map:\n    " + secret + ": os.environ/UNSET\n",
      "stripe_billing:\n  customer_map:\n    alice: \"cus_1," + secret + "\"\n",
      "environment_variables:\n  " + secret + ": [1]\n",
      "stripe_billing:\n  price_id: os.environ/" + secret + "\n",
      "stripe_billing:\n  price_id: os.environ/x" + secret + "\n",
      "stripe_billing:\n  api_key: [" + secret + "]\n",
      "stripe_billing:\n  " + secret + ": [\n",
      "stripe_billing:\n  api_key: " + secret + "\n  api_key: " + secret + "\n",
      "litellm_settings:\n  success_callback: " + secret + "\n",
      "stripe_billing: " + secret + "\n",
      secret + "\n",
  };
}

TEST(ConfigYamlTest, NoReadingErrorShowsASecretWhereverItIsPlaced) {
  const Env env = {{"STRIPE_API_KEY", kTestKey}};
  std::size_t scanned = 0;
  for (const std::string& secret : kSecrets) {
    for (const std::string& yaml : yaml_placements_of(secret)) {
      const Expected<YamlSettings> result = config_from_yaml_string(yaml, lookup_in(env));
      ASSERT_FALSE(result) << yaml;
      EXPECT_EQ(testing::leaked_secret(result.error().message, kSecrets), "")
          << result.error().message;
      ++scanned;
    }
  }
  EXPECT_EQ(scanned, kSecrets.size() * yaml_placements_of(kTestKey).size());
}

// ------------------------------------------------------------------------------------------
// Files

class ConfigYamlFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("config_yaml_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const std::filesystem::path path = dir_ / name;
    std::ofstream(path) << text;
    return path.string();
  }

  std::filesystem::path dir_;
};

TEST_F(ConfigYamlFileTest, ReadsAFile) {
  const std::string path = write("litellm.yaml", kLiteLlmConfig);
  const Expected<YamlSettings> settings =
      config_from_yaml_file(path, lookup_in({{"STRIPE_SECRET", kTestKey}}));
  ASSERT_TRUE(settings.has_value()) << settings.error().message;
  EXPECT_EQ(settings->config.price_id, "price_1PzTokens");
  EXPECT_THAT(settings->success_callbacks, ElementsAre("stripe", "langfuse"));
}

TEST_F(ConfigYamlFileTest, SyntaxErrorNamesThePathAndLine) {
  const std::string path = write("broken.yaml", "stripe_billing:\n  price_id: price_1\n bad: [\n");
  const Expected<YamlSettings> settings = config_from_yaml_file(path, lookup_in({}));
  ASSERT_FALSE(settings.has_value());
  EXPECT_EQ(settings.error().code, ErrorCode::kInvalidConfig);
  EXPECT_THAT(settings.error().message, StartsWith("invalid YAML in " + path + " at line 3, "));
}

TEST_F(ConfigYamlFileTest, SettingErrorsNameThePath) {
  const std::string path = write("unknown.yaml", "stripe_billing:\n  nope: 1\n");
  const Expected<YamlSettings> settings = config_from_yaml_file(path, lookup_in({}));
  ASSERT_FALSE(settings.has_value());
  EXPECT_THAT(settings.error().message,
              StartsWith("invalid Stripe billing configuration in " + path + " (1 problem):"));
}

TEST_F(ConfigYamlFileTest, MissingFileIsAnErrorNamingThePath) {
  const std::string path = (dir_ / "absent.yaml").string();
  const Expected<YamlSettings> settings = config_from_yaml_file(path, lookup_in({}));
  ASSERT_FALSE(settings.has_value());
  EXPECT_EQ(settings.error().code, ErrorCode::kInvalidConfig);
  EXPECT_THAT(settings.error().message, AllOf(HasSubstr("cannot read configuration file " + path),
                                              HasSubstr("No such file or directory")));
}

TEST_F(ConfigYamlFileTest, APathHoldingASecretIsQuotedRedacted) {
  const std::string missing = (dir_ / (std::string(kOtherKey) + ".yaml")).string();
  const std::string bad = write(std::string(kOtherKey) + "-bad.yaml", "stripe_billing:\n  x: 1\n");
  for (const std::string& path : {missing, bad}) {
    const Expected<YamlSettings> settings = config_from_yaml_file(path, lookup_in({}));
    ASSERT_FALSE(settings.has_value());
    EXPECT_THAT(settings.error().message, HasSubstr((dir_ / "sk_test_").string() + kEllipsis));
    EXPECT_EQ(testing::leaked_secret(settings.error().message, kSecrets), "")
        << settings.error().message;
  }
}

TEST_F(ConfigYamlFileTest, DirectoryIsAnError) {
  const Expected<YamlSettings> settings = config_from_yaml_file(dir_.string(), lookup_in({}));
  ASSERT_FALSE(settings.has_value());
  EXPECT_THAT(settings.error().message, HasSubstr("it is a directory"));
}

}  // namespace
}  // namespace stripe_billing
