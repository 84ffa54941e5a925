// stripe-billing-demo: the whole path on one machine. It starts the Stripe emulator with three
// seeded customers and a billing meter, starts stripe-gateway billing to it in dual mode (legacy
// usage records and meter events for every call, as while migrating), sends each user's key a
// few chat completions, stops the gateway (which flushes its billing), and compares what each
// user was served with what Stripe recorded on both sides. Exit code 0 only when every user
// matches on both.
//
// With --fleet N it runs N gateway replicas on one PostgreSQL outbox (--outbox-url, a fresh
// schema for the run, a 3 s engine lease) instead: it sends the same users' calls round-robin
// through all of them, SIGKILLs one (the replica running the delivery engine, told from its log)
// a third of the way through, goes on through the survivors, waits until Stripe has billed what
// was served (at most --settle-s), stops the survivors and compares as above.
//
//   stripe-billing-demo [--emulator PATH] [--gateway PATH]
//   stripe-billing-demo --fleet 3 --outbox-url postgresql://... [--rounds 3] [--pace-ms 100]
//                       [--settle-s 60] [--emulator PATH] [--gateway PATH]
#include <httplib.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "child_process.h"

namespace {

namespace fs = std::filesystem;
using demo::ChildProcess;
using demo::Deadline;
using nlohmann::json;
using SteadyTime = std::chrono::steady_clock::time_point;

constexpr const char* kStripeApiKey = "sk_test_emulator_0000000000000000";
constexpr const char* kModel = "demo-echo";
constexpr const char* kMeter = "llm_tokens";

// What stripe_billing logs when a replica of a fleet takes the engine lease, and when it loses it.
constexpr const char* kRunsEngine = "this replica runs the delivery engine now";
constexpr const char* kStandsBy = "another replica runs the delivery engine; this one stands by";
constexpr const char* kLostLease = "cannot renew the engine lease";

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
  // Stripe has more than was served: no later delivery can mend that.
  bool overbilled() const { return usage_recorded > tokens_served || metered > tokens_served; }
};

Deadline in_seconds(int seconds) {
  return std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
}

double seconds_between(SteadyTime from, SteadyTime to) {
  return std::chrono::duration<double>(to - from).count();
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

// A log file's text, "" when it is still empty (read_file throws on an empty file).
std::string read_log(const fs::path& path) {
  std::error_code error;
  return fs::file_size(path, error) > 0 && !error ? read_file(path) : std::string();
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

struct ChatResult {
  std::optional<std::int64_t> total_tokens;  // set when the gateway answered 200
  bool unreachable = false;                  // no answer at all: refused, reset, timed out
  std::string error;                         // what went wrong otherwise
};

// Sends one chat completion with `user`'s key.
ChatResult try_chat(httplib::Client& gateway, const std::string& user, int words) {
  const json request = {{"model", kModel},
                        {"messages",
                         {{{"role", "system"}, {"content", "You are a helpful assistant."}},
                          {{"role", "user"}, {"content", prompt_of(words)}}}}};
  const auto response =
      gateway.Post("/v1/chat/completions", {{"Authorization", "Bearer sk-gw-" + user}},
                   request.dump(), "application/json");
  ChatResult result;
  if (!response || response->status != 200) {
    result.unreachable = !response;
    result.error = response ? std::to_string(response->status) + " " + response->body
                            : httplib::to_string(response.error());
    return result;
  }
  result.total_tokens =
      json::parse(response->body).at("usage").at("total_tokens").get<std::int64_t>();
  return result;
}

// Sends one chat completion with `user`'s key; returns the total_tokens the gateway reported.
std::int64_t chat(httplib::Client& gateway, const std::string& user, int words) {
  auto result = try_chat(gateway, user, words);
  if (!result.total_tokens) {
    throw std::runtime_error("chat completion for " + user + " failed: " + result.error);
  }
  return *result.total_tokens;
}

json emulator_totals(const std::string& base_url) {
  httplib::Client emulator(base_url);
  const auto response = emulator.Get("/_emulator/totals");
  if (!response || response->status != 200) {
    throw std::runtime_error("GET " + base_url + "/_emulator/totals failed");
  }
  return json::parse(response->body);
}

// The emulator, seeded, and what its state file says about it.
struct Emulator {
  std::unique_ptr<ChildProcess> process;
  json state;
  std::string base_url;
  std::string price_id;
};

Emulator start_emulator(const fs::path& emulator_path, const fs::path& work) {
  write_file(work / "seed.json", seed().dump(2));
  Emulator emulator;
  emulator.process = std::make_unique<ChildProcess>(
      "stripe-emulator",
      std::vector<std::string>{emulator_path.string(), "--host", "127.0.0.1", "--port", "0",
                               "--api-key", kStripeApiKey, "--seed", (work / "seed.json").string(),
                               "--state-file", (work / "emulator-state.json").string()},
      std::map<std::string, std::string>{}, work / "emulator.log");
  emulator.process->wait_for_file(work / "emulator-state.json", in_seconds(15));
  emulator.state = json::parse(read_file(work / "emulator-state.json"));
  emulator.base_url = emulator.state.at("base_url");
  emulator.price_id = emulator.state.at("price_id");
  std::printf("emulator  %s  price %s, %zu customers with a subscription on it, meter %s\n",
              emulator.base_url.c_str(), emulator.price_id.c_str(),
              emulator.state.at("customers").size(), kMeter);
  return emulator;
}

void stop_emulator(Emulator& emulator) {
  emulator.process->terminate();
  if (emulator.process->wait(in_seconds(10)) != 0)
    std::fprintf(stderr, "stripe-emulator did not stop cleanly\n");
}

// One stripe-gateway with the demo's config (work/gateway.yaml, written by the caller), billing to
// the emulator; `name` names its log and port files (work/NAME.log, work/NAME.port).
struct Gateway {
  std::string name;
  std::unique_ptr<ChildProcess> process;
  int port = 0;
};

Gateway launch_gateway(const fs::path& gateway_path, const fs::path& work, const std::string& name,
                       const Emulator& emulator, std::map<std::string, std::string> environment) {
  environment["STRIPE_API_KEY"] = kStripeApiKey;
  environment["STRIPE_PRICE_ID"] = emulator.price_id;
  environment["STRIPE_API_BASE"] = emulator.base_url;
  Gateway gateway{name, nullptr, 0};
  gateway.process = std::make_unique<ChildProcess>(
      name == "gateway" ? "stripe-gateway" : "stripe-gateway " + name,
      std::vector<std::string>{gateway_path.string(), "--config", (work / "gateway.yaml").string(),
                               "--port", "0", "--port-file", (work / (name + ".port")).string()},
      environment, work / (name + ".log"));
  return gateway;
}

// Blocks until the gateway listens; reads its port.
void wait_until_listening(Gateway& gateway, const fs::path& work) {
  const fs::path port_file = work / (gateway.name + ".port");
  gateway.process->wait_for_file(port_file, in_seconds(15));
  gateway.port = std::stoi(read_file(port_file));
}

// SIGTERM, then the exit status: the gateway flushes its billing before it exits 0. Returns what
// went wrong, or nullopt when it stopped cleanly.
std::optional<std::string> stop_gateway(Gateway& gateway) {
  gateway.process->terminate();
  const auto status = gateway.process->wait(in_seconds(20));
  if (status == 0) return std::nullopt;
  return gateway.process->name() + " did not stop cleanly after SIGTERM (status " +
         (status ? std::to_string(*status) : "running") + ")";
}

std::vector<UserRow> rows_of_plan() {
  std::vector<UserRow> rows;
  for (const auto& [user, prompts] : kPlan) rows.push_back(UserRow{user, "", 0, 0, 0});
  return rows;
}

UserRow& row_of(std::vector<UserRow>& rows, const std::string& user) {
  for (auto& row : rows) {
    if (row.user == user) return row;
  }
  throw std::logic_error("no row for " + user);
}

// Fills each row's customer and what Stripe recorded for it, on both sides.
void read_billing(const Emulator& emulator, std::vector<UserRow>& rows) {
  const json all_totals = emulator_totals(emulator.base_url);
  const json& totals = all_totals.at("customers");
  const json meter_totals = all_totals.at("meters").value(kMeter, json::object());
  for (auto& row : rows) {
    for (const auto& customer : emulator.state.at("customers")) {
      if (customer.at("metadata").value("litellm_customer_id", "") == row.user) {
        row.customer = customer.at("id");
      }
    }
    row.usage_recorded = totals.value(row.customer, std::int64_t{0});
    row.metered = static_cast<std::int64_t>(meter_totals.value(row.customer, 0.0));
  }
}

bool all_match(const std::vector<UserRow>& rows) {
  return std::all_of(rows.begin(), rows.end(), [](const UserRow& row) { return row.matches(); });
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

void print_verdict(bool matched, const std::string& success) {
  std::printf("\n%s\n", matched ? success.c_str()
                                : "MISMATCH: Stripe's usage differs from the tokens served");
}

int run(const fs::path& emulator_path, const fs::path& gateway_path, const fs::path& work) {
  Emulator emulator = start_emulator(emulator_path, work);

  write_file(work / "gateway.yaml", gateway_yaml());
  Gateway gateway = launch_gateway(gateway_path, work, "gateway", emulator,
                                   {{"STRIPE_OUTBOX_PATH", (work / "outbox.db").string()}});
  wait_until_listening(gateway, work);
  std::printf(
      "gateway   http://127.0.0.1:%d  billing_mode: dual, charge_by: user_id (each bearer "
      "key's user_id is the customer's metadata.litellm_customer_id)\n",
      gateway.port);

  httplib::Client client("127.0.0.1", gateway.port);
  client.set_read_timeout(std::chrono::seconds(30));
  std::vector<UserRow> rows = rows_of_plan();
  int requests = 0;
  for (const auto& [user, prompts] : kPlan) {
    for (int words : prompts) row_of(rows, user).tokens_served += chat(client, user, words);
    requests += static_cast<int>(prompts.size());
  }
  std::printf("sent      %d chat completions to %s\n", requests, kModel);

  if (const auto problem = stop_gateway(gateway)) throw std::runtime_error(*problem);
  std::printf("stopped   stripe-gateway (SIGTERM, exit 0): its billing is flushed\n");

  read_billing(emulator, rows);
  print_table(rows);
  stop_emulator(emulator);
  const bool matched = all_match(rows);
  print_verdict(matched, "every user was billed exactly the tokens served, on both sides");
  return matched ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Fleet mode

struct FleetOptions {
  int replicas = 3;
  std::string outbox_url;
  int rounds = 3;     // the plan, this many times over
  int pace_ms = 100;  // between two calls
  int settle_s = 60;  // at most this long for Stripe to catch up after the last call
  int lease_s = 3;    // STRIPE_FLEET_LEASE_S
};

struct Replica {
  Gateway gateway;
  std::unique_ptr<httplib::Client> client;
  bool in_rotation = true;  // the demo's "load balancer" sends it calls
  int served = 0;
  std::size_t log_offset = 0;  // where its log stood when another replica was killed
};

// Whether the replica's log says, last, that it runs the delivery engine; only what follows
// `offset` in the log counts.
bool says_it_runs_engine(const Replica& replica, std::size_t offset = 0) {
  const std::string log = read_log(replica.gateway.process->log_file());
  if (log.size() <= offset) return false;
  const std::string_view tail = std::string_view(log).substr(offset);
  const auto runs = tail.rfind(kRunsEngine);
  if (runs == std::string_view::npos) return false;
  for (const char* other : {kStandsBy, kLostLease}) {
    const auto at = tail.rfind(other);
    if (at != std::string_view::npos && at > runs) return false;
  }
  return true;
}

// The index of the one replica that says it runs the engine, or nullopt (none, or several).
std::optional<std::size_t> engine_holder(const std::vector<Replica>& replicas) {
  std::optional<std::size_t> holder;
  for (std::size_t i = 0; i < replicas.size(); ++i) {
    if (!replicas[i].gateway.process->exit_status() && says_it_runs_engine(replicas[i])) {
      if (holder) return std::nullopt;
      holder = i;
    }
  }
  return holder;
}

// A schema nobody used before: the outbox starts empty whatever the database holds.
std::string fresh_schema() {
  return "stripe_billing_demo_" + std::to_string(std::time(nullptr)) + "_" +
         std::to_string(getpid());
}

std::vector<Replica> start_replicas(const fs::path& gateway_path, const fs::path& work,
                                    const Emulator& emulator, const FleetOptions& options) {
  const std::string schema = fresh_schema();
  const std::map<std::string, std::string> environment = {
      {"STRIPE_OUTBOX_URL", options.outbox_url},
      {"STRIPE_OUTBOX_SCHEMA", schema},
      {"STRIPE_FLEET_LEASE_S", std::to_string(options.lease_s)},
      {"STRIPE_DURABILITY", "sync"}};
  std::vector<Replica> replicas;
  for (int i = 1; i <= options.replicas; ++i) {
    replicas.push_back(Replica{
        launch_gateway(gateway_path, work, "gateway-" + std::to_string(i), emulator, environment),
        nullptr});
  }
  for (auto& replica : replicas) {
    wait_until_listening(replica.gateway, work);
    replica.client = std::make_unique<httplib::Client>("127.0.0.1", replica.gateway.port);
    replica.client->set_connection_timeout(std::chrono::seconds(5));
    replica.client->set_read_timeout(std::chrono::seconds(30));
    std::printf("%-9s http://127.0.0.1:%d  pid %d\n", replica.gateway.name.c_str(),
                replica.gateway.port, static_cast<int>(replica.gateway.process->pid()));
  }
  std::printf(
      "fleet     %d replicas of stripe-gateway on one PostgreSQL outbox (schema %s, engine lease "
      "%d s, durability sync), billing_mode: dual, charge_by: user_id\n",
      options.replicas, schema.c_str(), options.lease_s);
  return replicas;
}

// One replica takes the engine lease as it starts; waits (bounded) for its log to say so.
void wait_for_engine(const std::vector<Replica>& replicas, int lease_s) {
  const Deadline deadline = in_seconds(2 * lease_s + 10);
  std::optional<std::size_t> holder;
  while (!(holder = engine_holder(replicas)) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (holder) {
    std::printf("engine    %s runs the delivery engine\n", replicas[*holder].gateway.name.c_str());
  } else {
    std::printf("engine    no replica's log says (yet) that it runs the delivery engine\n");
  }
}

// The replica the demo killed, and who took the engine over.
struct Kill {
  std::size_t victim = 0;
  bool ran_engine = false;
  SteadyTime at{};
  std::size_t after_calls = 0;
  std::optional<std::size_t> successor;
  SteadyTime taken_over_at{};
};

// SIGKILLs the replica running the engine (else the one the next call would go to). The demo
// calls it between two calls, so no call is in flight to it: every call it answered is committed
// (sync durability) and none is half-way. It stays in the rotation: the next call sent to it finds
// it gone, as a load balancer would.
Kill kill_engine_holder(std::vector<Replica>& replicas, std::size_t cursor, std::size_t calls_sent,
                        std::size_t calls, SteadyTime started) {
  Kill kill;
  const auto holder = engine_holder(replicas);
  kill.victim = holder ? *holder : cursor % replicas.size();
  kill.ran_engine = holder.has_value();
  kill.after_calls = calls_sent;
  for (auto& replica : replicas) {
    replica.log_offset = read_log(replica.gateway.process->log_file()).size();
  }
  Replica& victim = replicas[kill.victim];
  victim.gateway.process->kill_now();
  kill.at = std::chrono::steady_clock::now();
  const auto status = victim.gateway.process->wait(in_seconds(10));
  std::printf(
      "killed    %s (pid %d%s) with SIGKILL %.1f s into the run, after %zu of %zu calls (exit "
      "status %s)\n",
      victim.gateway.name.c_str(), static_cast<int>(victim.gateway.process->pid()),
      kill.ran_engine ? ", it ran the delivery engine" : "", seconds_between(started, kill.at),
      calls_sent, calls, status ? std::to_string(*status).c_str() : "still running");
  return kill;
}

// Notes the first survivor whose log, since the kill, says it runs the engine.
void watch_takeover(const std::vector<Replica>& replicas, std::optional<Kill>& kill) {
  if (!kill || kill->successor) return;
  for (std::size_t i = 0; i < replicas.size(); ++i) {
    if (i != kill->victim && says_it_runs_engine(replicas[i], replicas[i].log_offset)) {
      kill->successor = i;
      kill->taken_over_at = std::chrono::steady_clock::now();
      std::printf("engine    %s took the delivery engine over, %.1f s after the kill\n",
                  replicas[i].gateway.name.c_str(), seconds_between(kill->at, kill->taken_over_at));
      return;
    }
  }
}

// Sends call number `call` to the next replica in the rotation and counts what it served. A
// replica that does not answer at all served nothing: it leaves the rotation and the call goes to
// the next one. Returns how many replicas failed it.
int send_round_robin(std::vector<Replica>& replicas, std::size_t& cursor, std::size_t call,
                     const std::string& user, int words, std::vector<UserRow>& rows) {
  for (int failed = 0;; ++failed) {
    std::optional<std::size_t> next;
    for (std::size_t tries = 0; tries < replicas.size() && !next; ++tries) {
      const std::size_t candidate = cursor++ % replicas.size();
      if (replicas[candidate].in_rotation) next = candidate;
    }
    if (!next) throw std::runtime_error("no gateway replica left to send calls to");
    Replica& replica = replicas[*next];
    const ChatResult result = try_chat(*replica.client, user, words);
    if (result.total_tokens) {
      row_of(rows, user).tokens_served += *result.total_tokens;
      ++replica.served;
      return failed;
    }
    if (!result.unreachable) {
      throw std::runtime_error("chat completion for " + user + " failed on " +
                               replica.gateway.name + ": " + result.error);
    }
    replica.in_rotation = false;
    std::printf(
        "failed    call %zu (%s) to %s: no answer (%s), so not served and not counted; %s leaves "
        "the rotation and the call goes to the next replica\n",
        call + 1, user.c_str(), replica.gateway.name.c_str(), result.error.c_str(),
        replica.gateway.name.c_str());
  }
}

bool any_overbilled(const std::vector<UserRow>& rows) {
  return std::any_of(rows.begin(), rows.end(), [](const UserRow& row) { return row.overbilled(); });
}

// Polls Stripe until it has billed what was served (a survivor has to take the lease and deliver
// what is pending first), it has billed more (which nothing mends), or `settle_s` pass. Returns
// when it matched.
std::optional<SteadyTime> wait_for_billing(const Emulator& emulator, std::vector<UserRow>& rows,
                                           const std::vector<Replica>& replicas,
                                           std::optional<Kill>& kill, int settle_s) {
  const Deadline deadline = in_seconds(settle_s);
  for (;;) {
    watch_takeover(replicas, kill);
    read_billing(emulator, rows);
    if (all_match(rows)) return std::chrono::steady_clock::now();
    if (any_overbilled(rows) || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

// SIGTERMs every replica still running (each flushes and exits 0); returns what went wrong.
std::vector<std::string> stop_survivors(std::vector<Replica>& replicas, const Kill* kill) {
  std::vector<std::string> problems;
  std::string stopped;
  for (std::size_t i = 0; i < replicas.size(); ++i) {
    if (kill && i == kill->victim) continue;
    Gateway& gateway = replicas[i].gateway;
    if (const auto status = gateway.process->exit_status()) {
      problems.push_back(gateway.process->name() + " exited by itself (status " +
                         std::to_string(*status) + ")");
    } else if (const auto problem = stop_gateway(gateway)) {
      problems.push_back(*problem);
    } else {
      stopped += (stopped.empty() ? "" : ", ") + gateway.name;
    }
  }
  if (!stopped.empty()) std::printf("stopped   %s (SIGTERM, exit 0)\n", stopped.c_str());
  return problems;
}

void print_kill(const std::vector<Replica>& replicas, const Kill& kill, std::size_t calls,
                SteadyTime started) {
  std::string after = kill.ran_engine ? "no survivor's log says it took the engine over"
                                      : "the engine stayed where it was";
  if (kill.successor) {
    char later[32];
    std::snprintf(later, sizeof later, "%.1f", seconds_between(kill.at, kill.taken_over_at));
    after = replicas[*kill.successor].gateway.name + " took the engine over " + later + " s later";
  }
  std::printf("\nkilled %s (%s) with SIGKILL %.1f s into the run, after %zu of %zu calls; %s\n",
              replicas[kill.victim].gateway.name.c_str(),
              kill.ran_engine ? "the replica running the delivery engine"
                              : "the engine holder could not be told from its log",
              seconds_between(started, kill.at), kill.after_calls, calls, after.c_str());
}

int run_fleet(const fs::path& emulator_path, const fs::path& gateway_path, const fs::path& work,
              const FleetOptions& options) {
  Emulator emulator = start_emulator(emulator_path, work);
  write_file(work / "gateway.yaml", gateway_yaml());
  std::vector<Replica> replicas = start_replicas(gateway_path, work, emulator, options);
  wait_for_engine(replicas, options.lease_s);

  std::vector<std::pair<std::string, int>> calls;  // user, words
  for (int round = 0; round < options.rounds; ++round) {
    for (const auto& [user, prompts] : kPlan) {
      for (int words : prompts) calls.emplace_back(user, words);
    }
  }
  std::vector<UserRow> rows = rows_of_plan();
  std::size_t cursor = 0;
  int failed = 0;
  std::optional<Kill> kill;
  const SteadyTime started = std::chrono::steady_clock::now();
  for (std::size_t call = 0; call < calls.size(); ++call) {
    if (call > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options.pace_ms));
    if (call == calls.size() / 3) {
      kill = kill_engine_holder(replicas, cursor, call, calls.size(), started);
    }
    failed += send_round_robin(replicas, cursor, call, calls[call].first, calls[call].second, rows);
    watch_takeover(replicas, kill);
  }
  const SteadyTime last_call = std::chrono::steady_clock::now();
  std::string spread;
  for (const auto& replica : replicas) {
    spread +=
        (spread.empty() ? "" : ", ") + replica.gateway.name + " " + std::to_string(replica.served);
  }
  std::printf(
      "sent      %zu chat completions to %s in %.1f s, round-robin (%s answered), %d failed\n",
      calls.size(), kModel, seconds_between(started, last_call), spread.c_str(), failed);

  const auto caught_up = wait_for_billing(emulator, rows, replicas, kill, options.settle_s);
  if (caught_up) {
    std::printf("billed    Stripe had every served token %.1f s after the last call\n",
                seconds_between(last_call, *caught_up));
  } else {
    std::printf("billed    Stripe did NOT match the served tokens within %d s of the last call%s\n",
                options.settle_s, any_overbilled(rows) ? " (it billed more than was served)" : "");
  }
  // Whatever the survivors deliver as they stop is in the table too.
  const std::vector<std::string> problems = stop_survivors(replicas, kill ? &*kill : nullptr);

  read_billing(emulator, rows);
  print_table(rows);
  if (kill) print_kill(replicas, *kill, calls.size(), started);
  stop_emulator(emulator);
  for (const auto& problem : problems) std::printf("problem   %s\n", problem.c_str());
  // Matched in time, and nothing more was billed as the survivors stopped.
  const bool matched = caught_up && all_match(rows);
  if (!caught_up && all_match(rows)) {
    std::printf(
        "\nTOO LATE: Stripe had the tokens served only once the survivors were stopped, not "
        "within %d s of the last call\n",
        options.settle_s);
  } else {
    print_verdict(matched,
                  "every user was billed exactly the tokens served, on both sides, through the "
                  "loss of a replica");
  }
  return matched && problems.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"End-to-end demo: gateway -> stripe_billing -> Stripe emulator"};
  std::string emulator_path;
  std::string gateway_path;
  FleetOptions fleet;
  app.add_option("--emulator", emulator_path, "stripe-emulator binary (default: found nearby)");
  app.add_option("--gateway", gateway_path, "stripe-gateway binary (default: found nearby)");
  auto* replicas =
      app.add_option("--fleet", fleet.replicas,
                     "Run this many gateway replicas on one PostgreSQL outbox and SIGKILL one of "
                     "them mid-run")
          ->check(CLI::Range(2, 16));
  auto* url = app.add_option("--outbox-url", fleet.outbox_url,
                             "The fleet's PostgreSQL (postgresql://...); a fresh schema is used");
  replicas->needs(url);
  url->needs(replicas);
  app.add_option("--rounds", fleet.rounds, "Fleet: send every user's calls this many times")
      ->check(CLI::Range(1, 100))
      ->needs(replicas)
      ->capture_default_str();
  app.add_option("--pace-ms", fleet.pace_ms, "Fleet: milliseconds between two calls")
      ->check(CLI::Range(0, 10000))
      ->needs(replicas)
      ->capture_default_str();
  app.add_option("--settle-s", fleet.settle_s,
                 "Fleet: seconds Stripe may take to catch up after the last call")
      ->check(CLI::Range(1, 3600))
      ->needs(replicas)
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows as it happens, even in a pipe

  WorkDirectory work;
  try {
    const fs::path emulator =
        emulator_path.empty() ? sibling("stripe-emulator") : fs::path(emulator_path);
    const fs::path gateway =
        gateway_path.empty() ? sibling("stripe-gateway") : fs::path(gateway_path);
    const int status = replicas->count() > 0 ? run_fleet(emulator, gateway, work.path(), fleet)
                                             : run(emulator, gateway, work.path());
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
