// A child process for admission_fleet_test: a StripeLogger configured from the environment
// (STRIPE_*, a static budget on a shared PostgreSQL store) whose threads admit calls for one
// customer until refused for good, holding every admitted call open (nothing is settled).
//
// It prints "ready" once the logger is built and has admitted one call for a customer of its
// own (the store is connected), then waits for one byte on stdin (the parent
// starts every child together that way), admits, and prints
//   "admitted <reserved sum> <calls> <largest reservation> <wrong sizes> <odd refusals>"
// before a clean shutdown. Exit 0, or 2 when the logger cannot be built.
//
// --threads N (16), --cap C (STRIPE_ADMISSION_MAX_OUTPUT as set in the environment: estimates
// draw input in [0, C] and max_tokens in [0, 2 C]), --customer KEY (alice), --seed S.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "stripe_billing/admission.h"
#include "stripe_billing/config.h"
#include "stripe_billing/stripe_logger.h"

using namespace stripe_billing;

int main(int argc, char** argv) {
  int threads = 16;
  std::int64_t cap = 256;
  std::string customer = "alice";
  std::uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    if (arg == "--cap" && i + 1 < argc) cap = std::atoll(argv[++i]);
    if (arg == "--customer" && i + 1 < argc) customer = argv[++i];
    if (arg == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
  }
  auto logger = make_stripe_logger(config_from_env());
  if (!logger) {
    std::fprintf(stderr, "admission_feeder: %s\n", logger.error().to_string().c_str());
    return 2;
  }
  // Warm: the store's connection and tables are made by a first admission (for a customer of its
  // own, under the `*` budget), so that every feeder starts the race on an equal footing.
  AdmissionRequest warm;
  const std::string warm_customer = "warm-" + std::to_string(seed);
  warm.call_id = warm_customer;
  warm.model = "gpt-test";
  warm.end_user_id = warm_customer;
  warm.input_tokens = 1;
  warm.max_tokens = 1;
  const AdmissionDecision warmed = (*logger)->admit(warm);
  if (warmed.verdict != AdmissionVerdict::kAllow) {
    std::fprintf(stderr, "admission_feeder: the warm-up admission was refused: %.*s\n",
                 static_cast<int>(warmed.reason.size()), warmed.reason.data());
    return 4;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  char go = 0;
  if (read(STDIN_FILENO, &go, 1) != 1) {
    std::fprintf(stderr, "admission_feeder: no start byte\n");
    return 3;
  }

  std::atomic<std::int64_t> reserved{0}, largest{0};
  std::atomic<std::uint64_t> calls{0}, wrong_sizes{0}, odd{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937_64 random(seed * 1'000'003 + static_cast<std::uint64_t>(t));
      std::uniform_int_distribution<std::int64_t> input(0, cap);
      std::uniform_int_distribution<std::int64_t> output(0, 2 * cap);
      int transient = 0;
      for (int i = 0; i < 10'000'000 && transient < 10'000; ++i) {
        const std::string call =
            "s" + std::to_string(seed) + "-" + std::to_string(t) + "-" + std::to_string(i);
        AdmissionRequest request;
        request.call_id = call;
        request.model = "gpt-test";
        request.end_user_id = customer;
        request.input_tokens = input(random);
        request.max_tokens = output(random);
        const std::int64_t expected =
            request.input_tokens +
            (request.max_tokens > 0 ? std::min(request.max_tokens, cap) : cap);
        const AdmissionDecision decision = (*logger)->admit(request);
        if (!decision.allowed()) {
          if (decision.reason == "held_by_open_calls" || decision.reason == "budget_exhausted")
            break;
          if (decision.reason != "budget_refilling" && decision.reason != "balance_unavailable") {
            std::fprintf(stderr, "admission_feeder: refused %.*s\n",
                         static_cast<int>(decision.reason.size()), decision.reason.data());
            odd.fetch_add(1);
            break;
          }
          ++transient;
          continue;
        }
        if (decision.verdict != AdmissionVerdict::kAllow) {
          odd.fetch_add(1);  // fail_open: the store did not answer
          break;
        }
        calls.fetch_add(1);
        reserved.fetch_add(decision.reserved);
        if (decision.reserved != expected) wrong_sizes.fetch_add(1);
        std::int64_t seen = largest.load();
        while (decision.reserved > seen &&
               !largest.compare_exchange_weak(seen, decision.reserved)) {
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
  std::printf("admitted %lld %llu %lld %llu %llu\n", static_cast<long long>(reserved.load()),
              static_cast<unsigned long long>(calls.load()), static_cast<long long>(largest.load()),
              static_cast<unsigned long long>(wrong_sizes.load()),
              static_cast<unsigned long long>(odd.load()));
  std::fflush(stdout);
  (*logger)->shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(10));
  return 0;
}
