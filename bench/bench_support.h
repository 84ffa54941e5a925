// Shared pieces of the benchmarks: a temporary directory for the outbox, an address where Stripe
// refuses connections, events, a seeded emulator, percentiles and the peak RSS.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "stripe_billing/config.h"
#include "stripe_billing/stripe_client.h"
#include "stripe_billing/stripe_logger.h"
#include "stripe_billing/usage_event.h"
#include "stripe_emulator/emulator.h"
#include "usage_record.h"

namespace stripe_billing::bench {

inline constexpr const char* kEmulatorKey = "sk_test_emulator_0000000000000000";

using SteadyClock = std::chrono::steady_clock;

inline SteadyClock::time_point in_ms(std::int64_t ms) {
  return SteadyClock::now() + std::chrono::milliseconds(ms);
}

// A directory under $TMPDIR (or /tmp) removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "stripe_billing_bench_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() { remove(); }
  void remove() noexcept {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A loopback port that refuses every connection: a socket bound but never listening, held for
// the lifetime of the object so no other process can take the port. Stripe is "down": each
// attempt fails at once with "connection refused" and the library backs off, so delivery does
// not compete with the intake.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      throw std::runtime_error("cannot bind a loopback socket");
    }
    socklen_t length = sizeof address;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
  }
  ~RefusingPort() { ::close(fd_); }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;

  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// The configuration every benchmark starts from. `price` only has to look like a price id when
// Stripe is unreachable.
// What a naive callback does per event: build the usage record exactly as the library does and
// POST it on the calling thread, waiting for Stripe's answer.
inline Expected<StripeResponse> naive_post(const StripeClient& client, const std::string& item,
                                           const std::string& idempotency_key) {
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  return client.post_form(usage_record_path(item), usage_record_fields(1017, now), idempotency_key);
}

inline Config base_config(const std::string& api_base, const std::string& outbox_path,
                          const std::string& price = "price_bench") {
  Config config;
  config.api_key = kEmulatorKey;
  config.price_id = price;
  config.api_base = api_base;
  config.outbox_path = outbox_path;
  config.durability = "async";
  config.connect_timeout_ms = "1000";
  config.timeout_ms = "5000";
  return config;
}

// --outbox-url URL: the outbox in PostgreSQL instead of a SQLite file, in a schema of this run's
// own (bench_<pid>_<n>, left in the throwaway benchmark database).
inline void use_outbox_url(Config& config, const std::string& url) {
  if (url.empty()) return;
  static int runs = 0;
  config.outbox_url = url;
  config.outbox_schema = "bench_" + std::to_string(::getpid()) + "_" + std::to_string(++runs);
}

inline std::unique_ptr<StripeLogger> make_logger_or_die(const Config& config) {
  auto made = make_stripe_logger(config);
  if (!made) {
    std::fprintf(stderr, "cannot make the logger: %s\n", made.error().to_string().c_str());
    std::exit(2);
  }
  return std::move(made.value());
}

// A realistic event: the gateway's ids, a model name, token counts, a cost and an end time.
// Only call_id (and the customer) change from call to call; the caller rewrites them in place so
// that building the event costs nothing inside the timed region.
inline UsageEvent sample_event(const std::string& customer) {
  UsageEvent event;
  event.call_id.reserve(48);
  event.call_id = "bench-call-0";
  event.response_id = "chatcmpl-9xYzAbCdEfGhIjKlMnOpQrStUvWx";
  event.model = "gpt-4o-mini-2024-07-18";
  event.prompt_tokens = 812;
  event.completion_tokens = 205;
  event.total_tokens = 1017;
  event.response_cost = 0.000245;
  event.start_time = std::chrono::system_clock::now();
  event.end_time = event.start_time;
  event.end_user_id = customer;
  event.user_id = "user-benchmark-0001";
  event.team_id = "team-benchmark";
  event.key_alias = "bench-key";
  return event;
}

// The same with every token detail a call can report, as LiteLLM reports an Anthropic call with
// prompt caching and extended thinking (docs/token-types.md): prompt 4,250 = input 50 + cache
// read 3,000 + cache write 1,200, completion 400 holding 100 reasoning tokens, and audio and image
// counts inside them (billed within input and output). The token-billing preset bills it as four
// types: input 50, cache_read 3,000, cache_write 1,200, output 400.
inline UsageEvent token_details_event(const std::string& customer) {
  UsageEvent event = sample_event(customer);
  event.response_id = "msg_01XFDUDYJgAACzvnptvVoYEL";
  event.model = "claude-sonnet-4-5-20250929";
  event.provider = "anthropic";
  event.call_type = "acompletion";
  event.cache_hit = false;
  event.prompt_tokens = 4250;
  event.cache_read_tokens = 3000;
  event.cache_write_tokens = 1200;
  event.completion_tokens = 400;
  event.reasoning_tokens = 100;
  event.audio_input_tokens = 20;
  event.image_input_tokens = 10;
  event.audio_output_tokens = 5;
  event.image_output_tokens = 2;
  event.total_tokens = 4650;
  event.response_cost = 0.0206;
  return event;
}
// What token_details_event bills, by token type.
inline const std::map<std::string, std::int64_t>& token_details_billed() {
  static const std::map<std::string, std::int64_t> billed = {
      {"input", 50}, {"cache_read", 3000}, {"cache_write", 1200}, {"output", 400}};
  return billed;
}

// STRIPE_PRESET=token_billing on `config`: Stripe's token-billing meter (the preset names it),
// one event per non-zero token type, in `mode` (meter_events_v2 or meter_event_stream).
inline void use_token_billing(Config& config, const std::string& mode = "meter_events_v2") {
  config.preset = "token_billing";
  config.billing_mode = mode;
  config.price_id.reset();
  config.meter_event_name.reset();
}

// Writes "<prefix>-<a>-<b>" into `out` without allocating once its capacity suffices.
inline void set_call_id(std::string& out, const char* prefix, std::uint64_t a, std::uint64_t b) {
  char buffer[64];
  const int n =
      std::snprintf(buffer, sizeof buffer, "%s-%llu-%llu", prefix,
                    static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
  out.assign(buffer, static_cast<std::size_t>(n));
}

// A run identifier so that call ids never collide across runs sharing nothing anyway, and so
// different processes never produce the same ids.
inline std::uint64_t run_id() {
  return static_cast<std::uint64_t>(SteadyClock::now().time_since_epoch().count()) ^
         (static_cast<std::uint64_t>(::getpid()) << 48);
}

// Nearest-rank percentile of sorted nanosecond samples, in microseconds.
inline double percentile_us(const std::vector<std::int64_t>& sorted_ns, double p) {
  if (sorted_ns.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * sorted_ns.size()));
  const std::size_t index = std::min(sorted_ns.size() - 1, rank == 0 ? 0 : rank - 1);
  return static_cast<double>(sorted_ns[index]) / 1000.0;
}

// A line of /proc/self/status in kB ("VmHWM", "VmRSS"); -1 when absent.
inline long proc_status_kb(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0)
      return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  }
  return -1;
}

// Waits until every event received so far has been committed to the outbox (or counted as lost,
// duplicate, zero). The public flush() also waits for delivery, which never finishes while
// Stripe is down, so the intake's completion is read from the counters instead. stats() counts
// the outbox with SQL, so it is polled sparingly. Returns the number of stats() calls made.
// `rows_per_call`: the outbox rows each call stores (accepted counts rows, received and lost
// count calls): 4 for token_details_event in the token-billing preset.
inline int wait_for_intake(const StripeLogger& logger, std::uint64_t expected,
                           SteadyClock::time_point deadline, std::uint64_t rows_per_call = 1) {
  int polls = 0;
  while (SteadyClock::now() < deadline) {
    const auto before = SteadyClock::now();
    const StripeLoggerStats stats = logger.stats();
    const auto cost = SteadyClock::now() - before;
    ++polls;
    // Rows stored parked or dead count as accepted too (the writer counts every inserted row).
    const std::uint64_t done = stats.accepted + stats.deduplicated + stats.skipped_zero +
                               rows_per_call * (stats.lost + stats.dropped_shutdown);
    if (done >= expected * rows_per_call) return polls;
    // stats() holds the outbox while it counts: poll at most a fifth of the time.
    std::this_thread::sleep_for(
        std::max<SteadyClock::duration>(std::chrono::milliseconds(2), 4 * cost));
  }
  return -polls;
}

// Shuts the logger down (and destroys it) with `deadline_ms` for delivery. Should shutdown not
// return within `limit` — a hang in the library — this says so on stderr, removes `dir` and ends
// the process with exit code 3, so that every benchmark run stays bounded. The result line has
// been printed before.
inline void shutdown_bounded(std::unique_ptr<StripeLogger> logger, TempDir& dir,
                             std::int64_t deadline_ms,
                             std::chrono::seconds limit = std::chrono::seconds(30)) {
  std::promise<void> done;
  std::future<void> finished = done.get_future();
  std::thread stopper([&done, deadline_ms, owned = std::move(logger)]() mutable {
    owned->shutdown(in_ms(deadline_ms));
    owned.reset();
    done.set_value();
  });
  if (finished.wait_for(limit) != std::future_status::ready) {
    std::fflush(stdout);
    std::fprintf(stderr,
                 "WARNING: StripeLogger::shutdown did not return within %lld s (a hang in the "
                 "library); exiting without it\n",
                 static_cast<long long>(limit.count()));
    dir.remove();
    std::_Exit(3);
  }
  stopper.join();
}

// An emulator seeded with a metered price and `customers` customers, each with metadata
// litellm_customer_id=cust-<i> and a subscription on the price.
// It also has a billing meter on kBenchMeter.
inline constexpr const char* kBenchMeter = "llm_tokens";

struct SeededEmulator {
  explicit SeededEmulator(int customers) {
    product = emulator.create_product("LLM tokens");
    price = emulator.create_metered_price(product);
    emulator.create_meter(kBenchMeter);
    for (int i = 0; i < customers; ++i) {
      const std::string key = "cust-" + std::to_string(i);
      const std::string customer = emulator.create_customer({{"litellm_customer_id", key}});
      keys.push_back(key);
      customer_ids.push_back(customer);
      items.push_back(emulator.create_subscription(customer, price).item_id);
    }
  }
  stripe_emulator::Emulator emulator;
  std::string product;
  std::string price;
  std::vector<std::string> keys;
  std::vector<std::string> customer_ids;
  std::vector<std::string> items;
};

}  // namespace stripe_billing::bench
