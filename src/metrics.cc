#include "metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <locale>
#include <nlohmann/json.hpp>
#include <sstream>

#include "stripe_billing/metrics.h"

namespace stripe_billing {
namespace {

// Prometheus label values: backslash, double quote and newline are escaped.
std::string label_value(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out << std::setprecision(17) << value;
  return out.str();
}

// Writes one metric family: its HELP and TYPE lines, then its samples.
class Exposition {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
  }
  void sample(const std::string& name,
              const std::vector<std::pair<std::string, std::string>>& labels, double value) {
    out_ << name;
    if (!labels.empty()) {
      out_ << '{';
      for (std::size_t i = 0; i < labels.size(); ++i) {
        out_ << (i ? "," : "") << labels[i].first << "=\"" << label_value(labels[i].second) << '"';
      }
      out_ << '}';
    }
    out_ << ' ' << number(value) << '\n';
  }
  void counter(const char* name, const char* help, std::uint64_t value) {
    family(name, "counter", help);
    sample(name, {}, static_cast<double>(value));
  }
  void gauge(const char* name, const char* help, double value) {
    family(name, "gauge", help);
    sample(name, {}, value);
  }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

}  // namespace

const std::vector<double>& LatencyHistogram::bounds() {
  static const std::vector<double> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                              0.5,   1,    2.5,   5,    10};
  return kBounds;
}

void Metrics::count_reason(const std::string& reason, std::uint64_t n) {
  std::lock_guard lock(mutex_);
  reasons_[reason] += n;
}

std::map<std::string, std::uint64_t> Metrics::reasons() const {
  std::lock_guard lock(mutex_);
  return reasons_;
}

void Metrics::count_request(const std::string& endpoint, const char* status_class,
                            std::chrono::nanoseconds latency) {
  const double seconds = std::chrono::duration<double>(latency).count();
  const auto& bounds = LatencyHistogram::bounds();
  const std::size_t bucket = static_cast<std::size_t>(
      std::lower_bound(bounds.begin(), bounds.end(), seconds) - bounds.begin());
  latency_buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  latency_count_.fetch_add(1, std::memory_order_relaxed);
  latency_sum_ns_.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, latency.count())),
                            std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  ++requests_[{endpoint, status_class}];
}

std::vector<RequestCount> Metrics::requests() const {
  std::lock_guard lock(mutex_);
  std::vector<RequestCount> out;
  for (const auto& [key, count] : requests_) out.push_back({key.first, key.second, count});
  return out;
}

LatencyHistogram Metrics::latency() const {
  LatencyHistogram histogram;
  for (const auto& bucket : latency_buckets_) histogram.buckets.push_back(bucket.load());
  histogram.count = latency_count_.load();
  histogram.sum_seconds = static_cast<double>(latency_sum_ns_.load()) / 1e9;
  return histogram;
}

void Metrics::count_quantity(const std::string& model, std::uint64_t quantity) {
  std::lock_guard lock(mutex_);
  // Models are the host's data: their number is capped so a label cannot grow without bound.
  auto it = quantity_by_model_.find(model);
  if (it == quantity_by_model_.end() && quantity_by_model_.size() >= kMaxModels) {
    it = quantity_by_model_.try_emplace("other", 0).first;
  } else if (it == quantity_by_model_.end()) {
    it = quantity_by_model_.emplace(model, 0).first;
  }
  it->second += quantity;
}

std::map<std::string, std::uint64_t> Metrics::quantity_by_model() const {
  std::lock_guard lock(mutex_);
  return quantity_by_model_;
}

std::string to_json(const StripeLoggerStats& stats) {
  nlohmann::json requests = nlohmann::json::array();
  for (const auto& request : stats.requests) {
    requests.push_back({{"endpoint", request.endpoint},
                        {"status_class", request.status_class},
                        {"count", request.count}});
  }
  const auto& latency = stats.request_latency;
  nlohmann::json buckets = nlohmann::json::array();
  for (std::size_t i = 0; i < latency.buckets.size(); ++i) {
    const bool last = i >= LatencyHistogram::bounds().size();
    buckets.push_back(
        {{"le", last ? nlohmann::json("+Inf") : nlohmann::json(LatencyHistogram::bounds()[i])},
         {"count", latency.buckets[i]}});
  }
  const nlohmann::json json = {
      {"events",
       {{"received", stats.received},
        {"failure_events", stats.failure_events},
        {"accepted", stats.accepted},
        {"outbox_commits", stats.outbox_commits},
        {"deduplicated", stats.deduplicated},
        {"skipped_zero", stats.skipped_zero},
        {"lost", stats.lost},
        {"dropped_shutdown", stats.dropped_shutdown},
        {"delivered", stats.delivered},
        {"failed", stats.failed},
        {"rejected", stats.rejected}}},
      {"outbox",
       {{"pending", stats.pending},
        {"parked", stats.parked},
        {"dead", stats.dead},
        {"oldest_pending_age_ms", stats.oldest_pending_age_ms}}},
      {"stripe",
       {{"requests_total", stats.stripe_requests},
        {"delivered_requests", stats.delivered_requests},
        {"retries", stats.retries},
        {"requests", requests},
        {"latency_seconds",
         {{"buckets", buckets}, {"count", latency.count}, {"sum", latency.sum_seconds}}},
        {"paused", stats.paused}}},
      {"quantity",
       {{"delivered", stats.quantity_delivered}, {"by_model", stats.quantity_by_model}}},
      {"lookups",
       {{"hits", stats.lookup_hits},
        {"misses", stats.lookup_misses},
        {"failures", stats.lookup_failures}}},
      {"rate_limit",
       {{"current_per_s", stats.rate_limit},
        {"meter_current_per_s", stats.meter_rate_limit},
        {"decreases", stats.rate_limit_decreases},
        {"waits", stats.rate_limited_waits}}},
      {"queued_batches", stats.queued_batches},
      {"admission",
       {{"allowed", stats.admissions},
        {"fail_open", stats.admissions_fail_open},
        {"denied", stats.admission_denials},
        {"holds_open", stats.holds_open},
        {"holds_settled", stats.holds_settled},
        {"holds_released", stats.holds_released},
        {"holds_expired", stats.holds_expired},
        {"settled_without_hold", stats.settled_without_hold},
        {"overage", stats.overage},
        {"store_errors", stats.admission_store_errors},
        {"credit_balance_fetches", stats.credit_balance_fetches},
        {"credit_balance_failures", stats.credit_balance_failures}}},
      {"webhooks", stats.webhooks},
  };
  return json.dump();
}

std::string to_prometheus(const StripeLoggerStats& stats) {
  Exposition out;
  out.counter("stripe_billing_events_received_total", "Successful LLM calls handed to the library.",
              stats.received);
  out.counter("stripe_billing_failure_events_total", "Failed LLM calls reported (never billed).",
              stats.failure_events);
  out.counter("stripe_billing_events_accepted_total",
              "Outbox rows stored (one per call, billed dimension and sink).", stats.accepted);
  out.counter("stripe_billing_outbox_commits_total",
              "Transactions the writer committed (each stores every event that was waiting).",
              stats.outbox_commits);
  out.counter("stripe_billing_events_deduplicated_total",
              "Rows reported again for a call already stored, billed once.", stats.deduplicated);
  out.counter("stripe_billing_events_skipped_zero_total", "Quantities of zero: nothing to bill.",
              stats.skipped_zero);
  out.counter("stripe_billing_events_lost_total",
              "Events that could not be kept: memory cap reached or outbox unwritable.",
              stats.lost);
  out.counter("stripe_billing_events_dropped_shutdown_total",
              "Events that arrived after shutdown began.", stats.dropped_shutdown);
  out.counter("stripe_billing_events_delivered_total", "Rows Stripe recorded.", stats.delivered);
  out.counter("stripe_billing_events_failed_total", "Rows dead after Stripe refused them for good.",
              stats.failed);
  out.family("stripe_billing_events_rejected_total", "counter",
             "Rows parked, dead or lost, by reason.");
  for (const auto& [reason, count] : stats.rejected) {
    out.sample("stripe_billing_events_rejected_total", {{"reason", reason}},
               static_cast<double>(count));
  }
  out.family("stripe_billing_quantity_delivered_total", "counter",
             "Quantity Stripe recorded, by model (at most 100 models, then \"other\").");
  for (const auto& [model, quantity] : stats.quantity_by_model) {
    out.sample("stripe_billing_quantity_delivered_total", {{"model", model}},
               static_cast<double>(quantity));
  }
  out.family("stripe_billing_stripe_requests_total", "counter",
             "Requests sent to Stripe, by endpoint and status class.");
  for (const auto& request : stats.requests) {
    out.sample("stripe_billing_stripe_requests_total",
               {{"endpoint", request.endpoint}, {"status_class", request.status_class}},
               static_cast<double>(request.count));
  }
  out.family("stripe_billing_stripe_request_duration_seconds", "histogram",
             "Time of requests to Stripe, network only (rate-limit waits excluded).");
  const auto& latency = stats.request_latency;
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < latency.buckets.size(); ++i) {
    cumulative += latency.buckets[i];
    const bool last = i >= LatencyHistogram::bounds().size();
    out.sample("stripe_billing_stripe_request_duration_seconds_bucket",
               {{"le", last ? "+Inf" : number(LatencyHistogram::bounds()[i])}},
               static_cast<double>(cumulative));
  }
  out.sample("stripe_billing_stripe_request_duration_seconds_sum", {}, latency.sum_seconds);
  out.sample("stripe_billing_stripe_request_duration_seconds_count", {},
             static_cast<double>(latency.count));
  out.counter("stripe_billing_retries_total", "Attempts scheduled again after a failure.",
              stats.retries);
  out.family("stripe_billing_customer_lookups_total", "counter",
             "Customer and subscription item resolutions, by result.");
  out.sample("stripe_billing_customer_lookups_total", {{"result", "hit"}},
             static_cast<double>(stats.lookup_hits));
  out.sample("stripe_billing_customer_lookups_total", {{"result", "miss"}},
             static_cast<double>(stats.lookup_misses));
  out.sample("stripe_billing_customer_lookups_total", {{"result", "failure"}},
             static_cast<double>(stats.lookup_failures));
  out.counter("stripe_billing_rate_limited_waits_total",
              "Requests that waited for the client-side rate limit.", stats.rate_limited_waits);
  out.gauge("stripe_billing_rate_limit_per_second",
            "The current client-side rate (lowered by throttling 429s, recovering by itself).",
            stats.rate_limit);
  out.gauge("stripe_billing_meter_rate_limit_per_second",
            "Live mode: the meter events' own current rate (0 when they share the general one).",
            stats.meter_rate_limit);
  out.counter("stripe_billing_rate_limit_decreases_total",
              "Times a throttling 429 lowered a client-side rate (at most once a second).",
              stats.rate_limit_decreases);
  out.gauge("stripe_billing_queued_batches",
            "Batches in memory waiting for a sender (at most 2048; the rest wait in the outbox).",
            static_cast<double>(stats.queued_batches));
  out.gauge("stripe_billing_paused", "1 while Stripe refuses the API key and sending is paused.",
            stats.paused ? 1 : 0);
  out.family("stripe_billing_outbox_events", "gauge", "Outbox rows by state.");
  out.sample("stripe_billing_outbox_events", {{"state", "pending"}},
             static_cast<double>(stats.pending));
  out.sample("stripe_billing_outbox_events", {{"state", "parked"}},
             static_cast<double>(stats.parked));
  out.sample("stripe_billing_outbox_events", {{"state", "dead"}}, static_cast<double>(stats.dead));
  out.gauge("stripe_billing_outbox_oldest_pending_age_seconds",
            "Age of the oldest row waiting to be delivered; 0 when none waits.",
            static_cast<double>(stats.oldest_pending_age_ms) / 1000.0);
  out.family("stripe_billing_admissions_total", "counter",
             "admit() answers that let a call go: within a budget, or fail-open.");
  out.sample("stripe_billing_admissions_total", {{"result", "allowed"}},
             static_cast<double>(stats.admissions));
  out.sample("stripe_billing_admissions_total", {{"result", "fail_open"}},
             static_cast<double>(stats.admissions_fail_open));
  out.family("stripe_billing_admission_denials_total", "counter", "admit() refusals, by reason.");
  for (const auto& [reason, count] : stats.admission_denials) {
    out.sample("stripe_billing_admission_denials_total", {{"reason", reason}},
               static_cast<double>(count));
  }
  out.gauge("stripe_billing_admission_holds_open",
            "Reservations of admitted calls not settled, released or expired yet.",
            static_cast<double>(stats.holds_open));
  out.family("stripe_billing_admission_holds_closed_total", "counter",
             "Holds that ended, by how: settled, released, expired, or usage without a hold.");
  out.sample("stripe_billing_admission_holds_closed_total", {{"how", "settled"}},
             static_cast<double>(stats.holds_settled));
  out.sample("stripe_billing_admission_holds_closed_total", {{"how", "released"}},
             static_cast<double>(stats.holds_released));
  out.sample("stripe_billing_admission_holds_closed_total", {{"how", "expired"}},
             static_cast<double>(stats.holds_expired));
  out.sample("stripe_billing_admission_holds_closed_total", {{"how", "without_hold"}},
             static_cast<double>(stats.settled_without_hold));
  out.counter("stripe_billing_admission_overage_total",
              "Billed units used past a customer's budget (estimates too low): billed, recorded.",
              stats.overage);
  out.counter("stripe_billing_admission_store_errors_total",
              "Admission store operations that failed (grants, reports).",
              stats.admission_store_errors);
  out.family("stripe_billing_credit_balance_fetches_total", "counter",
             "Credit balance reads from Stripe, by result.");
  out.sample("stripe_billing_credit_balance_fetches_total", {{"result", "all"}},
             static_cast<double>(stats.credit_balance_fetches));
  out.sample("stripe_billing_credit_balance_fetches_total", {{"result", "failed"}},
             static_cast<double>(stats.credit_balance_failures));
  out.family("stripe_billing_webhooks_total", "counter", "Stripe webhook events, by outcome.");
  for (const auto& [outcome, count] : stats.webhooks) {
    out.sample("stripe_billing_webhooks_total", {{"outcome", outcome}}, static_cast<double>(count));
  }
  return out.text();
}

}  // namespace stripe_billing
