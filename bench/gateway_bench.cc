// stripe-billing-gateway-bench: the example gateway's end-to-end rate over HTTP with admission off
// and on (docs/performance.md, "Admission"). One invocation, one measurement, printing one line
// "RESULT gateway key=value ...".
//
//   stripe-billing-gateway-bench --admission off|static [--clients 4] [--requests 40000]
//                                [--warmup 2000] [--stream 0|1]
//
// In-process: examples/gateway's GatewayServer on 127.0.0.1 with the echo model and
// stripe_billing as its success callback (async, SQLite outbox, Stripe unreachable so delivery
// does not compete; every call is still admitted, settled and written to the outbox), and
// `--clients` client threads, each on one keep-alive connection, sending chat completions back to
// back. admission static: STRIPE_BUDGETS="*=10^14" (never spent), one customer per client key.
// The gateway's per-call info log is off (level warn) in both runs.
// Reported: calls/s over the timed requests, each request's latency p50/p99 as the client sees
// it, and what admission counted (admissions, denials, holds settled and open).
#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.h"
#include "gateway/gateway_config.h"
#include "gateway/gateway_server.h"

namespace stripe_billing::bench {
namespace {

using Args = std::map<std::string, std::string>;

std::int64_t int_arg(const Args& args, const std::string& name, std::int64_t fallback) {
  const auto it = args.find(name);
  if (it == args.end()) return fallback;
  char* end = nullptr;
  const long long value = std::strtoll(it->second.c_str(), &end, 10);
  if (end == it->second.c_str() || *end != '\0' || value < 0) {
    std::fprintf(stderr, "--%s wants a non-negative integer, got \"%s\"\n", name.c_str(),
                 it->second.c_str());
    std::exit(2);
  }
  return value;
}

std::uint64_t denials(const StripeLoggerStats& stats) {
  std::uint64_t total = 0;
  for (const auto& [reason, count] : stats.admission_denials) total += count;
  return total;
}

int run(const Args& args) {
  const std::string admission = args.count("admission") ? args.at("admission") : "off";
  const int clients = static_cast<int>(std::max<std::int64_t>(1, int_arg(args, "clients", 4)));
  const std::int64_t requests = int_arg(args, "requests", 40'000);
  const std::int64_t warmup = int_arg(args, "warmup", 2'000);
  const bool stream = int_arg(args, "stream", 0) != 0;

  TempDir dir;
  RefusingPort stripe_down;
  Config config = base_config(stripe_down.base_url(), dir.file("outbox.db"));
  config.charge_by = "user_id";
  config.admission = admission;
  if (admission != "off") config.budgets = "*=100000000000000";
  std::unique_ptr<StripeLogger> stripe = make_logger_or_die(config);

  auto log =
      std::make_shared<spdlog::logger>("gateway", std::make_shared<spdlog::sinks::null_sink_mt>());
  log->set_level(spdlog::level::warn);
  gateway::GatewayConfig gateway;
  gateway.models["echo-small"] = gateway::ModelRoute{};
  for (int c = 0; c < clients; ++c) {
    gateway.api_keys["sk-gw-bench-" + std::to_string(c)] =
        gateway::KeyIdentity{"user-" + std::to_string(c), "team-bench", "", "bench", ""};
  }
  auto server = std::make_unique<gateway::GatewayServer>(
      gateway, std::vector<CustomLogger*>{stripe.get()}, log);
  const auto port = server->start(0);
  if (!port) {
    std::fprintf(stderr, "cannot start the gateway: %s\n", port.error().to_string().c_str());
    return 2;
  }

  nlohmann::json body = {
      {"model", "echo-small"},
      {"max_tokens", 256},
      {"messages",
       {{{"role", "system"}, {"content", "You are a terse assistant."}},
        {{"role", "user"}, {"content", "Say hello to the benchmark, briefly."}}}}};
  if (stream) body["stream"] = true;
  const std::string payload = body.dump();

  std::vector<std::vector<std::int64_t>> latencies(static_cast<std::size_t>(clients));
  std::atomic<std::int64_t> errors{0};
  std::atomic<int> warm{0};
  std::atomic<bool> go{false};
  SteadyClock::time_point start, stop;
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      httplib::Client client("127.0.0.1", *port);
      client.set_keep_alive(true);
      client.set_tcp_nodelay(true);
      const httplib::Headers headers = {
          {"Authorization", "Bearer sk-gw-bench-" + std::to_string(c)}};
      const auto call = [&] {
        const auto answer =
            client.Post("/v1/chat/completions", headers, payload, "application/json");
        if (!answer || answer->status != 200) errors.fetch_add(1);
      };
      for (std::int64_t n = c; n < warmup; n += clients) call();
      warm.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      auto& mine = latencies[static_cast<std::size_t>(c)];
      mine.reserve(static_cast<std::size_t>(requests / clients + 1));
      for (std::int64_t n = c; n < requests; n += clients) {
        const auto before = SteadyClock::now();
        call();
        mine.push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now() - before)
                .count());
      }
    });
  }
  while (warm.load() < clients) std::this_thread::yield();
  const StripeLoggerStats before = stripe->stats();
  start = SteadyClock::now();
  go.store(true, std::memory_order_release);
  for (auto& thread : threads) thread.join();
  stop = SteadyClock::now();
  server->stop();
  const StripeLoggerStats after = stripe->stats();

  std::vector<std::int64_t> all;
  for (const auto& mine : latencies) all.insert(all.end(), mine.begin(), mine.end());
  std::sort(all.begin(), all.end());
  const double seconds = std::chrono::duration<double>(stop - start).count();
  std::printf(
      "RESULT gateway admission=%s clients=%d stream=%d requests=%lld seconds=%.3f "
      "calls_per_s=%.0f p50_us=%.1f p99_us=%.1f errors=%lld admissions=%llu denials=%llu "
      "holds_settled=%llu holds_open=%llu received=%llu lost=%llu\n",
      admission.c_str(), clients, stream ? 1 : 0, static_cast<long long>(requests), seconds,
      static_cast<double>(requests) / seconds, percentile_us(all, 50), percentile_us(all, 99),
      static_cast<long long>(errors.load()),
      static_cast<unsigned long long>(after.admissions - before.admissions),
      static_cast<unsigned long long>(denials(after) - denials(before)),
      static_cast<unsigned long long>(after.holds_settled - before.holds_settled),
      static_cast<unsigned long long>(after.holds_open),
      static_cast<unsigned long long>(after.received - before.received),
      static_cast<unsigned long long>(after.lost));
  server.reset();
  shutdown_bounded(std::move(stripe), dir, 200);
  return errors.load() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace stripe_billing::bench

int main(int argc, char** argv) {
  stripe_billing::bench::Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::fprintf(stderr,
                   "usage: stripe-billing-gateway-bench --admission off|static [--clients 4] "
                   "[--requests 40000] [--warmup 2000] [--stream 0|1]\n");
      return 2;
    }
    args[arg.substr(2)] = argv[++i];
  }
  return stripe_billing::bench::run(args);
}
