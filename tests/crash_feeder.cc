// A child process for crash_test: feeds usage events through a StripeLogger configured from the
// environment (STRIPE_*), printing "submit <call> <customer> <quantity>" before each call and
// "accepted <call>" once log_success_event returned, one line each, flushed. The parent kills it
// at random moments. With --drain it feeds nothing and exits 0 once the outbox is empty.
//
// --shape tokens: calls with token details, as LiteLLM reports them (every other one Anthropic,
// the rest OpenAI; docs/token-types.md), for STRIPE_PRESET=token_billing. Each call is printed as
// one "submit <call>:<token type> <customer> <tokens>" line per non-zero billable type, before
// the call. The feeder draws the billable counts first and builds the reported counts from them
// (Anthropic: prompt = input + cache read + cache write; OpenAI: prompt = input + cached,
// completion holding the reasoning), so what it prints does not come from the library's own
// derivation.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "stripe_billing/config.h"
#include "stripe_billing/stripe_logger.h"

using namespace stripe_billing;

namespace {

// Fills `event` with call `i`'s tokens as its provider reports them and returns what each
// billable token type should count (0: nothing billed of that type).
std::vector<std::pair<const char*, std::int64_t>> token_call(UsageEvent& event, int i,
                                                             std::mt19937& random) {
  const auto draw = [&random](std::int64_t low, std::int64_t high) {
    return std::uniform_int_distribution<std::int64_t>(low, high)(random);
  };
  event.call_type = "acompletion";
  const std::int64_t input = draw(1, 500);
  const std::int64_t output = draw(1, 800);
  event.completion_tokens = output;
  if (i % 2 == 0) {
    // Anthropic, as LiteLLM reports it: prompt = input + cache read + cache write. Every fourth
    // one wrote nothing to the cache (no cache_creation_input_tokens: no cache_write event).
    const std::int64_t read = draw(1, 3000);
    const std::int64_t write = i % 8 == 0 ? 0 : draw(1, 1200);
    event.provider = "anthropic";
    event.model = "claude-sonnet-4-5-20250929";
    event.cache_read_tokens = read;
    if (write > 0) event.cache_write_tokens = write;
    event.prompt_tokens = input + read + write;
    event.total_tokens = *event.prompt_tokens + output;
    return {{"input", input}, {"cache_read", read}, {"cache_write", write}, {"output", output}};
  }
  // OpenAI: prompt holds the cached tokens, completion the reasoning ones. Every fifth one had
  // no cache hit (no cached_tokens: only input and output).
  const std::int64_t cached = i % 10 == 1 ? 0 : draw(1, 2000);
  event.provider = "openai";
  event.model = "gpt-4o-2024-08-06";
  if (cached > 0) event.cache_read_tokens = cached;
  event.reasoning_tokens = draw(0, output);
  event.prompt_tokens = input + cached;
  event.total_tokens = *event.prompt_tokens + output;
  return {{"input", input}, {"cached_input", cached}, {"output", output}};
}

}  // namespace

int main(int argc, char** argv) {
  std::string run = "0";
  int events = 0;
  int customers = 50;
  bool drain = false;
  int rate = 0;  // events per second; 0: as fast as the library takes them
  int drain_seconds = 60;
  bool token_shape = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--run" && i + 1 < argc) run = argv[++i];
    if (arg == "--events" && i + 1 < argc) events = std::atoi(argv[++i]);
    if (arg == "--customers" && i + 1 < argc) customers = std::atoi(argv[++i]);
    if (arg == "--drain") drain = true;
    if (arg == "--rate" && i + 1 < argc) rate = std::atoi(argv[++i]);
    if (arg == "--drain-seconds" && i + 1 < argc) drain_seconds = std::atoi(argv[++i]);
    if (arg == "--shape" && i + 1 < argc) token_shape = std::string(argv[++i]) == "tokens";
  }
  auto logger = make_stripe_logger(config_from_env());
  if (!logger) {
    std::fprintf(stderr, "crash_feeder: %s\n", logger.error().to_string().c_str());
    return 2;
  }
  if (drain) {
    if ((*logger)->config().uses_postgres()) {
      // A fleet's store: whichever replica holds the engine lease delivers (this one, once the
      // killed replicas' lease has expired); shutdown() alone would not wait for another's.
      (void)(*logger)->wait_until_delivered(std::chrono::steady_clock::now() +
                                            std::chrono::seconds(drain_seconds));
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
    event.user_id = "cust-" + std::to_string(i % customers);
    event.end_time = std::chrono::system_clock::now();
    if (token_shape) {
      const std::vector<std::pair<const char*, std::int64_t>> billable =
          token_call(event, i, random);
      for (const auto& [type, count] : billable) {
        if (count == 0) continue;
        std::printf("submit %s:%s %s %lld\n", event.call_id.c_str(), type, event.user_id.c_str(),
                    static_cast<long long>(count));
      }
    } else {
      event.model = "crash-model";
      event.total_tokens = tokens(random);
      std::printf("submit %s %s %lld\n", event.call_id.c_str(), event.user_id.c_str(),
                  static_cast<long long>(*event.total_tokens));
    }
    std::fflush(stdout);
    (*logger)->log_success_event(event);
    std::printf("accepted %s\n", event.call_id.c_str());
    std::fflush(stdout);
  }
  (*logger)->shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(30));
  return 0;
}
