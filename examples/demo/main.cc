// stripe-billing-demo: the whole path on one machine. It starts the Stripe emulator with three
// seeded customers and a billing meter, starts stripe-gateway billing to it in dual mode (legacy
// usage records and meter events for every call, as while migrating), sends each user's key a
// few chat completions, stops the gateway (which flushes its billing), and compares what each
// user was served with what Stripe recorded on both sides. Exit code 0 only when every user
// matches on both.
//
//   stripe-billing-demo [--emulator PATH] [--gateway PATH]
#include <httplib.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "child_process.h"

namespace {

namespace fs = std::filesystem;
using demo::ChildProcess;
using demo::Deadline;
using nlohmann::json;

constexpr const char* kStripeApiKey = "sk_test_emulator_0000000000000000";
constexpr const char* kModel = "demo-echo";
constexpr const char* kMeter = "llm_tokens";

// Words per prompt of each request a user sends.
const std::vector<std::pair<std::string, std::vector<int>>> kPlan = {
    {"alice", {8, 60, 250}},
    {"bob", {3, 40}},
    {"carol", {15, 120, 30, 500}},
};

struct UserRow {
  std::string user;
  std::string customer;
  std::int64_t tokens_served = 0;
  std::int64_t usage_recorded = 0;
  std::int64_t metered = 0;
  bool matches() const { return tokens_served == usage_recorded && tokens_served == metered; }
};

Deadline in_seconds(int seconds) {
  return std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
}

// A directory for the demo's files; removed at the end unless keep() asked to leave it.
class WorkDirectory {
 public:
  WorkDirectory() {
    std::string name = (fs::temp_directory_path() / "stripe-billing-demo.XXXXXX").string();
    if (mkdtemp(name.data()) == nullptr) throw std::runtime_error("cannot create " + name);
    path_ = name;
  }
  ~WorkDirectory() {
    std::error_code ignored;
    if (!keep_) fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }
  void keep() { keep_ = true; }

 private:
  fs::path path_;
  bool keep_ = false;
};

fs::path sibling(const std::string& name) {
  const fs::path here = fs::read_symlink("/proc/self/exe").parent_path();
  // Installed side by side, or in the build tree (examples/ and emulator/).
  for (const fs::path& dir : {here, here.parent_path() / "emulator"}) {
    if (fs::exists(dir / name)) return fs::canonical(dir / name);
  }
  throw std::runtime_error("cannot find " + name + " near " + here.string() + "; pass its path");
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream file(path);
  if (!(file << text)) throw std::runtime_error("cannot write " + path.string());
}

std::string read_file(const fs::path& path) {
  std::ifstream file(path);
  std::ostringstream text;
  if (!(text << file.rdbuf())) throw std::runtime_error("cannot read " + path.string());
  return text.str();
}

json seed() {
  json customers = json::array();
  for (const auto& [user, prompts] : kPlan) {
    customers.push_back(
        {{"email", user + "@example.com"}, {"metadata", {{"litellm_customer_id", user}}}});
  }
  return {{"price", {{"product_name", "LLM tokens"}, {"unit_amount", 1}, {"currency", "usd"}}},
          {"customers", customers},
          {"meters", {{{"event_name", kMeter}}}}};
}

std::string gateway_yaml() {
  std::string yaml =
      "model_list:\n"
      "  - model_name: demo-echo\n"
      "    litellm_params: {model: echo}\n"
      "litellm_settings:\n"
      "  success_callback: [\"stripe\"]\n"
      "general_settings:\n"
      "  api_keys:\n";
  for (const auto& [user, prompts] : kPlan) {
    yaml += "    sk-gw-" + user + ": {user_id: " + user + ", team_id: demo, key_alias: " + user +
            "-key}\n";
  }
  return yaml +
         "stripe_billing:\n"
         "  api_key: os.environ/STRIPE_API_KEY\n"
         "  price_id: os.environ/STRIPE_PRICE_ID\n"
         "  api_base: os.environ/STRIPE_API_BASE\n"
         "  billing_mode: dual\n"
         "  meter_event_name: " +
         std::string(kMeter) +
         "\n"
         "  charge_by: user_id\n";
}

std::string prompt_of(int words) {
  static const std::vector<std::string> kWords = {
      "please", "summarise", "the", "quarterly", "token", "usage", "of", "our", "gateway"};
  std::string prompt;
  for (int i = 0; i < words; ++i) prompt += (i ? " " : "") + kWords[i % kWords.size()];
  return prompt;
}

// Sends one chat completion with `user`'s key; returns the total_tokens the gateway reported.
std::int64_t chat(httplib::Client& gateway, const std::string& user, int words) {
  const json request = {{"model", kModel},
                        {"messages",
                         {{{"role", "system"}, {"content", "You are a helpful assistant."}},
                          {{"role", "user"}, {"content", prompt_of(words)}}}}};
  const auto response =
      gateway.Post("/v1/chat/completions", {{"Authorization", "Bearer sk-gw-" + user}},
                   request.dump(), "application/json");
  if (!response || response->status != 200) {
    throw std::runtime_error("chat completion for " + user + " failed: " +
                             (response ? std::to_string(response->status) + " " + response->body
                                       : httplib::to_string(response.error())));
  }
  return json::parse(response->body).at("usage").at("total_tokens").get<std::int64_t>();
}

json emulator_totals(const std::string& base_url) {
  httplib::Client emulator(base_url);
  const auto response = emulator.Get("/_emulator/totals");
  if (!response || response->status != 200) {
    throw std::runtime_error("GET " + base_url + "/_emulator/totals failed");
  }
  return json::parse(response->body);
}

void print_table(const std::vector<UserRow>& rows) {
  std::printf("\n%-7s %-24s %14s %15s %15s  %s\n", "user", "Stripe customer", "tokens served",
              "usage records", "meter events", "match");
  for (const auto& row : rows) {
    std::printf("%-7s %-24s %14lld %15lld %15lld  %s\n", row.user.c_str(), row.customer.c_str(),
                static_cast<long long>(row.tokens_served),
                static_cast<long long>(row.usage_recorded), static_cast<long long>(row.metered),
                row.matches() ? "✓" : "✗");
  }
}

int run(const fs::path& emulator_path, const fs::path& gateway_path, const fs::path& work) {
  write_file(work / "seed.json", seed().dump(2));
  ChildProcess emulator("stripe-emulator",
                        {emulator_path.string(), "--host", "127.0.0.1", "--port", "0", "--api-key",
                         kStripeApiKey, "--seed", (work / "seed.json").string(), "--state-file",
                         (work / "emulator-state.json").string()},
                        {}, work / "emulator.log");
  emulator.wait_for_file(work / "emulator-state.json", in_seconds(15));
  const json state = json::parse(read_file(work / "emulator-state.json"));
  const std::string stripe_base = state.at("base_url");
  const std::string price_id = state.at("price_id");
  std::printf("emulator  %s  price %s, %zu customers with a subscription on it, meter %s\n",
              stripe_base.c_str(), price_id.c_str(), state.at("customers").size(), kMeter);

  write_file(work / "gateway.yaml", gateway_yaml());
  ChildProcess gateway("stripe-gateway",
                       {gateway_path.string(), "--config", (work / "gateway.yaml").string(),
                        "--port", "0", "--port-file", (work / "gateway.port").string()},
                       {{"STRIPE_API_KEY", kStripeApiKey},
                        {"STRIPE_PRICE_ID", price_id},
                        {"STRIPE_API_BASE", stripe_base},
                        {"STRIPE_OUTBOX_PATH", (work / "outbox.db").string()}},
                       work / "gateway.log");
  gateway.wait_for_file(work / "gateway.port", in_seconds(15));
  const int gateway_port = std::stoi(read_file(work / "gateway.port"));
  std::printf(
      "gateway   http://127.0.0.1:%d  billing_mode: dual, charge_by: user_id (each bearer "
      "key's user_id is the customer's metadata.litellm_customer_id)\n",
      gateway_port);

  httplib::Client client("127.0.0.1", gateway_port);
  client.set_read_timeout(std::chrono::seconds(30));
  std::vector<UserRow> rows;
  int requests = 0;
  for (const auto& [user, prompts] : kPlan) {
    UserRow row{user, "", 0, 0};
    for (int words : prompts) row.tokens_served += chat(client, user, words);
    requests += static_cast<int>(prompts.size());
    rows.push_back(row);
  }
  std::printf("sent      %d chat completions to %s\n", requests, kModel);

  gateway.terminate();
  const auto gateway_status = gateway.wait(in_seconds(20));
  if (gateway_status != 0) {
    throw std::runtime_error("stripe-gateway did not stop cleanly after SIGTERM (status " +
                             (gateway_status ? std::to_string(*gateway_status) : "running") + ")");
  }
  std::printf("stopped   stripe-gateway (SIGTERM, exit 0): its billing is flushed\n");

  const json all_totals = emulator_totals(stripe_base);
  const json& totals = all_totals.at("customers");
  const json meter_totals = all_totals.at("meters").value(kMeter, json::object());
  for (auto& row : rows) {
    for (const auto& customer : state.at("customers")) {
      if (customer.at("metadata").value("litellm_customer_id", "") == row.user) {
        row.customer = customer.at("id");
      }
    }
    row.usage_recorded = totals.value(row.customer, std::int64_t{0});
    row.metered = static_cast<std::int64_t>(meter_totals.value(row.customer, 0.0));
  }
  print_table(rows);

  emulator.terminate();
  if (emulator.wait(in_seconds(10)) != 0)
    std::fprintf(stderr, "stripe-emulator did not stop cleanly\n");
  const bool all_match =
      std::all_of(rows.begin(), rows.end(), [](const UserRow& row) { return row.matches(); });
  std::printf("\n%s\n", all_match ? "every user was billed exactly the tokens served, on both sides"
                                  : "MISMATCH: Stripe's usage differs from the tokens served");
  return all_match ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"End-to-end demo: gateway -> stripe_billing -> Stripe emulator"};
  std::string emulator_path;
  std::string gateway_path;
  app.add_option("--emulator", emulator_path, "stripe-emulator binary (default: found nearby)");
  app.add_option("--gateway", gateway_path, "stripe-gateway binary (default: found nearby)");
  CLI11_PARSE(app, argc, argv);

  WorkDirectory work;
  try {
    const int status =
        run(emulator_path.empty() ? sibling("stripe-emulator") : fs::path(emulator_path),
            gateway_path.empty() ? sibling("stripe-gateway") : fs::path(gateway_path), work.path());
    if (status != 0) {
      work.keep();
      std::printf("logs kept in %s\n", work.path().c_str());
    }
    return status;
  } catch (const std::exception& e) {
    work.keep();
    std::fprintf(stderr, "stripe-billing-demo: %s\nlogs kept in %s\n", e.what(),
                 work.path().c_str());
    return 1;
  }
}
