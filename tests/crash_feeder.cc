// A child process for crash_test: feeds usage events through a StripeLogger configured from the
// environment (STRIPE_*), printing "submit <call> <customer> <quantity>" before each call and
// "accepted <call>" once log_success_event returned, one line each, flushed. The parent kills it
// at random moments. With --drain it feeds nothing and exits 0 once the outbox is empty.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>

#include "stripe_billing/config.h"
#include "stripe_billing/stripe_logger.h"

using namespace stripe_billing;

int main(int argc, char** argv) {
  std::string run = "0";
  int events = 0;
  int customers = 50;
  bool drain = false;
  int rate = 0;  // events per second; 0: as fast as the library takes them
  int drain_seconds = 60;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--run" && i + 1 < argc) run = argv[++i];
    if (arg == "--events" && i + 1 < argc) events = std::atoi(argv[++i]);
    if (arg == "--customers" && i + 1 < argc) customers = std::atoi(argv[++i]);
    if (arg == "--drain") drain = true;
    if (arg == "--rate" && i + 1 < argc) rate = std::atoi(argv[++i]);
    if (arg == "--drain-seconds" && i + 1 < argc) drain_seconds = std::atoi(argv[++i]);
  }
  auto logger = make_stripe_logger(config_from_env());
  if (!logger) {
    std::fprintf(stderr, "crash_feeder: %s\n", logger.error().to_string().c_str());
    return 2;
  }
  if (drain) {
    if ((*logger)->config().uses_postgres()) {
      // A fleet's store: whichever replica holds the engine lease delivers (this one, once the
      // killed replicas' lease has expired). Polled, bounded: a test helper's wait.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(drain_seconds);
      while ((*logger)->stats().pending > 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    const bool drained =
        (*logger)->shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(drain_seconds));
    const auto stats = (*logger)->stats();
    std::printf("drained %d pending %llu parked %llu dead %llu\n", drained ? 1 : 0,
                static_cast<unsigned long long>(stats.pending),
                static_cast<unsigned long long>(stats.parked),
                static_cast<unsigned long long>(stats.dead));
    return drained && stats.pending == 0 ? 0 : 1;
  }
  std::mt19937 random(static_cast<unsigned>(std::hash<std::string>{}(run)));
  std::uniform_int_distribution<int> tokens(1, 2000);
  // A load generator's pacing (a gateway serving `rate` calls per second), not synchronisation.
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < events; ++i) {
    if (rate > 0)
      std::this_thread::sleep_until(started + std::chrono::microseconds(1'000'000LL * i / rate));
    UsageEvent event;
    event.call_id = "r" + run + "-" + std::to_string(i);
    event.model = "crash-model";
    event.total_tokens = tokens(random);
    event.user_id = "cust-" + std::to_string(i % customers);
    event.end_time = std::chrono::system_clock::now();
    std::printf("submit %s %s %lld\n", event.call_id.c_str(), event.user_id.c_str(),
                static_cast<long long>(*event.total_tokens));
    std::fflush(stdout);
    (*logger)->log_success_event(event);
    std::printf("accepted %s\n", event.call_id.c_str());
    std::fflush(stdout);
  }
  (*logger)->shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(30));
  return 0;
}
