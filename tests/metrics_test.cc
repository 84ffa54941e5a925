// Metrics: the stats() snapshot, its JSON and its Prometheus text exposition (checked against
// the format's rules by a small parser), the admin-UI descriptor, and the log options.
#include "stripe_billing/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "stripe_billing/callback.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using stripe_emulator::Fault;
using stripe_emulator::FaultKind;
using ::testing::HasSubstr;
using testing::in_seconds;

// A parsed exposition: families with their TYPE, and every sample.
struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> types;  // family -> counter | gauge | histogram
  std::vector<Sample> samples;
  std::vector<std::string> problems;

  std::vector<Sample> of(const std::string& name) const {
    std::vector<Sample> out;
    for (const auto& sample : samples) {
      if (sample.name == name) out.push_back(sample);
    }
    return out;
  }
};

// Label values: \\, \" and \n are the only escapes.
bool parse_labels(const std::string& text, std::map<std::string, std::string>& labels) {
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t equals = text.find('=', at);
    if (equals == std::string::npos || equals + 1 >= text.size() || text[equals + 1] != '"') {
      return false;
    }
    const std::string name = text.substr(at, equals - at);
    if (!std::regex_match(name, std::regex("[a-zA-Z_][a-zA-Z0-9_]*"))) return false;
    std::string value;
    std::size_t i = equals + 2;
    for (; i < text.size() && text[i] != '"'; ++i) {
      if (text[i] == '\\') {
        if (++i >= text.size()) return false;
        if (text[i] == 'n') {
          value += '\n';
        } else if (text[i] == '\\' || text[i] == '"') {
          value += text[i];
        } else {
          return false;
        }
      } else {
        value += text[i];
      }
    }
    if (i >= text.size()) return false;
    if (!labels.emplace(name, value).second) return false;
    at = i + 1;
    if (at < text.size()) {
      if (text[at] != ',') return false;
      ++at;
    }
  }
  return true;
}

Exposition parse_exposition(const std::string& text) {
  Exposition out;
  std::istringstream lines(text);
  std::string line;
  std::set<std::string> series;
  std::set<std::string> with_samples;
  const std::regex help("# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+");
  const std::regex type("# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)");
  const std::regex sample("([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{(.*)\\})? (\\S+)");
  std::smatch match;
  while (std::getline(lines, line)) {
    if (std::regex_match(line, match, type)) {
      if (!out.types.emplace(match[1], match[2]).second)
        out.problems.push_back("TYPE twice: " + line);
      if (with_samples.count(match[1]) != 0) out.problems.push_back("TYPE after samples: " + line);
      continue;
    }
    if (std::regex_match(line, help)) continue;
    if (!std::regex_match(line, match, sample)) {
      out.problems.push_back("not a sample: " + line);
      continue;
    }
    Sample parsed;
    parsed.name = match[1];
    if (match[2].matched && !parse_labels(match[3], parsed.labels)) {
      out.problems.push_back("bad labels: " + line);
    }
    const std::string value = match[4];
    if (value == "+Inf") {
      parsed.value = INFINITY;
    } else {
      std::istringstream number(value);
      number.imbue(std::locale::classic());
      if (!(number >> parsed.value) || !number.eof()) out.problems.push_back("bad value: " + line);
    }
    std::string family = parsed.name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string tail(suffix);
      if (out.types.count(family) == 0 && family.size() > tail.size() &&
          family.compare(family.size() - tail.size(), tail.size(), tail) == 0) {
        const std::string base = family.substr(0, family.size() - tail.size());
        if (out.types.count(base) != 0 && out.types[base] == "histogram") family = base;
      }
    }
    if (out.types.count(family) == 0) out.problems.push_back("no TYPE before: " + line);
    if (out.types[family] == "counter" && parsed.name.size() > 6 &&
        parsed.name.compare(parsed.name.size() - 6, 6, "_total") != 0) {
      out.problems.push_back("counter without _total: " + line);
    }
    with_samples.insert(family);
    if (!series.insert(parsed.name + (match[2].matched ? match[2].str() : "")).second) {
      out.problems.push_back("duplicate series: " + line);
    }
    out.samples.push_back(std::move(parsed));
  }
  return out;
}

class MetricsTest : public testing::EmulatorTest {
 protected:
  static UsageEvent of_model(const std::string& call_id, std::int64_t tokens,
                             const std::string& model) {
    UsageEvent e = for_customer(call_id, tokens);
    e.model = model;
    return e;
  }

  // Bills three calls (one model with hostile characters) through one 500 and returns the stats.
  StripeLoggerStats billed_stats() {
    add_customer("alice");
    emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/subscription_items/", {}});
    Config config = EmulatorTest::config();
    config.max_backoff_s = "1";
    auto logger = make_logger(config);
    logger->log_success_event(for_customer("call-1", 10));
    logger->log_success_event(for_customer("call-2", 20));
    logger->log_success_event(of_model("call-3", 5, kHostileModel));
    EXPECT_TRUE(logger->flush(in_seconds(20)));
    return logger->stats();
  }

  static constexpr const char* kHostileModel = "we\"ird\\mod\nel";
};

TEST_F(MetricsTest, ThePrometheusTextFollowsTheExpositionFormat) {
  const std::string text = to_prometheus(billed_stats());
  const Exposition exposition = parse_exposition(text);
  EXPECT_TRUE(exposition.problems.empty()) << ::testing::PrintToString(exposition.problems) << "\n"
                                           << text;
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(exposition.types.at("stripe_billing_stripe_request_duration_seconds"), "histogram");
  EXPECT_EQ(exposition.types.at("stripe_billing_outbox_events"), "gauge");
}

TEST_F(MetricsTest, HistogramBucketsAreCumulativeAndEndInTheCount) {
  const Exposition exposition = parse_exposition(to_prometheus(billed_stats()));
  const auto buckets = exposition.of("stripe_billing_stripe_request_duration_seconds_bucket");
  ASSERT_EQ(buckets.size(), LatencyHistogram::bounds().size() + 1);
  double previous = 0, previous_le = -1;
  for (const auto& bucket : buckets) {
    const std::string le = bucket.labels.at("le");
    const double bound = le == "+Inf" ? INFINITY : std::stod(le);
    EXPECT_GT(bound, previous_le);
    EXPECT_GE(bucket.value, previous);
    previous = bucket.value;
    previous_le = bound;
  }
  EXPECT_EQ(buckets.back().labels.at("le"), "+Inf");
  const auto count = exposition.of("stripe_billing_stripe_request_duration_seconds_count");
  ASSERT_EQ(count.size(), 1u);
  EXPECT_EQ(buckets.back().value, count[0].value);
  EXPECT_GT(count[0].value, 0);
}

TEST_F(MetricsTest, RequestsAreCountedByEndpointAndStatusClass) {
  const StripeLoggerStats stats = billed_stats();
  std::map<std::pair<std::string, std::string>, std::uint64_t> requests;
  std::uint64_t total = 0;
  for (const auto& request : stats.requests) {
    requests[{request.endpoint, request.status_class}] = request.count;
    total += request.count;
  }
  EXPECT_EQ((requests[{"usage_records", "5xx"}]), 1u);
  EXPECT_EQ((requests[{"usage_records", "2xx"}]), 3u);
  EXPECT_EQ((requests[{"customer_search", "2xx"}]), 1u);
  EXPECT_EQ((requests[{"subscriptions", "2xx"}]), 1u);
  EXPECT_EQ(stats.request_latency.count, total);
  EXPECT_EQ(stats.retries, 1u);
}

TEST_F(MetricsTest, QuantityIsCountedPerModelAndHostileNamesAreEscaped) {
  const StripeLoggerStats stats = billed_stats();
  EXPECT_EQ(stats.quantity_by_model.at("gpt-test"), 30u);
  EXPECT_EQ(stats.quantity_by_model.at(kHostileModel), 5u);
  const Exposition exposition = parse_exposition(to_prometheus(stats));
  bool found = false;
  for (const auto& sample : exposition.of("stripe_billing_quantity_delivered_total")) {
    if (sample.labels.at("model") == kHostileModel) found = sample.value == 5;
  }
  EXPECT_TRUE(found) << "the escaped label must read back as the model name";
}

TEST_F(MetricsTest, FailedLookupsAreCounted) {
  add_customer("alice");
  emulator_.inject(Fault{FaultKind::kStatus, 500, "/v1/customers/search", {}});
  Config config = EmulatorTest::config();
  config.max_backoff_s = "1";
  auto logger = make_logger(config);
  logger->log_success_event(for_customer("call-1", 10));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  const auto stats = logger->stats();
  EXPECT_EQ(stats.lookup_failures, 1u);
  EXPECT_EQ(stats.delivered, 1u);
}

TEST_F(MetricsTest, TheJsonCarriesTheSameNumbers) {
  const StripeLoggerStats stats = billed_stats();
  const auto json = nlohmann::json::parse(to_json(stats));
  EXPECT_EQ(json["events"]["accepted"], stats.accepted);
  EXPECT_EQ(json["events"]["delivered"], 3u);
  EXPECT_EQ(json["outbox"]["pending"], 0u);
  EXPECT_EQ(json["quantity"]["by_model"]["gpt-test"], 30u);
  EXPECT_EQ(json["stripe"]["latency_seconds"]["count"], stats.request_latency.count);
  EXPECT_EQ(json["stripe"]["requests"].size(), stats.requests.size());
  EXPECT_EQ(json["lookups"]["misses"], stats.lookup_misses);
}

TEST(CallbackUiDescriptor, DescribesEverySettingTheWayLiteLlmListsCallbacks) {
  const auto descriptor = nlohmann::json::parse(callback_ui_descriptor());
  EXPECT_EQ(descriptor["litellm_callback_name"], "stripe");
  EXPECT_EQ(descriptor["ui_callback_name"], "Stripe Billing");
  EXPECT_EQ(descriptor["litellm_callback_params"].get<std::vector<std::string>>(),
            config_variable_names());
  std::map<std::string, nlohmann::json> params;
  for (const auto& param : descriptor["params"]) params[param["name"]] = param;
  ASSERT_EQ(params.size(), config_variable_names().size());
  EXPECT_EQ(params["STRIPE_API_KEY"]["secret"], true);
  EXPECT_EQ(params["STRIPE_API_KEY"]["required"], true);
  EXPECT_EQ(params["STRIPE_API_KEY"]["yaml_key"], "api_key");
  EXPECT_EQ(params["STRIPE_PRICE_ID"]["required"], true);
  EXPECT_EQ(params["STRIPE_METER_EVENT_NAME"]["required"], false);
  EXPECT_EQ(params["STRIPE_METER_EVENT_NAME"]["required_in"].size(), 4u);  // the meter modes
  EXPECT_EQ(params["STRIPE_CHARGE_BY"]["default"], "end_user_id");
  EXPECT_TRUE(params["STRIPE_CUSTOMER_MAP"]["default"].is_null());
  EXPECT_EQ(params["ENVIRONMENT"]["yaml_key"], "environment");
  for (const auto& [name, param] : params) {
    EXPECT_FALSE(param["description"].get<std::string>().empty()) << name;
    EXPECT_EQ(param["secret"], name == "STRIPE_API_KEY" || name == "STRIPE_OUTBOX_URL" ||
                                   name == "STRIPE_WEBHOOK_SECRET")
        << name;
  }
}

TEST_F(MetricsTest, ActivityLinesCanBeJson) {
  add_customer("alice");
  testing::CapturedLog log;
  Config config = EmulatorTest::config();
  config.log_format = "json";
  auto logger = make_logger(config, log.logger());
  logger->log_success_event(for_customer("call-1", 10));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  std::istringstream lines(log.text());
  std::string line;
  int activities = 0;
  while (std::getline(lines, line)) {
    const std::size_t brace = line.find('{');
    if (brace == std::string::npos || line.find("\"activity\"") == std::string::npos) continue;
    const auto json = nlohmann::json::parse(line.substr(brace));
    EXPECT_EQ(json["logger"], "stripe_billing");
    EXPECT_EQ(json["activity"], "usage_record");
    EXPECT_EQ(json["success"], true);
    EXPECT_EQ(json["quantity"], 10);
    EXPECT_FALSE(json["request_id"].get<std::string>().empty());
    EXPECT_TRUE(json.contains("latency_ms"));
    ++activities;
  }
  EXPECT_EQ(activities, 1) << log.text();
}

TEST_F(MetricsTest, TheHostsSinksGetALoggerNamedStripeBilling) {
  add_customer("alice");
  std::ostringstream written;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(written);
  sink->set_pattern("%n %v");
  StripeLoggerOptions options;
  options.sinks = {sink};
  auto made = make_stripe_logger(EmulatorTest::config(), std::move(options));
  ASSERT_TRUE(made);
  (*made)->log_success_event(for_customer("call-1", 10));
  ASSERT_TRUE((*made)->flush(in_seconds(20)));
  made->reset();
  EXPECT_THAT(written.str(), HasSubstr("stripe_billing stripe_billing activity=usage_record"));
}

TEST_F(MetricsTest, AFloodOfRefusedEventsIsLoggedAtMostTwentyLinesASecond) {
  testing::CapturedLog log;
  auto logger = make_logger(EmulatorTest::config(), log.logger());
  for (int i = 0; i < 500; ++i) {
    UsageEvent bad = for_customer("bad-" + std::to_string(i), -1);
    logger->log_success_event(bad);
  }
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(logger->stats().rejected.at("negative_quantity"), 500u);
  std::size_t lines = 0;
  for (std::size_t at = log.text().find("activity=accept"); at != std::string::npos;
       at = log.text().find("activity=accept", at + 1)) {
    ++lines;
  }
  EXPECT_GE(lines, 20u);
  EXPECT_LT(lines, 500u);
}

}  // namespace
}  // namespace stripe_billing
