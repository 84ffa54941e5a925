// Google Benchmark: the cost of StripeLogger::admit() on the host's thread with warm state
// (docs/performance.md, "Admission"; the target: p99 <= 5 us).
//
// STRIPE_ADMISSION=static with a budget no run can spend (STRIPE_BUDGETS="*=10^14"), one customer
// per benchmark thread, SQLite store, Stripe unreachable (a refusing loopback port) so that
// delivery does not compete. Before the timed loop each thread admits until its customer's grant
// is in (warm state). Only admit() is timed; the call's end is outside the timed region:
//   - BM_AdmitRelease: log_failure_event for the same call id (releases the hold).
//   - BM_AdmitSettle:  log_success_event for the same call id (settles the hold; the event also
//                      goes to the outbox, so the writer thread runs beside the host's threads).
//   - BM_AdmitReleaseOneCustomer: as BM_AdmitRelease, every thread admitting for one customer.
//   - BM_AdmitOff: STRIPE_ADMISSION=off, the floor (the call and its answer).
//   - BM_AdmitOffSettle: STRIPE_ADMISSION=off with log_success_event: what the settle path
//                        costs without admission (compare end_mean_us with BM_AdmitSettle's).
// end_mean_us: the mean time of the call's end (log_failure_event / log_success_event).
// Holds never pile up: each call is settled or released before the next admit.
//
// Each benchmark times every admit() with steady_clock and reports its own percentiles as
// counters p50_us, p99_us (for several threads: the mean of the threads' percentiles), and
// `refused` (admit() answers that were not allowed: 0 unless something is wrong).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "bench_support.h"
#include "stripe_billing/admission.h"

namespace stripe_billing::bench {
namespace {

void set_percentile_counters(benchmark::State& state, std::vector<std::int64_t>& samples) {
  std::sort(samples.begin(), samples.end());
  state.counters["p50_us"] =
      benchmark::Counter(percentile_us(samples, 50), benchmark::Counter::kAvgThreads);
  state.counters["p99_us"] =
      benchmark::Counter(percentile_us(samples, 99), benchmark::Counter::kAvgThreads);
  state.counters["p999_us"] =
      benchmark::Counter(percentile_us(samples, 99.9), benchmark::Counter::kAvgThreads);
}

struct AdmissionFixture {
  TempDir dir;
  RefusingPort stripe_down;
  std::unique_ptr<StripeLogger> logger;
  std::uint64_t run = run_id();
};
AdmissionFixture* g_fixture = nullptr;

void setup_with(const char* mode) {
  g_fixture = new AdmissionFixture;
  Config config = base_config(g_fixture->stripe_down.base_url(), g_fixture->dir.file("outbox.db"));
  config.admission = mode;
  if (std::string(mode) != "off") config.budgets = "*=100000000000000";
  config.admission_wait_ms = "5000";  // the warm-up's first admit per customer waits for its grant
  g_fixture->logger = make_logger_or_die(config);
}
void static_setup(const benchmark::State&) { setup_with("static"); }
void off_setup(const benchmark::State&) { setup_with("off"); }

void teardown(const benchmark::State&) {
  wait_for_intake(*g_fixture->logger, g_fixture->logger->stats().received, in_ms(60'000));
  shutdown_bounded(std::move(g_fixture->logger), g_fixture->dir, 200);
  delete g_fixture;
  g_fixture = nullptr;
}

enum class End { kRelease, kSettle };

void time_admit(benchmark::State& state, End end, bool one_customer) {
  StripeLogger& logger = *g_fixture->logger;
  const std::uint64_t thread = static_cast<std::uint64_t>(state.thread_index());
  const std::string customer = one_customer ? "cust-0" : "cust-" + std::to_string(thread);
  UsageEvent event = sample_event(customer);
  AdmissionRequest request;
  request.model = event.model;
  request.end_user_id = event.end_user_id;
  request.user_id = event.user_id;
  request.team_id = event.team_id;
  request.input_tokens = 812;
  request.max_tokens = 256;
  std::uint64_t i = 0;
  const auto finish = [&] {
    if (end == End::kSettle) {
      logger.log_success_event(event);
    } else {
      logger.log_failure_event(event);
    }
  };
  // Warm state: this customer's grant is in before anything is timed.
  for (int warm = 0; warm < 1000; ++warm) {
    set_call_id(event.call_id, "warm", g_fixture->run + thread, ++i);
    request.call_id = event.call_id;
    const AdmissionDecision decision = logger.admit(request);
    finish();
    if (decision.allowed() && decision.reason.empty() && warm >= 10) break;
  }

  std::vector<std::int64_t> samples;
  samples.reserve(1 << 20);
  std::uint64_t refused = 0;
  std::int64_t finish_ns = 0;  // the call's end (release or settle), timed apart
  for (auto _ : state) {
    set_call_id(event.call_id, "adm", g_fixture->run + thread, ++i);
    request.call_id = event.call_id;
    const auto start = SteadyClock::now();
    const AdmissionDecision decision = logger.admit(request);
    const auto stop = SteadyClock::now();
    if (!decision.allowed()) ++refused;
    if (samples.size() < samples.capacity()) {
      samples.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(stop - start).count());
    }
    finish();
    finish_ns +=
        std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now() - stop).count();
  }
  set_percentile_counters(state, samples);
  state.counters["refused"] = benchmark::Counter(static_cast<double>(refused));
  state.counters["end_mean_us"] =
      benchmark::Counter(static_cast<double>(finish_ns) / 1000.0 /
                             static_cast<double>(std::max<std::int64_t>(
                                 1, static_cast<std::int64_t>(state.iterations()))),
                         benchmark::Counter::kAvgThreads);
  if (state.thread_index() == 0) {
    const StripeLoggerStats stats = logger.stats();
    state.counters["holds_open"] = static_cast<double>(stats.holds_open);
  }
  state.SetItemsProcessed(state.iterations());
}

// Every run alike: 200,000 timed calls a thread, 3 repetitions, their aggregates, real time.
void admission_runs(benchmark::internal::Benchmark* runs) {
  runs->Teardown(teardown)
      ->Iterations(200'000)
      ->Repetitions(3)
      ->ReportAggregatesOnly(true)
      ->UseRealTime();
}

void BM_AdmitRelease(benchmark::State& state) { time_admit(state, End::kRelease, false); }
BENCHMARK(BM_AdmitRelease)->Setup(static_setup)->Apply(admission_runs)->Threads(1)->Threads(2);

void BM_AdmitSettle(benchmark::State& state) { time_admit(state, End::kSettle, false); }
BENCHMARK(BM_AdmitSettle)->Setup(static_setup)->Apply(admission_runs)->Threads(1)->Threads(2);

void BM_AdmitReleaseOneCustomer(benchmark::State& state) { time_admit(state, End::kRelease, true); }
BENCHMARK(BM_AdmitReleaseOneCustomer)->Setup(static_setup)->Apply(admission_runs)->Threads(2);

void BM_AdmitOff(benchmark::State& state) { time_admit(state, End::kRelease, false); }
BENCHMARK(BM_AdmitOff)->Setup(off_setup)->Apply(admission_runs)->Threads(1)->Threads(2);

void BM_AdmitOffSettle(benchmark::State& state) { time_admit(state, End::kSettle, false); }
BENCHMARK(BM_AdmitOffSettle)->Setup(off_setup)->Apply(admission_runs)->Threads(1)->Threads(2);

}  // namespace
}  // namespace stripe_billing::bench

BENCHMARK_MAIN();
