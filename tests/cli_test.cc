// The stripe-billing command-line tool, run as a child process against the emulator with the
// configuration in its environment, as an operator would run it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "outbox.h"
#include "stripe_billing/stripe_client.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using nlohmann::json;
using testing::kEmulatorKey;

struct CliResult {
  int status = -1;
  std::string out;
  std::string err;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One LiteLLM StandardLoggingPayload line of a key bound to the end user `customer` (what
// STRIPE_CHARGE_BY=end_user_id bills); no customer when `customer` is empty.
std::string payload_line(const std::string& call_id, std::int64_t tokens,
                         const std::string& customer) {
  json payload = {{"litellm_call_id", call_id},  {"model", "gpt-test"},
                  {"prompt_tokens", tokens / 2}, {"completion_tokens", tokens - tokens / 2},
                  {"total_tokens", tokens},      {"endTime", unix_now()}};
  if (!customer.empty()) payload["metadata"] = {{"user_api_key_end_user_id", customer}};
  return payload.dump();
}

// RFC 4180 records: quoted fields may hold commas, doubled quotes and line breaks.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> records(1);
  std::string field;
  bool quoted = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      records.back().push_back(std::move(field));
      field.clear();
    } else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      records.back().push_back(std::move(field));
      field.clear();
      records.emplace_back();
      ++i;
    } else {
      field += c;
    }
  }
  if (records.back().empty()) records.pop_back();
  return records;
}

class CliTest : public testing::EmulatorTest {
 protected:
  std::map<std::string, std::string> environment() const {
    return {{"STRIPE_API_KEY", kEmulatorKey},      {"STRIPE_API_BASE", emulator_.base_url()},
            {"STRIPE_OUTBOX_PATH", outbox_path()}, {"STRIPE_PRICE_ID", price_},
            {"STRIPE_AGGREGATION_WINDOW_MS", "0"}, {"STRIPE_RATE_LIMIT", "1000"},
            {"STRIPE_TIMEOUT_MS", "2000"},         {"STRIPE_CONNECT_TIMEOUT_MS", "1000"}};
  }

  // Runs the tool with exactly `environment` (nothing inherited) and waits for it to exit.
  CliResult run(const std::vector<std::string>& arguments,
                const std::map<std::string, std::string>& environment) {
    const std::string out_path = dir_.file("out-" + std::to_string(++runs_));
    const std::string err_path = dir_.file("err-" + std::to_string(runs_));
    std::vector<std::string> argv_text{STRIPE_BILLING_CLI_PATH};
    argv_text.insert(argv_text.end(), arguments.begin(), arguments.end());
    std::vector<std::string> env_text;
    for (const auto& [name, value] : environment) env_text.push_back(name + "=" + value);
    std::vector<char*> argv, envp;
    for (auto& text : argv_text) argv.push_back(text.data());
    for (auto& text : env_text) envp.push_back(text.data());
    argv.push_back(nullptr);
    envp.push_back(nullptr);

    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init(&files);
    posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, out_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&files, STDERR_FILENO, err_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid = -1;
    const int spawned = posix_spawn(&pid, argv[0], &files, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&files);
    CliResult result;
    if (spawned != 0) {
      ADD_FAILURE() << "cannot run " << argv[0];
      return result;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    result.out = read_text(out_path);
    result.err = read_text(err_path);
    return result;
  }
  CliResult run(const std::vector<std::string>& arguments) { return run(arguments, environment()); }

  std::string write_file(const std::string& name, const std::vector<std::string>& lines) {
    const std::string path = dir_.file(name);
    std::ofstream out(path, std::ios::binary);
    for (const auto& line : lines) out << line << "\n";
    return path;
  }

  std::unique_ptr<Outbox> open_outbox() {
    auto outbox = Outbox::open(outbox_path(), false);
    EXPECT_TRUE(outbox) << outbox.error().to_string();
    return outbox ? std::move(outbox.value()) : nullptr;
  }

  // A row stored directly in the outbox, parked or dead with `reason`.
  void store_failed(const std::string& call_id, EventState state, const std::string& reason) {
    NewEvent event;
    event.call_id = call_id;
    event.dimension = "total_tokens";
    event.customer_key = "alice";
    event.quantity = 7;
    event.event_time = unix_now();
    event.accepted_at_ms = unix_now() * 1000;
    event.state = state;
    event.reason = reason;
    ASSERT_TRUE(open_outbox()->insert({event}));
  }

  std::size_t successful_posts(const std::string& path) const {
    std::size_t count = 0;
    for (const auto& request : emulator_.requests()) {
      count += request.method == "POST" && request.path == path && request.status == 200;
    }
    return count;
  }

  int runs_ = 0;
};

// --- check -------------------------------------------------------------------------------------

TEST_F(CliTest, CheckPrintsTheModeAndTheRedactedKeyButNeverTheKey) {
  const CliResult result = run({"check"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_NE(result.out.find("mode: usage_records"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("key: sk_test_…0000 (test)"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("price=" + price_), std::string::npos) << result.out;
  EXPECT_EQ((result.out + result.err).find(kEmulatorKey), std::string::npos);
}

TEST_F(CliTest, CheckWithABadConfigurationExitsTwoNamingTheVariable) {
  auto environment = this->environment();
  environment["STRIPE_CHARGE_BY"] = "org_id";
  const CliResult result = run({"check"}, environment);
  EXPECT_EQ(result.status, 2);
  EXPECT_NE(result.err.find("STRIPE_CHARGE_BY"), std::string::npos) << result.err;
}

TEST_F(CliTest, CheckReadsALiteLlmConfigFile) {
  const std::string yaml = write_file(
      "gateway.yaml", {"litellm_settings:", "  success_callback: [\"stripe\"]",
                       "stripe_billing:", "  api_key: os.environ/STRIPE_API_KEY",
                       "  billing_mode: meter_events", "  meter_event_name: llm_tokens_from_yaml"});
  const CliResult result = run({"check", "--config", yaml});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_NE(result.out.find("meter=llm_tokens_from_yaml"), std::string::npos) << result.out;
}

TEST_F(CliTest, CheckOnlineFailsForAMissingPrice) {
  auto environment = this->environment();
  environment["STRIPE_PRICE_ID"] = "price_doesnotexist";
  const CliResult result = run({"check", "--online"}, environment);
  EXPECT_EQ(result.status, 1) << result.err;
  EXPECT_TRUE(
      std::regex_search(result.out, std::regex("FAIL +price price_doesnotexist .*not found")))
      << result.out;
}

TEST_F(CliTest, CheckOnlinePassesForAnExistingMeteredPrice) {
  const CliResult result = run({"check", "--online"});
  EXPECT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_NE(result.out.find("ok    price " + price_), std::string::npos) << result.out;
}

TEST_F(CliTest, CheckOnlineFindsTheConfiguredMeter) {
  emulator_.create_meter("llm_tokens");
  auto environment = this->environment();
  environment["STRIPE_BILLING_MODE"] = "meter_events";
  environment["STRIPE_METER_EVENT_NAME"] = "llm_tokens";
  EXPECT_EQ(run({"check", "--online"}, environment).status, 0);
  environment["STRIPE_METER_EVENT_NAME"] = "no_such_meter";
  const CliResult missing = run({"check", "--online"}, environment);
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.out.find("FAIL  meter no_such_meter"), std::string::npos) << missing.out;
}

TEST_F(CliTest, CheckOnlineSaysWhichPermissionsARestrictedKeyLacks) {
  const std::string key = "rk_test_meterwriteonly_0123456789abcdef";
  emulator_.add_restricted_key(key, {"rak_billing_meter_event_write"});
  emulator_.create_meter(kTokenBillingEventName);
  const std::string customer = emulator_.create_customer({});
  auto environment = this->environment();
  environment["STRIPE_API_KEY"] = key;
  environment["STRIPE_PRESET"] = "token_billing";
  environment.erase("STRIPE_PRICE_ID");
  environment["STRIPE_CUSTOMER_MAP"] = "alice=" + customer;
  const CliResult mapped = run({"check", "--online"}, environment);
  EXPECT_EQ(mapped.status, 0) << mapped.out << mapped.err;
  EXPECT_NE(mapped.out.find("ok    key may write meter events"), std::string::npos) << mapped.out;
  EXPECT_NE(mapped.out.find("lacks rak_customer_read (every customer is mapped)"),
            std::string::npos)
      << mapped.out;
  EXPECT_NE(mapped.out.find("meters not checked: the key lacks rak_billing_meter_read"),
            std::string::npos)
      << mapped.out;
  EXPECT_EQ((mapped.out + mapped.err).find(key), std::string::npos) << "the key is never shown";

  environment.erase("STRIPE_CUSTOMER_MAP");
  const CliResult unmapped = run({"check", "--online"}, environment);
  EXPECT_EQ(unmapped.status, 1) << unmapped.out;
  EXPECT_NE(unmapped.out.find("FAIL  key may not read customers"), std::string::npos)
      << unmapped.out;

  emulator_.add_restricted_key("rk_test_readsonly_0123456789abcdefgh", {"rak_customer_read"});
  environment["STRIPE_API_KEY"] = "rk_test_readsonly_0123456789abcdefgh";
  const CliResult reader = run({"check", "--online"}, environment);
  EXPECT_EQ(reader.status, 1) << reader.out;
  EXPECT_NE(reader.out.find("FAIL  key may not write meter events: it lacks "
                            "rak_billing_meter_event_write"),
            std::string::npos)
      << reader.out;
}

TEST_F(CliTest, CheckOnlineWithARefusedKeyFailsWithoutPrintingTheKey) {
  const std::string refused = "sk_test_refused_refused_refused_9876";
  auto environment = this->environment();
  environment["STRIPE_API_KEY"] = refused;
  const CliResult result = run({"check", "--online"}, environment);
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.out.find("Stripe refuses it"), std::string::npos) << result.out;
  EXPECT_EQ((result.out + result.err).find(refused), std::string::npos) << result.out << result.err;
}

// --- setup-test ----------------------------------------------------------------------------------

TEST_F(CliTest, SetupTestCreatesTheObjectsAndASecondRunCreatesNothingNew) {
  auto environment = this->environment();
  environment.erase("STRIPE_PRICE_ID");
  const CliResult first = run({"setup-test", "--customers", "2"}, environment);
  ASSERT_EQ(first.status, 0) << first.out << first.err;
  EXPECT_EQ(successful_posts("/v1/products"), 1u);
  EXPECT_EQ(successful_posts("/v1/prices"), 1u);
  EXPECT_EQ(successful_posts("/v1/customers"), 2u);
  EXPECT_EQ(successful_posts("/v1/subscriptions"), 2u);
  std::smatch price;
  ASSERT_TRUE(
      std::regex_search(first.out, price, std::regex("export STRIPE_PRICE_ID=(price_\\w+)")))
      << first.out;
  EXPECT_EQ((first.out + first.err).find(kEmulatorKey), std::string::npos);

  emulator_.clear_requests();
  const CliResult second = run({"setup-test", "--customers", "2"}, environment);
  ASSERT_EQ(second.status, 0) << second.out << second.err;
  EXPECT_EQ(count_requests("POST", "/v1/"), 0u);
  EXPECT_EQ(second.out.find("created"), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("export STRIPE_PRICE_ID=" + price[1].str()), std::string::npos);
}

TEST_F(CliTest, SetupTestBillsWhatItCreated) {
  auto environment = this->environment();
  environment.erase("STRIPE_PRICE_ID");
  const CliResult setup = run({"setup-test", "--customers", "1"}, environment);
  std::smatch price;
  ASSERT_TRUE(
      std::regex_search(setup.out, price, std::regex("export STRIPE_PRICE_ID=(price_\\w+)")));
  environment["STRIPE_PRICE_ID"] = price[1].str();
  const auto file = write_file("calls.jsonl", {payload_line("call-1", 25, "test-customer-1")});
  const CliResult replay = run({"replay", file}, environment);
  EXPECT_EQ(replay.status, 0) << replay.out << replay.err;
  std::int64_t billed = 0;
  for (const auto& [item, total] : emulator_.totals_by_item()) billed += total;
  EXPECT_EQ(billed, 25);
}

TEST_F(CliTest, SetupTestInAMeterModeCreatesTheMeterAndAMeterBackedPriceOnce) {
  auto environment = this->environment();
  environment.erase("STRIPE_PRICE_ID");
  environment["STRIPE_BILLING_MODE"] = "meter_events";
  environment["STRIPE_METER_EVENT_NAME"] = "llm_tokens_cli";
  const CliResult result = run({"setup-test", "--customers", "1"}, environment);
  ASSERT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_EQ(successful_posts("/v1/billing/meters"), 1u);
  EXPECT_EQ(successful_posts("/v1/prices"), 1u);
  EXPECT_EQ(successful_posts("/v1/subscriptions"), 0u);
  bool meter_backed = false;
  for (const auto& request : emulator_.requests()) {
    if (request.method == "POST" && request.path == "/v1/prices" && request.status == 200) {
      meter_backed = request.body.find("recurring%5Bmeter%5D=mtr_") != std::string::npos;
    }
  }
  EXPECT_TRUE(meter_backed) << "the price bills the meter (recurring[meter])";
  EXPECT_NE(result.out.find("export STRIPE_METER_EVENT_NAME=llm_tokens_cli"), std::string::npos);
  emulator_.clear_requests();
  ASSERT_EQ(run({"setup-test", "--customers", "1"}, environment).status, 0);
  EXPECT_EQ(successful_posts("/v1/billing/meters") + successful_posts("/v1/customers") +
                successful_posts("/v1/prices"),
            0u);
}

TEST_F(CliTest, SetupTestRefusesALiveKey) {
  auto environment = this->environment();
  environment["STRIPE_API_KEY"] = "sk_live_abcdefgh_ijklmnop_qrstuvwx";
  const CliResult result = run({"setup-test"}, environment);
  EXPECT_EQ(result.status, 2);
  EXPECT_NE(result.err.find("live key"), std::string::npos) << result.err;
  EXPECT_EQ(result.err.find("sk_live_abcdefgh_ijklmnop_qrstuvwx"), std::string::npos);
  EXPECT_TRUE(emulator_.requests().empty());
}

// --- replay --------------------------------------------------------------------------------------

TEST_F(CliTest, ReplayBillsEveryLineOfAJsonlFile) {
  const std::string item = add_customer("alice");
  const auto file = write_file(
      "calls.jsonl", {payload_line("call-1", 10, "alice"), payload_line("call-2", 20, "alice"),
                      payload_line("call-3", 30, "alice")});
  const CliResult result = run({"replay", file});
  EXPECT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_EQ(emulator_.total_usage(item), 60);
  EXPECT_NE(result.out.find("lines read: 3, accepted: 3 (duplicates: 0), rejected: 0"),
            std::string::npos)
      << result.out;
  EXPECT_NE(result.err.find("replay: 100%"), std::string::npos) << result.err;  // not a terminal
}

TEST_F(CliTest, ReplayBillsARepeatedCallOnceAndCountsItAsADuplicate) {
  const std::string item = add_customer("alice");
  const auto file = write_file("calls.jsonl", {payload_line("call-1", 10, "alice")});
  ASSERT_EQ(run({"replay", file}).status, 0);
  const CliResult again = run({"replay", file});
  EXPECT_EQ(again.status, 0);
  EXPECT_NE(again.out.find("accepted: 1 (duplicates: 1)"), std::string::npos) << again.out;
  EXPECT_EQ(emulator_.total_usage(item), 10);
}

TEST_F(CliTest, ReplayReportsTheLineNumberOfEveryRejectedLineAndExitsOne) {
  const std::string item = add_customer("alice");
  const auto file = write_file("calls.jsonl", {payload_line("call-1", 10, "alice"), "{not json",
                                               payload_line("call-3", 30, "alice"), "[1, 2]",
                                               R"({"model": "gpt-test", "total_tokens": 5})"});
  const CliResult result = run({"replay", file});
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.out.find("rejected: 3"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("line 2: rejected: payload is not valid JSON"), std::string::npos);
  EXPECT_NE(result.out.find("line 4: rejected: payload must be a JSON object"), std::string::npos);
  EXPECT_NE(result.out.find("line 5: rejected: no litellm_call_id"), std::string::npos);
  EXPECT_EQ(emulator_.total_usage(item), 40);
}

// --- status and retry ----------------------------------------------------------------------------

TEST_F(CliTest, StatusShowsCountsByStateAndTheReasonsOfParkedEvents) {
  add_customer("alice");
  const auto file = write_file(
      "calls.jsonl", {payload_line("call-1", 10, "alice"), payload_line("call-2", 20, "")});
  ASSERT_EQ(run({"replay", file}).status, 0);
  const CliResult result = run({"status"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_TRUE(std::regex_search(result.out, std::regex("delivered +1\n"))) << result.out;
  EXPECT_TRUE(std::regex_search(result.out, std::regex("parked +1\n"))) << result.out;
  EXPECT_TRUE(std::regex_search(result.out, std::regex("pending +0\n"))) << result.out;
  EXPECT_TRUE(std::regex_search(result.out, std::regex("parked +missing_customer +1\n")))
      << result.out;
}

TEST_F(CliTest, StatusWithoutAnOutboxExitsThree) { EXPECT_EQ(run({"status"}).status, 3); }

TEST_F(CliTest, RetryRequeuesTheEventsOfOneReason) {
  store_failed("call-1", EventState::kParked, "missing_customer");
  store_failed("call-2", EventState::kDead, "stripe_parameter_invalid");
  const CliResult result = run({"retry", "--reason", "missing_customer"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_NE(result.out.find("requeued 1 events"), std::string::npos) << result.out;
  auto counts = open_outbox()->counts();
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->pending, 1);
  EXPECT_EQ(counts->parked, 0);
  EXPECT_EQ(counts->dead, 1);
}

TEST_F(CliTest, RetryLeavesMaxDeliveryAgeExceededDeadUnlessForced) {
  store_failed("call-1", EventState::kDead, "max_delivery_age_exceeded");
  store_failed("call-2", EventState::kDead, "stripe_parameter_invalid");
  const CliResult all = run({"retry"});
  EXPECT_EQ(all.status, 0);
  EXPECT_NE(all.out.find("requeued 1 events"), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("left 1 events dead with max_delivery_age_exceeded"), std::string::npos);
  const CliResult refused = run({"retry", "--reason", "max_delivery_age_exceeded"});
  EXPECT_EQ(refused.status, 2);
  EXPECT_NE(refused.err.find("may already be billed"), std::string::npos) << refused.err;
  EXPECT_EQ(open_outbox()->counts()->dead, 1);
  const CliResult forced = run({"retry", "--reason", "max_delivery_age_exceeded", "--force"});
  EXPECT_EQ(forced.status, 0);
  EXPECT_EQ(open_outbox()->counts()->dead, 0);
}

// --- export --------------------------------------------------------------------------------------

class CliExportTest : public CliTest {
 protected:
  // A delivered row whose host-supplied values hold every character CSV must quote.
  void SetUp() override {
    auto outbox = open_outbox();
    NewEvent event;
    event.call_id = "call-\"1\",x";
    event.dimension = "total_tokens";
    event.customer_key = "acme, \"inc\"\r\nwest";
    event.quantity = 42;
    event.event_time = kEventTime;
    event.accepted_at_ms = kEventTime * 1000;
    event.model = "gpt-4o,\n\"mini\"";
    event.cost = 0.25;
    event.prompt_tokens = 20;
    event.completion_tokens = 22;
    ASSERT_TRUE(outbox->insert({event}));
    auto due = outbox->due_events(kEventTime * 1000, 10);
    ASSERT_TRUE(due && due->size() == 1);
    NewBatch spec;
    spec.batch.target = "si_test";
    spec.batch.customer_id = "cus_test";
    spec.batch.customer_key = event.customer_key;
    spec.batch.quantity = 42;
    spec.batch.timestamp = kEventTime;
    spec.members.push_back({due->front().id, "cus_test"});
    PlanWrites writes;
    writes.batches.push_back(std::move(spec));
    auto batches = outbox->apply(std::move(writes), kEventTime * 1000, 1);
    ASSERT_TRUE(batches && batches->size() == 1);
    ASSERT_TRUE(*outbox->batch_delivered(batches->front(), "req_123", (kEventTime + 5) * 1000));
  }

  static constexpr std::int64_t kEventTime = 1767225600;  // 2026-01-01T00:00:00Z
};

TEST_F(CliExportTest, CsvQuotesHostileValuesAsRfc4180) {
  const CliResult result = run({"export", "--format", "csv"});
  ASSERT_EQ(result.status, 0) << result.err;
  const auto records = parse_csv(result.out);
  ASSERT_EQ(records.size(), 2u) << result.out;
  EXPECT_EQ(records[0].front(), "call_id");
  const std::vector<std::string> expected = {"call-\"1\",x",
                                             "acme, \"inc\"\r\nwest",
                                             "cus_test",
                                             "usage_record",
                                             "total_tokens",
                                             "gpt-4o,\n\"mini\"",
                                             "20",
                                             "22",
                                             "0.25",
                                             "42",
                                             "2026-01-01T00:00:00Z",
                                             "req_123",
                                             "2026-01-01T00:00:05Z"};
  EXPECT_EQ(records[1], expected);
}

TEST_F(CliExportTest, JsonlRoundTripsEveryField) {
  const CliResult result = run({"export", "--format", "jsonl"});
  ASSERT_EQ(result.status, 0) << result.err;
  std::istringstream lines(result.out);
  std::string line;
  ASSERT_TRUE(std::getline(lines, line));
  const json row = json::parse(line);
  EXPECT_EQ(row["call_id"], "call-\"1\",x");
  EXPECT_EQ(row["customer_key"], "acme, \"inc\"\r\nwest");
  EXPECT_EQ(row["model"], "gpt-4o,\n\"mini\"");
  EXPECT_EQ(row["quantity"], 42);
  EXPECT_EQ(row["cost"], 0.25);
  EXPECT_EQ(row["request_id"], "req_123");
  EXPECT_EQ(row["event_time"], "2026-01-01T00:00:00Z");
  EXPECT_FALSE(std::getline(lines, line));
}

TEST_F(CliExportTest, ATimeRangeLeavesOutRowsOutsideIt) {
  const CliResult result = run({"export", "--format", "jsonl", "--since", "2026-01-01T00:00:01Z"});
  ASSERT_EQ(result.status, 0) << result.err;
  EXPECT_TRUE(result.out.empty()) << result.out;
}

// --- reconcile -----------------------------------------------------------------------------------

class CliReconcileTest : public CliTest {
 protected:
  void SetUp() override {
    item_ = add_customer("alice", &customer_);
    const auto file = write_file(
        "calls.jsonl", {payload_line("call-1", 10, "alice"), payload_line("call-2", 20, "alice")});
    ASSERT_EQ(run({"replay", file}).status, 0);
  }
  CliResult reconcile() {
    return run({"reconcile", "--since", std::to_string(unix_now() - 3600), "--until",
                std::to_string(unix_now() + 60)});
  }

  std::string item_, customer_;
};

TEST_F(CliReconcileTest, ExitsZeroWhenTheLedgerMatchesStripe) {
  const CliResult result = reconcile();
  EXPECT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_TRUE(std::regex_search(result.out, std::regex("usage_record +alice +" + customer_ + " +" +
                                                       item_ + " .* 30 +30 +0\n")))
      << result.out;
}

TEST_F(CliReconcileTest, ExitsOneAndShowsTheDifferenceWhenStripeHasMore) {
  auto transport = make_curl_transport();
  StripeClient client(*transport, {emulator_.base_url(), Secret(kEmulatorKey), kDefaultApiVersion,
                                   std::chrono::seconds(5)});
  ASSERT_TRUE(client.post_form("/v1/subscription_items/" + item_ + "/usage_records",
                               {{"quantity", "100"}}, "extra-usage-record"));
  const CliResult result = reconcile();
  EXPECT_EQ(result.status, 1) << result.out << result.err;
  EXPECT_TRUE(std::regex_search(result.out, std::regex(" 30 +130 +100\n"))) << result.out;
  EXPECT_EQ(run({"reconcile", "--since", std::to_string(unix_now() - 3600), "--until",
                 std::to_string(unix_now() + 60), "--tolerance", "100"})
                .status,
            0);
}

TEST_F(CliReconcileTest, ATimeThatIsNeitherUnixNorRfc3339IsAUsageError) {
  const CliResult result = run({"reconcile", "--since", "yesterday", "--until", "0"});
  EXPECT_EQ(result.status, 2);
  EXPECT_NE(result.err.find("--since"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace stripe_billing
