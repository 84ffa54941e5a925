// stripe-billing-demo: the whole path on one machine. It starts the Stripe emulator with three
// seeded customers and Stripe's token-billing meter (event name token-billing-tokens, dimensions
// token_type and model), starts stripe-gateway with STRIPE_PRESET=token_billing (one
// POST /v2/billing/meter_events per non-zero token type of a call, the model as a provider/model
// slug), and has each user hold a growing conversation, its last turn sent twice, with an
// OpenAI-style echo model (gpt-echo) and an Anthropic-style one (claude-echo), whose prompt caches
// report cached, cache-read and cache-write tokens. It stops the gateway (which flushes its
// billing) and prints, per user and token type (input, cached_input, cache_read, cache_write,
// output), the tokens served, derived from the usage of every response the way
// docs/token-types.md derives them, next to what Stripe's meter counted (the emulator's totals by
// customer and dimension), then the model slugs Stripe received. Exit code 0 only when every user
// and type matches, each user's types add up to the prompt plus completion tokens served, and
// every model was billed under its expected slug.
//
// With --fleet N it runs N gateway replicas on one PostgreSQL outbox (--outbox-url, a fresh
// schema for the run, a 3 s engine lease) in dual mode (legacy usage records and v1 meter events
// for every call, as while migrating) instead: it sends the users' calls round-robin through all
// of them, SIGKILLs one (the replica running the delivery engine, told from its log) a third of
// the way through, goes on through the survivors, waits until Stripe has billed what was served
// (at most --settle-s), stops the survivors and compares each user's total tokens served with
// what Stripe recorded on both sides.
//
//   stripe-billing-demo [--emulator PATH] [--gateway PATH]
//   stripe-billing-demo --fleet 3 --outbox-url postgresql://... [--rounds 3] [--pace-ms 100]
//                       [--settle-s 60] [--emulator PATH] [--gateway PATH]
#include <httplib.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
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
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "child_process.h"

namespace {

namespace fs = std::filesystem;
using demo::ChildProcess;
using demo::Deadline;
using nlohmann::json;
using SteadyTime = std::chrono::steady_clock::time_point;

constexpr const char* kStripeApiKey = "sk_test_emulator_0000000000000000";

// Token billing (the default run): Stripe's meter, and the two echo models with the slug each
// must reach Stripe as (docs/token-types.md, "Model slugs").
constexpr const char* kTokenMeter = "token-billing-tokens";
struct DemoModel {
  const char* name;  // the model_name clients send
  const char* slug;  // what Stripe must receive as the payload's model
};
constexpr std::array<DemoModel, 2> kModels = {
    {{"gpt-echo", "openai/gpt-echo"}, {"claude-echo", "anthropic/claude-echo"}}};
constexpr std::array<const char*, 5> kTokenTypes = {"input", "cached_input", "cache_read",
                                                    "cache_write", "output"};
// Dual mode (--fleet): the model, and the v1 meter beside the usage records.
constexpr const char* kDualModel = "demo-echo";
constexpr const char* kDualMeter = "llm_tokens";

// What stripe_billing logs when a replica of a fleet takes the engine lease, and when it loses it.
constexpr const char* kRunsEngine = "this replica runs the delivery engine now";
constexpr const char* kStandsBy = "another replica runs the delivery engine; this one stands by";
constexpr const char* kLostLease = "cannot renew the engine lease";

// Words per prompt of each request a user sends: in token billing, the user's turns of one
// conversation with each model.
const std::vector<std::pair<std::string, std::vector<int>>> kPlan = {
    {"alice", {8, 60, 250}},
    {"bob", {3, 40}},
    {"carol", {15, 120, 30, 500}},
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

// The three customers, found by metadata.litellm_customer_id, with the meter `meter` (plus the
// legacy metered price every customer subscribes to, which only dual mode bills).
json seed(const json& meter) {
  json customers = json::array();
  for (const auto& [user, prompts] : kPlan) {
    customers.push_back(
        {{"email", user + "@example.com"}, {"metadata", {{"litellm_customer_id", user}}}});
  }
  return {{"price", {{"product_name", "LLM tokens"}, {"unit_amount", 1}, {"currency", "usd"}}},
          {"customers", customers},
          {"meters", json::array({meter})}};
}

// The gateway's config: `models` (all echo), a key per user, and `billing` (the stripe_billing
// section's mode-specific lines).
std::string gateway_yaml(const std::vector<std::string>& models, const std::string& billing) {
  std::string yaml = "model_list:\n";
  for (const auto& model : models) {
    yaml += "  - model_name: " + model + "\n    litellm_params: {model: echo}\n";
  }
  yaml +=
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
         "  api_base: os.environ/STRIPE_API_BASE\n"
         "  charge_by: user_id\n" +
         billing;
}

// `words` words of text; `offset` picks where in the word list it starts (users differ by it).
std::string prompt_of(int words, std::size_t offset = 0) {
  static const std::vector<std::string> kWords = {
      "please", "summarise", "the", "quarterly", "token", "usage", "of", "our", "gateway"};
  std::string prompt;
  for (int i = 0; i < words; ++i) {
    prompt += (i ? " " : "") + kWords[(offset + static_cast<std::size_t>(i)) % kWords.size()];
  }
  return prompt;
}

struct ChatResult {
  std::optional<json> completion;  // set when the gateway answered 200
  bool unreachable = false;        // no answer at all: refused, reset, timed out
  std::string error;               // what went wrong otherwise
};

// Sends one chat completion of `messages` to `model` with `user`'s key.
ChatResult try_chat(httplib::Client& gateway, const std::string& user, const std::string& model,
                    const json& messages) {
  const json request = {{"model", model}, {"messages", messages}};
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
  result.completion = json::parse(response->body);
  return result;
}

// The one-question request dual mode sends: a system prompt and `words` words.
json one_question(int words) {
  return {{{"role", "system"}, {"content", "You are a helpful assistant."}},
          {{"role", "user"}, {"content", prompt_of(words)}}};
}

json emulator_get(const std::string& base_url, const std::string& path,
                  const httplib::Params& params = {}) {
  httplib::Client emulator(base_url);
  const auto response = emulator.Get(path, params, httplib::Headers{});
  if (!response || response->status != 200) {
    throw std::runtime_error("GET " + base_url + path + " failed" +
                             (response
                                  ? ": " + std::to_string(response->status) + " " + response->body
                                  : std::string()));
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

Emulator start_emulator(const fs::path& emulator_path, const fs::path& work, const json& meter) {
  write_file(work / "seed.json", seed(meter).dump(2));
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
  return emulator;
}

void stop_emulator(Emulator& emulator) {
  emulator.process->terminate();
  if (emulator.process->wait(in_seconds(10)) != 0)
    std::fprintf(stderr, "stripe-emulator did not stop cleanly\n");
}

// The Stripe customer whose metadata.litellm_customer_id is `user`.
std::string customer_of(const Emulator& emulator, const std::string& user) {
  for (const auto& customer : emulator.state.at("customers")) {
    if (customer.at("metadata").value("litellm_customer_id", "") == user) return customer.at("id");
  }
  throw std::runtime_error("the emulator has no customer for " + user);
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

const char* check_mark(bool ok) { return ok ? "✓" : "✗"; }

void print_verdict(bool matched, const std::string& success) {
  std::printf("\n%s\n", matched ? success.c_str()
                                : "MISMATCH: Stripe's usage differs from the tokens served");
}

// ---------------------------------------------------------------------------------------------
// Token billing (the default run)

using TypeCounts = std::map<std::string, std::int64_t>;  // token type -> tokens

std::int64_t count_at(const json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
}

// The billable token types of one response's usage, by docs/token-types.md's derivation. The
// usage's shape tells the family: Anthropic's cache_read_input_tokens /
// cache_creation_input_tokens (prompt = input + read + write), else OpenAI's
// prompt_tokens_details (cached_tokens, and cache_creation_tokens, parts of the prompt).
TypeCounts billable_types(const json& usage) {
  const std::int64_t prompt = count_at(usage, "prompt_tokens");
  const std::int64_t completion = count_at(usage, "completion_tokens");
  const bool anthropic =
      usage.contains("cache_read_input_tokens") || usage.contains("cache_creation_input_tokens");
  const json details = usage.value("prompt_tokens_details", json::object());
  const std::int64_t read =
      anthropic ? count_at(usage, "cache_read_input_tokens") : count_at(details, "cached_tokens");
  const std::int64_t write = anthropic ? count_at(usage, "cache_creation_input_tokens")
                                       : count_at(details, "cache_creation_tokens");
  TypeCounts types;
  for (const char* type : kTokenTypes) types[type] = 0;
  types["output"] = completion;
  if (read + write > prompt) {  // inconsistent details: plain input and output
    types["input"] = prompt;
    return types;
  }
  types["input"] = prompt - read - write;
  types[anthropic ? "cache_read" : "cached_input"] = read;
  types["cache_write"] = write;
  return types;
}

std::int64_t sum_of(const TypeCounts& counts) {
  std::int64_t sum = 0;
  for (const auto& [type, tokens] : counts) sum += tokens;
  return sum;
}

// What the gateway served one user (from the usage of its responses) and what Stripe counted.
struct UserTokens {
  std::string user;
  std::string customer;
  TypeCounts served;
  TypeCounts billed;
  std::int64_t prompt_tokens = 0;      // served
  std::int64_t completion_tokens = 0;  // served

  std::int64_t served_of(const std::string& type) const {
    const auto it = served.find(type);
    return it == served.end() ? 0 : it->second;
  }
  std::int64_t billed_of(const std::string& type) const {
    const auto it = billed.find(type);
    return it == billed.end() ? 0 : it->second;
  }
  // Every type Stripe counted or the gateway served, the known ones first, in order.
  std::vector<std::string> types() const {
    std::vector<std::string> all(kTokenTypes.begin(), kTokenTypes.end());
    for (const auto* counts : {&served, &billed}) {
      for (const auto& [type, tokens] : *counts) {
        if (std::find(all.begin(), all.end(), type) == all.end()) all.push_back(type);
      }
    }
    return all;
  }
  bool adds_up() const {
    return sum_of(served) == prompt_tokens + completion_tokens &&
           sum_of(billed) == prompt_tokens + completion_tokens;
  }
  bool matches() const {
    for (const auto& type : types()) {
      if (served_of(type) != billed_of(type)) return false;
    }
    return adds_up();
  }
};

// Tokens per model and type: served (by model_name) and billed (by the slug Stripe received).
struct ModelTokens {
  std::map<std::string, TypeCounts> served;  // model_name -> token type -> tokens
  std::map<std::string, TypeCounts> billed;  // slug -> token type -> tokens
  int nonzero_types = 0;                     // served: the non-zero types of every call
};

// Each user's conversations: with each model, the user asks its questions one after the other,
// every request carrying the conversation so far (the echo's replies included), and sends the
// last request once more (the same prompt again). The system prompt is the same for everyone.
int converse(httplib::Client& client, std::vector<UserTokens>& users, ModelTokens& models) {
  int requests = 0;
  for (std::size_t u = 0; u < kPlan.size(); ++u) {
    const auto& [user, questions] = kPlan[u];
    UserTokens& row = users.at(u);
    for (const DemoModel& model : kModels) {
      json messages = json::array(
          {{{"role", "system"},
            {"content", "You are a helpful assistant for the finance team; answer briefly."}}});
      json last;
      const auto send = [&](const json& request) {
        const ChatResult result = try_chat(client, user, model.name, request);
        if (!result.completion) {
          throw std::runtime_error("chat completion for " + user + " to " + model.name +
                                   " failed: " + result.error);
        }
        const json& usage = result.completion->at("usage");
        for (const auto& [type, tokens] : billable_types(usage)) {
          row.served[type] += tokens;
          models.served[model.name][type] += tokens;
          if (tokens != 0) ++models.nonzero_types;
        }
        row.prompt_tokens += count_at(usage, "prompt_tokens");
        row.completion_tokens += count_at(usage, "completion_tokens");
        ++requests;
        return result.completion->at("choices").at(0).at("message").at("content");
      };
      for (int words : questions) {
        messages.push_back({{"role", "user"}, {"content", prompt_of(words, u * 2)}});
        last = messages;
        messages.push_back({{"role", "assistant"}, {"content", send(messages)}});
      }
      send(last);
    }
  }
  return requests;
}

// What Stripe's token-billing meter counted, per customer, token type and model slug.
void read_token_billing(const Emulator& emulator, std::vector<UserTokens>& users,
                        ModelTokens& models) {
  const json answer = emulator_get(emulator.base_url, "/_emulator/meter_dimensions",
                                   {{"event_name", kTokenMeter}, {"keys", "token_type,model"}});
  for (auto& row : users) row.billed.clear();
  models.billed.clear();
  for (const auto& total : answer.at("totals")) {
    const std::string customer = total.at("customer");
    const std::string type = total.at("dimensions").at("token_type");
    const std::string slug = total.at("dimensions").at("model");
    const auto tokens = static_cast<std::int64_t>(total.at("value").get<double>());
    models.billed[slug][type] += tokens;
    for (auto& row : users) {
      if (row.customer == customer) row.billed[type] += tokens;
    }
  }
}

void print_token_table(const std::vector<UserTokens>& users) {
  std::printf("\n%-7s %-24s %-13s %13s %13s  %s\n", "user", "Stripe customer", "token type",
              "tokens served", "Stripe billed", "match");
  for (const auto& row : users) {
    bool first = true;
    for (const auto& type : row.types()) {
      const std::int64_t served = row.served_of(type);
      const std::int64_t billed = row.billed_of(type);
      std::printf("%-7s %-24s %-13s %13lld %13lld  %s\n", first ? row.user.c_str() : "",
                  first ? row.customer.c_str() : "", type.c_str(), static_cast<long long>(served),
                  static_cast<long long>(billed), check_mark(served == billed));
      first = false;
    }
    std::printf("%-7s %-24s %-13s %13lld %13lld  %s  (prompt %lld + completion %lld served)\n\n",
                "", "", "all types", static_cast<long long>(sum_of(row.served)),
                static_cast<long long>(sum_of(row.billed)), check_mark(row.adds_up()),
                static_cast<long long>(row.prompt_tokens),
                static_cast<long long>(row.completion_tokens));
  }
}

// Each model's tokens served next to what Stripe billed under the slug it expects, matched type by
// type; a slug no model should have been billed under is a mismatch. Returns whether everything
// matched.
bool print_model_table(const ModelTokens& models) {
  std::printf("%-12s %-24s %13s %13s  %-6s %s\n", "model sent", "model slug Stripe got",
              "tokens served", "Stripe billed", "match", "by token type");
  bool matched = true;
  std::set<std::string> expected;
  const auto print = [&](const std::string& name, const std::string& slug) {
    const auto served_it = models.served.find(name);
    const TypeCounts served = served_it == models.served.end() ? TypeCounts{} : served_it->second;
    const auto it = models.billed.find(slug);
    const TypeCounts billed = it == models.billed.end() ? TypeCounts{} : it->second;
    const auto nonzero = [](const TypeCounts& counts) {
      TypeCounts kept;
      for (const auto& [type, tokens] : counts) {
        if (tokens != 0) kept.emplace(type, tokens);
      }
      return kept;
    };
    std::string by_type;
    const auto add = [&](const std::string& type, std::int64_t tokens) {
      by_type += (by_type.empty() ? "" : ", ") + type + " " + std::to_string(tokens);
    };
    for (const char* type : kTokenTypes) {
      if (billed.count(type) != 0) add(type, billed.at(type));
    }
    for (const auto& [type, tokens] : billed) {
      if (std::find(kTokenTypes.begin(), kTokenTypes.end(), type) == kTokenTypes.end()) {
        add(type, tokens);
      }
    }
    const bool ok = nonzero(served) == nonzero(billed);
    matched = matched && ok;
    std::printf("%-12s %-24s %13lld %13lld  %-6s %s\n", name.c_str(),
                (slug.empty() ? "(none)" : slug).c_str(), static_cast<long long>(sum_of(served)),
                static_cast<long long>(sum_of(billed)), check_mark(ok),
                by_type.empty() ? "-" : by_type.c_str());
  };
  for (const DemoModel& model : kModels) {
    expected.insert(model.slug);
    print(model.name, model.slug);
  }
  for (const auto& [slug, billed] : models.billed) {
    if (expected.count(slug) == 0) print("?", slug);
  }
  return matched;
}

int run(const fs::path& emulator_path, const fs::path& gateway_path, const fs::path& work) {
  Emulator emulator = start_emulator(
      emulator_path, work,
      {{"event_name", kTokenMeter}, {"dimension_payload_keys", {"token_type", "model"}}});
  std::printf(
      "emulator  %s  %zu customers (found by metadata.litellm_customer_id), meter %s with "
      "dimensions token_type, model\n",
      emulator.base_url.c_str(), emulator.state.at("customers").size(), kTokenMeter);

  std::vector<std::string> model_names;
  for (const DemoModel& model : kModels) model_names.emplace_back(model.name);
  write_file(work / "gateway.yaml", gateway_yaml(model_names, ""));
  Gateway gateway = launch_gateway(
      gateway_path, work, "gateway", emulator,
      {{"STRIPE_PRESET", "token_billing"}, {"STRIPE_OUTBOX_PATH", (work / "outbox.db").string()}});
  wait_until_listening(gateway, work);
  std::printf(
      "gateway   http://127.0.0.1:%d  STRIPE_PRESET=token_billing, charge_by: user_id (each bearer "
      "key's user_id is the customer's metadata.litellm_customer_id)\n",
      gateway.port);

  httplib::Client client("127.0.0.1", gateway.port);
  client.set_read_timeout(std::chrono::seconds(30));
  std::vector<UserTokens> users;
  for (const auto& [user, questions] : kPlan) {
    users.push_back(UserTokens{user, customer_of(emulator, user), {}, {}, 0, 0});
  }
  ModelTokens models;
  const int requests = converse(client, users, models);
  std::printf(
      "sent      %d chat completions: per user, a conversation with %s (OpenAI-style usage) and "
      "one with %s (Anthropic-style), each last turn sent twice\n",
      requests, kModels[0].name, kModels[1].name);

  if (const auto problem = stop_gateway(gateway)) throw std::runtime_error(*problem);
  std::printf("stopped   stripe-gateway (SIGTERM, exit 0): its billing is flushed\n");

  int v2_events = 0;
  int v1_requests = 0;
  const json log = emulator_get(emulator.base_url, "/_emulator/requests");
  for (const auto& request : log.at("requests")) {
    const std::string path = request.at("path");
    if (request.at("method") != "POST") continue;
    if (path == "/v2/billing/meter_events") ++v2_events;
    if (path.rfind("/v1/billing/meter_events", 0) == 0 ||
        path.find("/usage_records") != std::string::npos) {
      ++v1_requests;
    }
  }
  std::printf(
      "Stripe    got %d POST /v2/billing/meter_events to %s, one per non-zero token type of a call "
      "(%d), and %d v1 meter event or usage record requests\n",
      v2_events, kTokenMeter, models.nonzero_types, v1_requests);

  read_token_billing(emulator, users, models);
  print_token_table(users);
  const bool models_matched = print_model_table(models);
  stop_emulator(emulator);
  const bool matched =
      models_matched &&
      std::all_of(users.begin(), users.end(), [](const UserTokens& row) { return row.matches(); });
  print_verdict(matched,
                "every user was billed exactly the tokens served, per token type, each model "
                "under its provider/model slug");
  return matched ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Fleet mode (dual billing: usage records and v1 meter events)

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
  const json all_totals = emulator_get(emulator.base_url, "/_emulator/totals");
  const json& totals = all_totals.at("customers");
  const json meter_totals = all_totals.at("meters").value(kDualMeter, json::object());
  for (auto& row : rows) {
    row.customer = customer_of(emulator, row.user);
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
                check_mark(row.matches()));
  }
}

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
      {"STRIPE_DURABILITY", "sync"},
      {"STRIPE_PRICE_ID", emulator.price_id}};
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
    const ChatResult result = try_chat(*replica.client, user, kDualModel, one_question(words));
    if (result.completion) {
      row_of(rows, user).tokens_served +=
          result.completion->at("usage").at("total_tokens").get<std::int64_t>();
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
  Emulator emulator = start_emulator(emulator_path, work, {{"event_name", kDualMeter}});
  std::printf("emulator  %s  price %s, %zu customers with a subscription on it, meter %s\n",
              emulator.base_url.c_str(), emulator.price_id.c_str(),
              emulator.state.at("customers").size(), kDualMeter);
  write_file(work / "gateway.yaml", gateway_yaml({kDualModel},
                                                 "  price_id: os.environ/STRIPE_PRICE_ID\n"
                                                 "  billing_mode: dual\n"
                                                 "  meter_event_name: " +
                                                     std::string(kDualMeter) + "\n"));
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
      calls.size(), kDualModel, seconds_between(started, last_call), spread.c_str(), failed);

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
