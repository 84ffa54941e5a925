#include "webhooks.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <spdlog/logger.h>

#include <nlohmann/json.hpp>

#include "admission.h"
#include "metrics.h"
#include "outbox.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

constexpr std::size_t kMaxBody = 1 << 20;  // Stripe's events are far smaller
constexpr std::size_t kMaxIdLength = 255;

std::string hex_hmac_sha256(const std::string& key, std::string_view message) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest,
           &length) == nullptr) {
    return {};
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

WebhookResponse answer(int status, const std::string& error) {
  nlohmann::json body =
      error.empty() ? nlohmann::json{{"received", true}} : nlohmann::json{{"error", error}};
  return {status, body.dump()};
}

std::string text_at(const nlohmann::json& json, const char* pointer) {
  const auto value = json.value(nlohmann::json::json_pointer(pointer), nlohmann::json());
  return value.is_string() ? value.get<std::string>() : std::string();
}

}  // namespace

const char* to_string(SignatureCheck check) noexcept {
  switch (check) {
    case SignatureCheck::kValid:
      return "valid";
    case SignatureCheck::kMalformed:
      return "malformed_signature";
    case SignatureCheck::kMismatch:
      return "bad_signature";
    case SignatureCheck::kStale:
      return "stale_timestamp";
  }
  return "malformed_signature";
}

SignatureCheck verify_stripe_signature(std::string_view body, std::string_view header,
                                       const Secret& secret, std::int64_t now_s,
                                       std::int64_t tolerance_s) {
  if (secret.empty() || header.size() > 4096) return SignatureCheck::kMalformed;
  std::optional<std::int64_t> timestamp;
  std::vector<std::string_view> signatures;
  while (!header.empty()) {
    const std::size_t comma = header.find(',');
    const std::string_view item = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    const std::size_t equals = item.find('=');
    if (equals == std::string_view::npos) continue;
    const std::string_view key = item.substr(0, equals);
    const std::string_view value = item.substr(equals + 1);
    if (key == "t") {
      if (value.empty() || value.size() > 12 || timestamp) return SignatureCheck::kMalformed;
      std::int64_t parsed = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return SignatureCheck::kMalformed;
        parsed = parsed * 10 + (c - '0');
      }
      timestamp = parsed;
    } else if (key == "v1") {
      signatures.push_back(value);
    }
  }
  if (!timestamp || signatures.empty()) return SignatureCheck::kMalformed;
  std::string signed_payload = std::to_string(*timestamp);
  signed_payload += '.';
  signed_payload.append(body);
  const std::string expected = hex_hmac_sha256(secret.reveal(), signed_payload);
  bool matched = false;
  for (std::string_view signature : signatures) {
    // Every candidate is compared in full, in constant time: nothing leaks where one differs.
    if (signature.size() == expected.size() &&
        CRYPTO_memcmp(signature.data(), expected.data(), expected.size()) == 0) {
      matched = true;
    }
  }
  if (!matched) return SignatureCheck::kMismatch;
  const std::int64_t age = now_s - *timestamp;
  if (age > tolerance_s || age < -tolerance_s) return SignatureCheck::kStale;
  return SignatureCheck::kValid;
}

std::optional<std::pair<std::string, std::string>> split_meter_identifier(std::string_view id) {
  if (id.rfind("sbh-", 0) == 0) return std::nullopt;
  const std::size_t colon = id.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == id.size()) return std::nullopt;
  return std::make_pair(std::string(id.substr(0, colon)), std::string(id.substr(colon + 1)));
}

Webhooks::Webhooks(const FinalizedConfig& config, const StripeClient& client,
                   std::shared_ptr<AdmissionStore> store, Outbox& outbox, Metrics& metrics,
                   Admission* admission, std::shared_ptr<spdlog::logger> log,
                   std::shared_ptr<Clock> clock)
    : config_(config),
      client_(client),
      store_(std::move(store)),
      outbox_(outbox),
      metrics_(metrics),
      admission_(admission),
      log_(std::move(log)),
      clock_(std::move(clock)) {
  // Events stored before a stop but not processed: processed now.
  if (auto left = store_->unprocessed_webhooks(1000)) {
    for (StoredWebhook& event : *left) queue_.push_back(std::move(event));
  }
  thread_ = std::thread([this] { run(); });
}

Webhooks::~Webhooks() { stop(); }

std::int64_t Webhooks::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_->now().time_since_epoch())
      .count();
}

void Webhooks::count(const std::string& outcome, std::uint64_t n) {
  std::lock_guard lock(mutex_);
  counters_[outcome] += n;
}

std::map<std::string, std::uint64_t> Webhooks::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

WebhookResponse Webhooks::handle(std::string_view body, std::string_view signature) noexcept {
  try {
    // Built only with a secret; without one StripeLogger answers 404 itself.
    const Secret& secret = config_.admission().webhook_secret;
    if (body.size() > kMaxBody) {
      count("too_large");
      return answer(413, "body too large");
    }
    const std::int64_t now_s = now_ms() / 1000;
    const SignatureCheck check = verify_stripe_signature(
        body, signature, secret, now_s, config_.admission().webhook_tolerance.count());
    if (check != SignatureCheck::kValid) {
      count(to_string(check));
      log_->warn("stripe_billing webhook refused: {}", to_string(check));
      return answer(400, to_string(check));
    }
    const nlohmann::json event = nlohmann::json::parse(body, nullptr, false);
    const std::string id = event.is_object() ? text_at(event, "/id") : std::string();
    const std::string type = event.is_object() ? text_at(event, "/type") : std::string();
    if (id.empty() || type.empty() || id.size() > kMaxIdLength || type.size() > kMaxIdLength ||
        !is_storable_text(id) || !is_storable_text(type)) {
      count("invalid_event");
      return answer(400, "not a Stripe event (no id or type)");
    }
    StoredWebhook stored{id, type, std::string(body)};
    auto fresh = store_->remember_webhook(stored, now_ms());
    if (!fresh) {
      count("store_unavailable");
      log_->warn("stripe_billing webhook {} not stored, Stripe will retry: {}", log_safe(id),
                 fresh.error().message);
      return answer(503, "cannot store the event now; retry");
    }
    if (!*fresh) {
      count("duplicate");
      return answer(200, "");
    }
    count("received");
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(stored));
    }
    work_.notify_one();
    return answer(200, "");
  } catch (...) {
    count("internal_error");
    return answer(503, "internal error; retry");
  }
}

bool Webhooks::drain(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  return idle_.wait_until(lock, deadline, [&] { return queue_.empty() && !busy_; });
}

void Webhooks::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  work_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Webhooks::run() {
  pthread_setname_np(pthread_self(), "sb-webhooks");
  for (;;) {
    StoredWebhook event;
    {
      std::unique_lock lock(mutex_);
      busy_ = false;
      if (queue_.empty()) idle_.notify_all();
      // Every 30 s with nothing to do, events stored but not processed (a thin event whose fetch
      // failed) are tried again.
      if (!work_.wait_for(lock, std::chrono::seconds(30),
                          [&] { return stopping_ || !queue_.empty(); })) {
        lock.unlock();
        auto left = store_->unprocessed_webhooks(100);
        lock.lock();
        if (left && queue_.empty()) {
          for (StoredWebhook& stored : *left) queue_.push_back(std::move(stored));
        }
        continue;
      }
      if (stopping_) return;  // what is left is processed at the next start
      event = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    try {
      process(event);
    } catch (const std::exception& error) {
      count("processing_failed");
      log_->warn("stripe_billing webhook {} ({}) not processed: {}", log_safe(event.id),
                 log_safe(event.type), log_safe(error.what()));
    }
  }
}

void Webhooks::process(const StoredWebhook& event) {
  const nlohmann::json body = nlohmann::json::parse(event.payload, nullptr, false);
  bool done = true;
  if (event.type == "v1.billing.meter.error_report_triggered" ||
      event.type == "v1.billing.meter.no_meter_found") {
    // A thin event: its data is fetched by id.
    const std::string version =
        config_.v2_api_version().empty() ? kDefaultV2ApiVersion : config_.v2_api_version();
    auto full = client_.get("/v2/core/events/" + encode_path_segment(event.id), {}, version);
    if (!full) {
      count("fetch_failed");
      log_->warn("stripe_billing webhook {}: cannot fetch the event: {}", log_safe(event.id),
                 full.error().message);
      done = false;  // kept unprocessed: tried again at the next start
    } else {
      error_report(event, full->body);
    }
  } else if (event.type.rfind("billing.credit_grant.", 0) == 0 ||
             event.type.rfind("billing.credit_balance_transaction.", 0) == 0) {
    credit_event(body);
    count(event.type);
  } else {
    count("unhandled");
    log_->info("stripe_billing webhook {} of type {} acknowledged, not handled", log_safe(event.id),
               log_safe(event.type));
  }
  if (done) {
    if (auto marked = store_->webhook_processed(event.id, now_ms()); !marked) {
      log_->warn("stripe_billing webhook {}: {}", log_safe(event.id), marked.error().message);
    }
  }
}

void Webhooks::error_report(const StoredWebhook& event, const nlohmann::json& thin) {
  const nlohmann::json types =
      thin.value("/data/reason/error_types"_json_pointer, nlohmann::json::array());
  const bool no_meter = event.type == "v1.billing.meter.no_meter_found";
  count(no_meter ? "no_meter_found" : "meter_error_report");
  std::int64_t reported = 0;
  std::int64_t rejected = 0;
  std::int64_t unmatched = 0;
  for (const auto& type : types.is_array() ? types : nlohmann::json::array()) {
    const std::string code = text_at(type, "/code");
    const auto errors = type.value("error_count", nlohmann::json());
    if (errors.is_number_integer()) reported += errors.get<std::int64_t>();
    std::vector<std::pair<std::string, std::string>> rows;
    const nlohmann::json samples = type.value("sample_errors", nlohmann::json::array());
    for (const auto& sample : samples.is_array() ? samples : nlohmann::json::array()) {
      const std::string identifier = text_at(sample, "/request/identifier");
      if (auto row = split_meter_identifier(identifier)) {
        rows.push_back(std::move(*row));
      } else {
        ++unmatched;
      }
    }
    if (rows.empty()) continue;
    const std::string reason =
        "stripe_" +
        (code.empty() || !is_storable_text(code) || code.size() > 64 ? "meter_error" : code);
    auto moved = outbox_.reject_delivered(rows, reason, now_ms());
    if (!moved) {
      log_->warn("stripe_billing webhook {}: {}", log_safe(event.id), moved.error().message);
      continue;
    }
    rejected += *moved;
    if (*moved > 0) metrics_.count_reason(reason, static_cast<std::uint64_t>(*moved));
  }
  count("meter_errors_reported", static_cast<std::uint64_t>(std::max<std::int64_t>(0, reported)));
  count("meter_rows_rejected", static_cast<std::uint64_t>(rejected));
  count("meter_identifiers_unmatched", static_cast<std::uint64_t>(unmatched));
  log_->warn(
      "stripe_billing Stripe refused meter events after accepting them ({}): {} errors reported, "
      "{} sampled rows marked dead, {} samples named no row here",
      log_safe(event.type), reported, rejected, unmatched);
}

void Webhooks::credit_event(const nlohmann::json& event) {
  if (admission_ == nullptr) return;
  std::string customer = text_at(event, "/data/object/customer");
  if (customer.empty()) {
    const std::string grant = text_at(event, "/data/object/credit_grant");
    if (!grant.empty()) {
      auto found = client_.get("/v1/billing/credit_grants/" + encode_path_segment(grant));
      if (found) customer = text_at(found->body, "/customer");
    }
  }
  if (!customer.empty()) admission_->balance_changed(customer);
}

}  // namespace stripe_billing
