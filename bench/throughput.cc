// stripe-billing-throughput: the numbers of docs/performance.md, one measurement per invocation,
// each printing one line "RESULT <name> key=value ..." (bench/run-all.sh parses those).
//
//   latency    --threads N --events N [--preset token_billing]
//                                                per-call latency of log_success_event (async)
//   intake     --durability async|sync --threads N --events N
//                                                events accepted into the outbox per second
//   end-to-end --customers 1000 --events N [--window-ms 1000] [--static-map] [--mode M]
//              [--preset token_billing]          delivered events/s and requests per 1,000 events
//
// --preset token_billing: STRIPE_PRESET=token_billing (mode meter_events_v2 unless --mode
// meter_event_stream), and every call carries every token detail (bench_support.h,
// token_details_event): four non-zero token types, so four outbox rows and four meter events.
//   rss        --events 1000000 [--rate N|--chunk N]  peak RSS with that many events pending
//   naive      --events N [--threads N]          one synchronous libcurl POST per event
//   throttle   --mode M --rate R [--throttle-permille N] [--true-limit N]
//                                                delivery under Stripe's 429s
//   ledger     --rows N --calls N                stats() and sync calls beside a large ledger
//   fsync      --samples N                       the disk's own fdatasync latency
//   page-fault --pages N                         what one page fault costs this machine
//
// In latency, intake, rss and ledger, Stripe is down (a loopback port that refuses connections), so
// delivery does not compete with the host's threads. Outbox files live in a temporary directory
// (under $TMPDIR, default /tmp) that is removed at the end.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.h"
#include "outbox.h"
#include "stripe_billing/http_transport.h"
#include "stripe_billing/secret.h"
#include "stripe_billing/stripe_client.h"

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

std::string string_arg(const Args& args, const std::string& name, const std::string& fallback) {
  const auto it = args.find(name);
  return it == args.end() ? fallback : it->second;
}

double seconds_between(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::int64_t ns_between(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
}

// Starts `threads` producers together and returns when all have finished. Each gets its index.
template <typename Body>
void run_together(int threads, Body body) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      body(t);
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  go.store(true, std::memory_order_release);
  for (auto& worker : workers) worker.join();
}

struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0, mean = 0;
};

Percentiles summarize(std::vector<std::int64_t>& samples) {
  Percentiles out;
  if (samples.empty()) return out;
  std::sort(samples.begin(), samples.end());
  out.p50 = percentile_us(samples, 50);
  out.p90 = percentile_us(samples, 90);
  out.p99 = percentile_us(samples, 99);
  out.p999 = percentile_us(samples, 99.9);
  out.max = static_cast<double>(samples.back()) / 1000.0;
  out.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / samples.size() / 1000.0;
  return out;
}

// The median cost of an empty steady_clock-timed region, in ns (what each sample includes).
std::int64_t clock_overhead_ns() {
  std::vector<std::int64_t> samples(100'000);
  for (auto& sample : samples) {
    const auto start = SteadyClock::now();
    const auto end = SteadyClock::now();
    sample = ns_between(start, end);
  }
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return samples[samples.size() / 2];
}

void print_stats_tail(const StripeLoggerStats& stats) {
  std::printf(
      " received=%llu accepted=%llu lost=%llu", static_cast<unsigned long long>(stats.received),
      static_cast<unsigned long long>(stats.accepted), static_cast<unsigned long long>(stats.lost));
}

// ---------------------------------------------------------------------------------------------

int cmd_latency(const Args& args) {
  const int threads = static_cast<int>(int_arg(args, "threads", 1));
  const std::int64_t events = int_arg(args, "events", 200'000);  // timed, per thread
  const std::int64_t warmup = int_arg(args, "warmup", 20'000);   // untimed, per thread
  // --rate R: each thread calls R times per second (paced every 100 calls) instead of as fast as
  // it can. Unpaced, one thread already offers more than the writer commits on this machine, so
  // the intake runs overloaded (its buffer grows, then sheds events as `lost`).
  const std::int64_t rate = int_arg(args, "rate", 0);
  const std::string preset = string_arg(args, "preset", "none");
  const bool token_billing = preset == "token_billing";
  TempDir dir;
  RefusingPort stripe_down;
  Config config = base_config(stripe_down.base_url(), dir.file("outbox.db"));
  if (token_billing) use_token_billing(config);
  auto logger = make_logger_or_die(config);
  const std::uint64_t run = run_id();

  std::vector<std::vector<std::int64_t>> per_thread(threads);
  std::atomic<int> warmed{0};
  // What the producer threads went through while timed (getrusage per thread): page faults,
  // being preempted, blocking (sleeps of the pacing included).
  std::atomic<long> minor_faults{0}, preemptions{0}, blocked{0};
  const auto start = SteadyClock::now();
  run_together(threads, [&](int t) {
    const std::string customer = "cust-" + std::to_string(t);
    UsageEvent event = token_billing ? token_details_event(customer) : sample_event(customer);
    std::vector<std::int64_t>& samples = per_thread[t];
    samples.resize(static_cast<std::size_t>(events));
    std::uint64_t i = 0;
    for (std::int64_t n = 0; n < warmup; ++n) {
      set_call_id(event.call_id, "lat-warm", run + t, ++i);
      logger->log_success_event(event);
    }
    // All threads leave the warm-up before any timed call, so 2 threads really overlap.
    warmed.fetch_add(1);
    while (warmed.load() < threads) std::this_thread::yield();
    struct rusage before_usage {};
    getrusage(RUSAGE_THREAD, &before_usage);
    const auto timed_start = SteadyClock::now();
    for (std::int64_t n = 0; n < events; ++n) {
      if (rate > 0 && n % 100 == 0) {
        std::this_thread::sleep_until(timed_start +
                                      std::chrono::nanoseconds(n * 1'000'000'000LL / rate));
      }
      set_call_id(event.call_id, "lat", run + t, ++i);
      const auto call_start = SteadyClock::now();
      logger->log_success_event(event);
      const auto call_end = SteadyClock::now();
      samples[static_cast<std::size_t>(n)] = ns_between(call_start, call_end);
    }
    struct rusage after_usage {};
    getrusage(RUSAGE_THREAD, &after_usage);
    minor_faults.fetch_add(after_usage.ru_minflt - before_usage.ru_minflt);
    preemptions.fetch_add(after_usage.ru_nivcsw - before_usage.ru_nivcsw);
    blocked.fetch_add(after_usage.ru_nvcsw - before_usage.ru_nvcsw);
  });
  const auto produced = SteadyClock::now();
  wait_for_intake(*logger, logger->stats().received, in_ms(90'000),
                  token_billing ? token_details_billed().size() : 1);
  const StripeLoggerStats stats = logger->stats();

  std::vector<std::int64_t> all, after_pause, others;
  for (auto& samples : per_thread) {
    all.insert(all.end(), samples.begin(), samples.end());
    // Paced, the first call after each pause (1 in 100) starts with cold caches: reported apart.
    for (std::size_t n = 0; rate > 0 && n < samples.size(); ++n) {
      (n % 100 == 0 ? after_pause : others).push_back(samples[n]);
    }
  }
  const Percentiles p = summarize(all);
  const Percentiles first = summarize(after_pause);
  const Percentiles rest = summarize(others);
  const double calls_per_s =
      static_cast<double>(threads * (events + warmup)) / seconds_between(start, produced);
  std::printf(
      "RESULT latency mode=async preset=%s threads=%d rate_per_thread=%lld events=%lld "
      "p50_us=%.3f p90_us=%.3f p99_us=%.3f p999_us=%.3f max_us=%.1f mean_us=%.3f "
      "calls_per_s=%.0f clock_overhead_ns=%lld minor_faults=%ld preemptions=%ld "
      "voluntary_switches=%ld after_pause_p50_us=%.3f after_pause_p99_us=%.3f others_p99_us=%.3f",
      preset.c_str(), threads, static_cast<long long>(rate),
      static_cast<long long>(events * threads), p.p50, p.p90, p.p99, p.p999, p.max, p.mean,
      calls_per_s, static_cast<long long>(clock_overhead_ns()), minor_faults.load(),
      preemptions.load(), blocked.load(), first.p50, first.p99, rest.p99);
  print_stats_tail(stats);
  std::printf("\n");
  shutdown_bounded(std::move(logger), dir, 200);
  return 0;
}

// ---------------------------------------------------------------------------------------------

int cmd_intake(const Args& args) {
  const std::string durability = string_arg(args, "durability", "async");
  const int threads = static_cast<int>(int_arg(args, "threads", 1));
  const std::int64_t events = int_arg(args, "events", 1'000'000);  // total
  TempDir dir;
  RefusingPort stripe_down;
  Config config = base_config(stripe_down.base_url(), dir.file("outbox.db"));
  config.durability = durability;
  use_outbox_url(config, string_arg(args, "outbox-url", ""));
  if (args.count("queue-capacity") != 0) config.queue_capacity = args.at("queue-capacity");
  auto logger = make_logger_or_die(config);
  const std::uint64_t run = run_id();

  // Each call's own latency too: in sync mode it is the host's price for durability.
  std::vector<std::vector<std::int64_t>> per_thread(static_cast<std::size_t>(threads));
  const auto start = SteadyClock::now();
  run_together(threads, [&](int t) {
    UsageEvent event = sample_event("cust-" + std::to_string(t));
    const std::int64_t mine = events / threads + (t < events % threads ? 1 : 0);
    auto& samples = per_thread[static_cast<std::size_t>(t)];
    samples.reserve(static_cast<std::size_t>(mine));
    for (std::int64_t n = 0; n < mine; ++n) {
      set_call_id(event.call_id, "intake", run + t, static_cast<std::uint64_t>(n));
      const auto call_start = SteadyClock::now();
      logger->log_success_event(event);
      samples.push_back(ns_between(call_start, SteadyClock::now()));
    }
  });
  std::vector<std::int64_t> all;
  for (auto& samples : per_thread) all.insert(all.end(), samples.begin(), samples.end());
  const Percentiles call = summarize(all);
  const auto produced = SteadyClock::now();
  const int polls = wait_for_intake(*logger, static_cast<std::uint64_t>(events), in_ms(110'000));
  const auto committed = SteadyClock::now();
  const StripeLoggerStats stats = logger->stats();

  const double seconds = seconds_between(start, committed);
  std::printf(
      "RESULT intake mode=%s store=%s threads=%d events=%lld seconds=%.3f accepted_per_s=%.0f "
      "offered_per_s=%.0f stats_polls=%d",
      durability.c_str(), config.outbox_url ? "postgres" : "sqlite", threads,
      static_cast<long long>(events), seconds, static_cast<double>(stats.accepted) / seconds,
      static_cast<double>(events) / seconds_between(start, produced), polls);
  print_stats_tail(stats);
  std::printf(
      " pending=%llu commits=%llu events_per_commit=%.1f call_p50_us=%.1f "
      "call_p99_us=%.1f call_max_us=%.1f\n",
      static_cast<unsigned long long>(stats.pending),
      static_cast<unsigned long long>(stats.outbox_commits),
      stats.outbox_commits == 0
          ? 0.0
          : static_cast<double>(events) / static_cast<double>(stats.outbox_commits),
      call.p50, call.p99, call.max);
  shutdown_bounded(std::move(logger), dir, 200);
  return polls > 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------

int cmd_end_to_end(const Args& args) {
  const int customers = static_cast<int>(int_arg(args, "customers", 1000));
  const std::int64_t events = int_arg(args, "events", 50'000);
  const std::int64_t window_ms = int_arg(args, "window-ms", 1000);
  const int threads = static_cast<int>(int_arg(args, "threads", 1));
  const bool static_map = args.count("static-map") != 0;
  const std::string preset = string_arg(args, "preset", "none");
  const bool token_billing = preset == "token_billing";
  const std::string mode =
      string_arg(args, "mode", token_billing ? "meter_events_v2" : "usage_records");
  const bool records = mode == "usage_records" || mode == "dual";
  const bool meters = mode != "usage_records";
  TempDir dir;
  SeededEmulator stripe(customers);
  Config config = base_config(stripe.emulator.base_url(), dir.file("outbox.db"), stripe.price);
  config.billing_mode = mode;
  if (meters) {
    config.meter_event_name = kBenchMeter;
    config.meter_stream_base = stripe.emulator.base_url();
  }
  if (token_billing) {
    // Stripe's token-billing meter, with its dimensions (an event without them is not counted).
    stripe.emulator.create_meter(kTokenBillingEventName, "stripe_customer_id", "value", "sum",
                                 {"token_type", "model"});
    use_token_billing(config, mode);
  }
  config.aggregation_window_ms = std::to_string(window_ms);
  if (static_map) {
    std::string map;
    for (int i = 0; i < customers; ++i) {
      map += (i == 0 ? "" : ",") + stripe.keys[i] + "=" +
             (meters ? stripe.customer_ids[i] : stripe.items[i]);
    }
    config.customer_map = map;
  }
  config.rate_limit = string_arg(args, "rate", "10000");
  // --replicas N: N gateways in this process, calls round-robin over them; on one PostgreSQL
  // store with --outbox-url, otherwise each with a SQLite file of its own.
  const int replica_count =
      static_cast<int>(std::max<std::int64_t>(1, int_arg(args, "replicas", 1)));
  use_outbox_url(config, string_arg(args, "outbox-url", ""));
  std::vector<std::unique_ptr<StripeLogger>> replicas;
  for (int r = 0; r < replica_count; ++r) {
    Config own = config;
    if (!config.outbox_url) own.outbox_path = dir.file("outbox-" + std::to_string(r) + ".db");
    replicas.push_back(make_logger_or_die(own));
  }
  const std::uint64_t run = run_id();
  const UsageEvent call = token_billing ? token_details_event("") : sample_event("");
  const std::uint64_t rows =
      static_cast<std::uint64_t>(events) * (token_billing       ? token_details_billed().size()
                                            : records && meters ? 2
                                                                : 1);

  const auto start = SteadyClock::now();
  run_together(threads, [&](int t) {
    UsageEvent event = call;
    for (std::int64_t n = t; n < events; n += threads) {
      event.end_user_id = stripe.keys[static_cast<std::size_t>(n % customers)];
      set_call_id(event.call_id, "e2e", run, static_cast<std::uint64_t>(n));
      event.end_time = std::chrono::system_clock::now();
      replicas[static_cast<std::size_t>(n % replica_count)]->log_success_event(event);
    }
  });
  // The fleet's numbers: a shared store counts every replica's rows (any replica tells), SQLite
  // replicas add up.
  const auto fleet_stats = [&] {
    StripeLoggerStats total = replicas[0]->stats();
    for (std::size_t r = 1; r < replicas.size(); ++r) {
      const StripeLoggerStats more = replicas[r]->stats();
      total.delivered += more.delivered;
      total.failed += more.failed;
      total.lost += more.lost;
      total.delivered_requests += more.delivered_requests;
      total.stripe_requests += more.stripe_requests;
      total.retries += more.retries;
      if (!config.outbox_url) {
        total.pending += more.pending;
        total.parked += more.parked;
        total.dead += more.dead;
      }
    }
    return total;
  };
  const auto produced = SteadyClock::now();
  // Delivery as a running gateway sees it: the aggregation window is honoured (flush() would
  // cut it short), so wait on the counters until nothing is pending.
  // stats() counts the outbox with SQL (a scan), so it is polled at most a fifth of the time.
  const auto deadline = in_ms(110'000);
  StripeLoggerStats stats;
  int polls = 0;
  while (SteadyClock::now() < deadline) {
    const auto before = SteadyClock::now();
    stats = fleet_stats();
    const auto cost = SteadyClock::now() - before;
    ++polls;
    if (stats.delivered + stats.failed + stats.parked + stats.dead + stats.lost >= rows &&
        stats.pending == 0) {
      break;
    }
    std::this_thread::sleep_for(
        std::max<SteadyClock::duration>(std::chrono::milliseconds(20), 4 * cost));
  }
  const auto delivered_at = SteadyClock::now();
  const bool drained = stats.pending == 0;

  std::size_t all_requests = 0, usage_posts = 0, meter_posts = 0, stream_posts = 0, lookups = 0,
              v2_event_posts = 0;
  std::size_t peak_per_s = 0;  // requests in the busiest 1 s window: the account sees this
  std::deque<SteadyClock::time_point> window;
  for (const auto& request : stripe.emulator.requests()) {
    if (request.path.rfind("/v1/", 0) != 0 && request.path.rfind("/v2/", 0) != 0) continue;
    ++all_requests;
    window.push_back(request.received_at);
    while (request.received_at - window.front() >= std::chrono::seconds(1)) window.pop_front();
    peak_per_s = std::max(peak_per_s, window.size());
    if (request.method == "POST" && request.path.find("/usage_records") != std::string::npos) {
      ++usage_posts;
    } else if (request.path == "/v1/billing/meter_events") {
      ++meter_posts;
    } else if (request.path == "/v2/billing/meter_event_stream") {
      ++stream_posts;
    } else if (request.path == "/v2/billing/meter_events") {
      ++v2_event_posts;
    } else {
      ++lookups;  // customer search, subscriptions, the v2 session
    }
  }
  const std::int64_t expected_quantity = events * sample_event("").total_tokens.value();
  std::int64_t billed_records = 0;
  for (const auto& [item, total] : stripe.emulator.totals_by_item()) billed_records += total;
  double billed_meter = 0;
  for (const auto& [customer, total] : stripe.emulator.meter_totals_by_customer(kBenchMeter)) {
    billed_meter += total;
  }
  bool correct = (!records || billed_records == expected_quantity) &&
                 (!meters || billed_meter == static_cast<double>(expected_quantity));
  if (token_billing) {
    // Stripe's totals by token type, over every customer, against what the calls billed.
    std::map<std::string, double> by_type;
    for (const auto& [group, total] :
         stripe.emulator.meter_totals_by_dimension(kTokenBillingEventName, "", {"token_type"})) {
      by_type[group.at(1)] += total;
    }
    std::map<std::string, double> wanted;
    for (const auto& [type, tokens] : token_details_billed()) {
      wanted[type] = static_cast<double>(events * tokens);
    }
    correct = by_type == wanted;
  }
  const double seconds = seconds_between(start, delivered_at);
  const double per_k = 1000.0 / static_cast<double>(events);
  std::printf(
      "RESULT end-to-end mode=%s preset=%s store=%s replicas=%d rate=%s peak_requests_per_s=%zu "
      "customers=%d events=%lld window_ms=%lld static_map=%d "
      "seconds=%.3f delivered_per_s=%.0f events_per_s=%.0f requests_per_1k=%.2f "
      "usage_posts_per_1k=%.2f meter_posts_per_1k=%.2f stream_posts_per_1k=%.2f "
      "v2_event_posts_per_1k=%.2f lookups_per_1k=%.2f rows=%llu delivered=%llu "
      "delivered_requests=%llu stripe_requests=%llu "
      "emulator_requests=%zu retries=%llu usage_correct=%d drained=%d produce_s=%.3f "
      "stats_polls=%d",
      mode.c_str(), preset.c_str(), config.outbox_url ? "postgres" : "sqlite", replica_count,
      config.rate_limit->c_str(), peak_per_s, customers, static_cast<long long>(events),
      static_cast<long long>(window_ms), static_map ? 1 : 0, seconds,
      static_cast<double>(stats.delivered) / seconds, static_cast<double>(events) / seconds,
      all_requests * per_k, usage_posts * per_k, meter_posts * per_k, stream_posts * per_k,
      v2_event_posts * per_k, lookups * per_k, static_cast<unsigned long long>(rows),
      static_cast<unsigned long long>(stats.delivered),
      static_cast<unsigned long long>(stats.delivered_requests),
      static_cast<unsigned long long>(stats.stripe_requests), all_requests,
      static_cast<unsigned long long>(stats.retries), correct ? 1 : 0, drained ? 1 : 0,
      seconds_between(start, produced), polls);
  print_stats_tail(stats);
  std::printf("\n");
  for (auto& replica : replicas) shutdown_bounded(std::move(replica), dir, 1'000);
  return correct ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------

int cmd_rss(const Args& args) {
  const std::int64_t events = int_arg(args, "events", 1'000'000);
  // How the backlog arrives. --chunk N: the host hands over N events as fast as it can, then
  // waits until the intake has committed them (bursts the writer absorbs; none is lost).
  // Neither --chunk nor --rate: one unthrottled burst (events beyond the queue capacity are lost;
  // the peak then shows the intake's memory cap).
  const std::int64_t chunk = int_arg(args, "chunk", 0);
  // --rate R: instead, a steady arrival of R events/s (paced every 1,000 events), as a gateway
  // produces while Stripe is down; the intake buffer then holds only what arrives per commit.
  const std::int64_t rate = int_arg(args, "rate", 0);
  const long baseline_kb = proc_status_kb("VmHWM");
  TempDir dir;
  RefusingPort stripe_down;
  Config config = base_config(stripe_down.base_url(), dir.file("outbox.db"));
  if (args.count("queue-capacity") != 0) config.queue_capacity = args.at("queue-capacity");
  auto logger = make_logger_or_die(config);
  const std::uint64_t run = run_id();

  const auto start = SteadyClock::now();
  UsageEvent event = sample_event("");
  int polls = 0;
  const auto deadline = in_ms(110'000);
  for (std::int64_t n = 0; n < events; ++n) {
    event.end_user_id = "cust-" + std::to_string(n % 1000);
    set_call_id(event.call_id, "rss", run, static_cast<std::uint64_t>(n));
    logger->log_success_event(event);
    if (rate > 0 && (n + 1) % 1000 == 0) {
      std::this_thread::sleep_until(start +
                                    std::chrono::nanoseconds((n + 1) * 1'000'000'000LL / rate));
    }
    if (chunk > 0 && (n + 1) % chunk == 0 && n + 1 < events) {
      const int used = wait_for_intake(*logger, static_cast<std::uint64_t>(n + 1), deadline);
      if (used < 0) break;
      polls += used;
    }
  }
  const int last = wait_for_intake(*logger, static_cast<std::uint64_t>(events), deadline);
  polls = last < 0 ? -1 : polls + last;
  const double seconds = seconds_between(start, SteadyClock::now());
  const StripeLoggerStats stats = logger->stats();
  const long hwm_kb = proc_status_kb("VmHWM");
  const long rss_kb = proc_status_kb("VmRSS");
  const char* arrival = rate > 0 ? "paced" : chunk > 0 ? "chunked" : "burst";
  std::printf(
      "RESULT rss events=%lld arrival=%s rate=%lld chunk=%lld pending=%llu "
      "peak_rss_mb=%.1f rss_now_mb=%.1f baseline_mb=%.1f seconds=%.3f stats_polls=%d "
      "usage_event_bytes=%zu",
      static_cast<long long>(events), arrival, static_cast<long long>(rate),
      static_cast<long long>(chunk), static_cast<unsigned long long>(stats.pending),
      hwm_kb / 1024.0, rss_kb / 1024.0, baseline_kb / 1024.0, seconds, polls, sizeof(UsageEvent));
  print_stats_tail(stats);
  std::printf("\n");
  shutdown_bounded(std::move(logger), dir, 200);
  return polls > 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------

int cmd_naive(const Args& args) {
  const std::int64_t events = int_arg(args, "events", 5'000);  // total
  const int threads = static_cast<int>(int_arg(args, "threads", 1));
  const int customers = static_cast<int>(int_arg(args, "customers", 1000));
  SeededEmulator stripe(customers);
  std::shared_ptr<HttpTransport> transport = make_curl_transport();
  const StripeClient client(
      *transport, StripeClientOptions{stripe.emulator.base_url(), Secret(kEmulatorKey),
                                      kDefaultApiVersion, std::chrono::milliseconds(5'000)});
  const std::uint64_t run = run_id();
  std::vector<std::vector<std::int64_t>> per_thread(threads);
  std::atomic<std::uint64_t> errors{0};

  const auto start = SteadyClock::now();
  run_together(threads, [&](int t) {
    auto& samples = per_thread[t];
    std::string key;
    for (std::int64_t n = t; n < events; n += threads) {
      set_call_id(key, "naive", run, static_cast<std::uint64_t>(n));
      const auto call_start = SteadyClock::now();
      auto response =
          naive_post(client, stripe.items[static_cast<std::size_t>(n % customers)], key);
      const auto call_end = SteadyClock::now();
      if (!response) errors.fetch_add(1);
      samples.push_back(ns_between(call_start, call_end));
    }
  });
  const double seconds = seconds_between(start, SteadyClock::now());
  std::vector<std::int64_t> all;
  for (auto& samples : per_thread) all.insert(all.end(), samples.begin(), samples.end());
  const Percentiles p = summarize(all);
  std::printf(
      "RESULT naive threads=%d events=%lld seconds=%.3f events_per_s=%.0f p50_us=%.1f "
      "p90_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f errors=%llu\n",
      threads, static_cast<long long>(events), seconds, static_cast<double>(events) / seconds,
      p.p50, p.p90, p.p99, p.max, p.mean, static_cast<unsigned long long>(errors.load()));
  return errors.load() == 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------

// Delivery under Stripe's 429s. The emulator answers a share of all API requests with a
// throttling 429 (--throttle, Stripe-Rate-Limited-Reason: global-rate), and/or enforces a true
// limit below the configured rate (--true-limit, requests per second, global-rate 429 above it).
// A producer offers more calls than the rate can carry; over the measured window (after the
// warm-up) the run reports what Stripe accepted per second and per kind, and the client's rate.
int cmd_throttle(const Args& args) {
  const std::string mode = string_arg(args, "mode", "meter_events");
  const std::int64_t rate = int_arg(args, "rate", 25);
  const std::int64_t seconds = int_arg(args, "seconds", 60);
  const std::int64_t warmup = int_arg(args, "warmup", 10);
  const std::int64_t throttle_permille = int_arg(args, "throttle-permille", 50);
  const std::int64_t true_limit = int_arg(args, "true-limit", 0);
  const int customers = static_cast<int>(int_arg(args, "customers", 20));
  const std::int64_t offered = int_arg(args, "offered", rate * 3 / 2);
  TempDir dir;
  SeededEmulator stripe(customers);
  Config config = base_config(stripe.emulator.base_url(), dir.file("outbox.db"), stripe.price);
  config.billing_mode = mode;
  if (mode != "usage_records") {
    config.meter_event_name = kBenchMeter;
    config.meter_stream_base = stripe.emulator.base_url();
  }
  if (mode == "meter_events" || mode == "meter_event_stream") config.price_id.reset();
  config.rate_limit = std::to_string(rate);
  config.aggregation_window_ms = "1000";
  config.max_backoff_s = "5";
  auto logger = make_logger_or_die(config);
  if (throttle_permille > 0) {
    stripe.emulator.set_random_faults(
        {{stripe_emulator::Fault{stripe_emulator::FaultKind::kStatus, 429, "/v", {}},
          static_cast<double>(throttle_permille) / 1000.0}},
        20261201);
  }
  if (true_limit > 0) stripe.emulator.set_rate_limit(static_cast<double>(true_limit));
  const std::uint64_t run = run_id();

  std::atomic<bool> producing{true};
  std::thread producer([&] {
    UsageEvent event = sample_event("");
    const auto started = SteadyClock::now();
    for (std::int64_t n = 0; producing.load(); ++n) {
      std::this_thread::sleep_until(started + std::chrono::microseconds(n * 1'000'000 / offered));
      event.end_user_id = stripe.keys[static_cast<std::size_t>(n % customers)];
      set_call_id(event.call_id, "throttle", run, static_cast<std::uint64_t>(n));
      event.end_time = std::chrono::system_clock::now();
      logger->log_success_event(event);
    }
  });
  const auto start = SteadyClock::now();
  const auto window_start = start + std::chrono::seconds(warmup);
  const auto window_end = start + std::chrono::seconds(seconds);
  std::vector<double> client_rates;
  while (SteadyClock::now() < window_end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // sampling a gauge
    if (SteadyClock::now() >= window_start) client_rates.push_back(logger->stats().rate_limit);
  }
  producing = false;
  producer.join();
  const StripeLoggerStats stats = logger->stats();

  std::size_t accepted = 0, usage_ok = 0, meter_ok = 0, stream_ok = 0, throttled = 0, lookups = 0;
  for (const auto& request : stripe.emulator.requests()) {
    if (request.received_at < window_start || request.received_at >= window_end) continue;
    if (request.status == 429) ++throttled;
    if (request.status < 200 || request.status >= 300) continue;
    ++accepted;
    if (request.path.find("/usage_records") != std::string::npos) {
      ++usage_ok;
    } else if (request.path == "/v1/billing/meter_events") {
      ++meter_ok;
    } else if (request.path == "/v2/billing/meter_event_stream") {
      ++stream_ok;
    } else {
      ++lookups;
    }
  }
  const double window = static_cast<double>(seconds - warmup);
  double mean = 0, lowest = client_rates.empty() ? 0 : client_rates.front();
  for (double r : client_rates) {
    mean += r;
    lowest = std::min(lowest, r);
  }
  if (!client_rates.empty()) mean /= static_cast<double>(client_rates.size());
  const double limit = true_limit > 0 ? static_cast<double>(true_limit) : static_cast<double>(rate);
  std::printf(
      "RESULT throttle mode=%s rate=%lld throttle_permille=%lld true_limit=%lld offered=%lld "
      "window_s=%.0f accepted_per_s=%.2f accepted_share=%.3f usage_records_per_s=%.2f "
      "meter_events_per_s=%.2f stream_per_s=%.2f lookups_per_s=%.2f throttled_per_s=%.2f "
      "client_rate_mean=%.2f client_rate_min=%.2f client_mean_share=%.3f client_min_share=%.3f "
      "decreases=%llu pending=%llu oldest_pending_ms=%lld delivered=%llu dead=%llu",
      mode.c_str(), static_cast<long long>(rate), static_cast<long long>(throttle_permille),
      static_cast<long long>(true_limit), static_cast<long long>(offered), window,
      static_cast<double>(accepted) / window, static_cast<double>(accepted) / window / limit,
      static_cast<double>(usage_ok) / window, static_cast<double>(meter_ok) / window,
      static_cast<double>(stream_ok) / window, static_cast<double>(lookups) / window,
      static_cast<double>(throttled) / window, mean, lowest, mean / limit, lowest / limit,
      static_cast<unsigned long long>(stats.rate_limit_decreases),
      static_cast<unsigned long long>(stats.pending),
      static_cast<long long>(stats.oldest_pending_age_ms),
      static_cast<unsigned long long>(stats.delivered),
      static_cast<unsigned long long>(stats.dead));
  print_stats_tail(stats);
  std::printf("\n");
  shutdown_bounded(std::move(logger), dir, 200);
  return 0;
}

// ---------------------------------------------------------------------------------------------

// A large ledger must not slow the host: an outbox with --rows delivered rows (the hourly prune
// scans them all, in steps, as soon as the logger starts), a /metrics scraper calling stats()
// every 10 ms, and sync calls timed meanwhile.
int cmd_ledger(const Args& args) {
  const std::int64_t rows = int_arg(args, "rows", 1'000'000);
  const std::int64_t calls = int_arg(args, "calls", 5'000);
  TempDir dir;
  RefusingPort stripe_down;
  Config config = base_config(stripe_down.base_url(), dir.file("outbox.db"));
  config.durability = "sync";
  {
    auto outbox = Outbox::open(dir.file("outbox.db"), false);
    if (!outbox) return 2;
    std::vector<NewEvent> slice;
    for (std::int64_t n = 0; n < rows; ++n) {
      NewEvent row;
      row.call_id = "ledger-" + std::to_string(n);
      row.dimension = "total_tokens";
      row.customer_key = "cust-" + std::to_string(n % 1000);
      row.quantity = 1017;
      row.event_time = 1'767'225'600;
      row.accepted_at_ms = 1'767'225'600'000;
      row.model = "gpt-4o-mini-2024-07-18";
      row.state = EventState::kDelivered;
      slice.push_back(std::move(row));
      if (slice.size() == 8192 || n + 1 == rows) {
        if (!(*outbox)->insert(slice)) return 2;
        slice.clear();
      }
    }
  }
  auto logger = make_logger_or_die(config);
  std::atomic<bool> scraping{true};
  std::vector<std::int64_t> scrapes;
  std::thread scraper([&] {
    while (scraping.load()) {
      const auto started = SteadyClock::now();
      (void)logger->stats();
      scrapes.push_back(ns_between(started, SteadyClock::now()));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // a scrape interval
    }
  });
  std::vector<std::int64_t> samples;
  UsageEvent event = sample_event("cust-1");
  const std::uint64_t run = run_id();
  for (std::int64_t n = 0; n < calls; ++n) {
    set_call_id(event.call_id, "ledger-call", run, static_cast<std::uint64_t>(n));
    const auto started = SteadyClock::now();
    logger->log_success_event(event);
    samples.push_back(ns_between(started, SteadyClock::now()));
  }
  scraping = false;
  scraper.join();
  const Percentiles call = summarize(samples);
  const Percentiles scrape = summarize(scrapes);
  const StripeLoggerStats stats = logger->stats();
  std::printf(
      "RESULT ledger rows=%lld calls=%lld call_p50_us=%.1f call_p99_us=%.1f "
      "call_max_us=%.1f stats_p50_us=%.1f stats_p99_us=%.1f stats_max_us=%.1f scrapes=%zu",
      static_cast<long long>(rows), static_cast<long long>(calls), call.p50, call.p99, call.max,
      scrape.p50, scrape.p99, scrape.max, scrapes.size());
  print_stats_tail(stats);
  std::printf("\n");
  shutdown_bounded(std::move(logger), dir, 200);
  return 0;
}

// ---------------------------------------------------------------------------------------------

// The disk's own fdatasync, where the outbox lives: what a sync call's latency is measured
// against. Overwrites blocks of a file written through once, as the journal does.
int cmd_fsync(const Args& args) {
  const std::int64_t samples_wanted = int_arg(args, "samples", 2000);
  TempDir dir;
  const std::string path = dir.file("fsync.dat");
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return 1;
  const std::string block(4096, 'x');
  for (int i = 0; i < 256; ++i) {
    if (::pwrite(fd, block.data(), block.size(), static_cast<off_t>(i) * 4096) < 0) return 1;
  }
  ::fsync(fd);
  std::vector<std::int64_t> samples;
  for (std::int64_t i = 0; i < samples_wanted; ++i) {
    if (::pwrite(fd, block.data(), block.size(), static_cast<off_t>(i % 256) * 4096) < 0) return 1;
    const auto started = SteadyClock::now();
    ::fdatasync(fd);
    samples.push_back(ns_between(started, SteadyClock::now()));
  }
  ::close(fd);
  const Percentiles p = summarize(samples);
  std::printf("RESULT fsync samples=%lld p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f\n",
              static_cast<long long>(samples_wanted), p.p50, p.p90, p.p99, p.max);
  return 0;
}

// What the machine charges for a page fault: the first write to each page of fresh anonymous
// memory (a host thread that takes one waits this long; unpaced latency runs take thousands).
int cmd_page_fault(const Args& args) {
  const std::int64_t pages = int_arg(args, "pages", 32768);
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  const std::size_t bytes = static_cast<std::size_t>(pages) * page;
  void* memory = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return 1;
  auto* bytes_at = static_cast<volatile char*>(memory);
  std::vector<std::int64_t> samples;
  samples.reserve(static_cast<std::size_t>(pages));
  for (std::int64_t i = 0; i < pages; ++i) {
    const auto started = SteadyClock::now();
    bytes_at[static_cast<std::size_t>(i) * page] = 1;
    samples.push_back(ns_between(started, SteadyClock::now()));
  }
  ::munmap(memory, bytes);
  const Percentiles p = summarize(samples);
  std::printf("RESULT page_fault pages=%lld p50_us=%.2f p99_us=%.2f mean_us=%.2f\n",
              static_cast<long long>(pages), p.p50, p.p99, p.mean);
  return 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: stripe-billing-throughput <command> [--option value ...]\n"
               "  latency    [--threads 1] [--events 200000] [--warmup 20000] [--rate R]\n"
               "             [--preset token_billing]\n"
               "             (events, warm-up calls and rate are per thread)\n"
               "  intake     [--durability async|sync] [--threads 1] [--events 1000000]\n"
               "             [--queue-capacity N] [--outbox-url postgresql://…]\n"
               "  end-to-end [--customers 1000] [--events 50000] [--window-ms 1000]\n"
               "             [--threads 1] [--static-map] [--rate 10000] [--replicas 1]\n"
               "             [--outbox-url postgresql://…]\n"
               "             [--mode usage_records|meter_events|meter_event_stream|dual|\n"
               "                     meter_events_v2] [--preset token_billing]\n"
               "  rss        [--events 1000000] [--rate N | --chunk N] [--queue-capacity N]\n"
               "  naive      [--events 5000] [--threads 1] [--customers 1000]\n"
               "  throttle   [--mode meter_events|dual|...] [--rate 25] [--seconds 60]\n"
               "             [--warmup 10] [--throttle-permille 50] [--true-limit 0]\n"
               "             [--customers 20] [--offered R]\n"
               "  fsync      [--samples 2000]\n"
               "  page-fault [--pages 32768]\n"
               "  ledger     [--rows 1000000] [--calls 5000]\n");
  return 2;
}

}  // namespace
}  // namespace stripe_billing::bench

int main(int argc, char** argv) {
  using namespace stripe_billing::bench;
  if (argc < 2) return usage();
  const std::string command = argv[1];
  Args args;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) return usage();
    const std::string name = arg.substr(2);
    if (name == "static-map") {
      args[name] = "1";
    } else if (i + 1 < argc) {
      args[name] = argv[++i];
    } else {
      return usage();
    }
  }
  if (command == "latency") return cmd_latency(args);
  if (command == "intake") return cmd_intake(args);
  if (command == "end-to-end") return cmd_end_to_end(args);
  if (command == "rss") return cmd_rss(args);
  if (command == "naive") return cmd_naive(args);
  if (command == "throttle") return cmd_throttle(args);
  if (command == "fsync") return cmd_fsync(args);
  if (command == "page-fault") return cmd_page_fault(args);
  if (command == "ledger") return cmd_ledger(args);
  return usage();
}
