// Google Benchmark: the cost of StripeLogger::log_success_event on the host's thread (async
// durability, Stripe unreachable so delivery does not compete), against the naive design of one
// synchronous libcurl POST per event on the caller's thread (to the in-process emulator).
// BM_LogSuccessEventAsyncTokenDetails is the same hand-off in the token-billing preset, with an
// event carrying every token detail (cache read and write, reasoning, audio, image, provider,
// call type): the writer thread derives the token types, the host's thread only copies.
//
// Google Benchmark reports means; each benchmark also times every call with steady_clock and
// adds its own percentiles as counters: p50_us, p99_us (for several threads: the mean of the
// threads' percentiles; `stripe-billing-throughput latency` merges all samples instead).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bench_support.h"
#include "stripe_billing/http_transport.h"
#include "stripe_billing/secret.h"
#include "stripe_billing/stripe_client.h"

namespace stripe_billing::bench {
namespace {

void set_percentile_counters(benchmark::State& state, std::vector<std::int64_t>& samples) {
  std::sort(samples.begin(), samples.end());
  state.counters["p50_us"] =
      benchmark::Counter(percentile_us(samples, 50), benchmark::Counter::kAvgThreads);
  state.counters["p99_us"] =
      benchmark::Counter(percentile_us(samples, 99), benchmark::Counter::kAvgThreads);
}

// ---------------------------------------------------------------------------------------------
// The library, async mode.

struct LibraryFixture {
  TempDir dir;
  RefusingPort stripe_down;
  std::unique_ptr<StripeLogger> logger;
  std::uint64_t run = run_id();
  std::uint64_t rows_per_call = 1;
};
LibraryFixture* g_library = nullptr;

void library_setup(const benchmark::State&) {
  g_library = new LibraryFixture;
  g_library->logger = make_logger_or_die(
      base_config(g_library->stripe_down.base_url(), g_library->dir.file("outbox.db")));
}

void token_billing_setup(const benchmark::State&) {
  g_library = new LibraryFixture;
  Config config = base_config(g_library->stripe_down.base_url(), g_library->dir.file("outbox.db"));
  use_token_billing(config);
  g_library->logger = make_logger_or_die(config);
  g_library->rows_per_call = token_details_billed().size();
}

void library_teardown(const benchmark::State&) {
  // Let the writer commit what is buffered so the next run starts from an idle machine; delivery
  // cannot finish (Stripe is down), so shutdown only waits out a short deadline.
  wait_for_intake(*g_library->logger, g_library->logger->stats().received, in_ms(60'000),
                  g_library->rows_per_call);
  shutdown_bounded(std::move(g_library->logger), g_library->dir, 200);
  delete g_library;
  g_library = nullptr;
}

void time_log_success_event(benchmark::State& state, UsageEvent event) {
  StripeLogger& logger = *g_library->logger;
  std::vector<std::int64_t> samples;
  samples.reserve(1 << 20);
  const std::uint64_t thread = static_cast<std::uint64_t>(state.thread_index());
  std::uint64_t i = 0;
  for (auto _ : state) {
    set_call_id(event.call_id, "gb", g_library->run + thread, ++i);
    const auto start = SteadyClock::now();
    logger.log_success_event(event);
    const auto end = SteadyClock::now();
    if (samples.size() < samples.capacity()) {
      samples.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
    }
  }
  set_percentile_counters(state, samples);
  if (state.thread_index() == 0) {
    // Events the intake could not keep (its memory cap reached): they took the cheap path.
    state.counters["lost"] = static_cast<double>(logger.stats().lost);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_LogSuccessEventAsync(benchmark::State& state) {
  time_log_success_event(state,
                         sample_event("cust-" + std::to_string(state.thread_index() % 1000)));
}
BENCHMARK(BM_LogSuccessEventAsync)
    ->Setup(library_setup)
    ->Teardown(library_teardown)
    ->Iterations(200'000)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true)
    ->UseRealTime()
    ->Threads(1)
    ->Threads(2);

void BM_LogSuccessEventAsyncTokenDetails(benchmark::State& state) {
  time_log_success_event(
      state, token_details_event("cust-" + std::to_string(state.thread_index() % 1000)));
}
BENCHMARK(BM_LogSuccessEventAsyncTokenDetails)
    ->Setup(token_billing_setup)
    ->Teardown(library_teardown)
    ->Iterations(200'000)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true)
    ->UseRealTime()
    ->Threads(1)
    ->Threads(2);

// ---------------------------------------------------------------------------------------------
// The naive design: the callback itself POSTs one usage record and waits for the answer.

struct NaiveFixture {
  SeededEmulator stripe{1};
  std::unique_ptr<HttpTransport> transport = make_curl_transport();
  std::unique_ptr<StripeClient> client;
  std::uint64_t run = run_id();
};
NaiveFixture* g_naive = nullptr;

void naive_setup(const benchmark::State&) {
  g_naive = new NaiveFixture;
  g_naive->client = std::make_unique<StripeClient>(
      *g_naive->transport,
      StripeClientOptions{g_naive->stripe.emulator.base_url(), Secret(kEmulatorKey),
                          kDefaultApiVersion, std::chrono::milliseconds(5'000)});
}

void naive_teardown(const benchmark::State&) {
  delete g_naive;
  g_naive = nullptr;
}

void BM_NaiveSynchronousPost(benchmark::State& state) {
  std::vector<std::int64_t> samples;
  samples.reserve(1 << 16);
  std::string key;
  std::uint64_t i = 0, errors = 0;
  for (auto _ : state) {
    set_call_id(key, "naive-gb", g_naive->run + static_cast<std::uint64_t>(state.thread_index()),
                ++i);
    const auto start = SteadyClock::now();
    auto response = naive_post(*g_naive->client, g_naive->stripe.items.front(), key);
    const auto end = SteadyClock::now();
    if (!response) ++errors;
    if (samples.size() < samples.capacity()) {
      samples.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
    }
  }
  set_percentile_counters(state, samples);
  state.counters["errors"] = benchmark::Counter(static_cast<double>(errors));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_NaiveSynchronousPost)
    ->Setup(naive_setup)
    ->Teardown(naive_teardown)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true)
    ->UseRealTime()
    ->Threads(1);

}  // namespace
}  // namespace stripe_billing::bench

BENCHMARK_MAIN();
