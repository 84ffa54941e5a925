#include "stripe_emulator/emulator.h"

#include <algorithm>
#include <stdexcept>
#include <thread>

#include "api_pipeline.h"
#include "control_endpoints.h"
#include "credit_store.h"
#include "event_log.h"
#include "fault_queue.h"
#include "hang_gate.h"
#include "http_server.h"
#include "meter_error_reports.h"
#include "meter_event_locks.h"
#include "meter_sessions.h"
#include "meter_store.h"
#include "permissions.h"
#include "rate_limiter.h"
#include "request_log.h"
#include "resources.h"
#include "spec_catalog.h"
#include "store.h"
#include "webhook_sender.h"

namespace stripe_emulator {
namespace {

std::int64_t system_clock_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

template <typename T>
T or_throw(Expected<T> result) {
  if (auto* error = std::get_if<ApiError>(&result)) throw std::invalid_argument(error->message);
  return std::move(std::get<T>(result));
}

}  // namespace

class Emulator::Impl {
 public:
  explicit Impl(const EmulatorOptions& options)
      : host(options.host),
        store(options.clock ? options.clock : system_clock_seconds),
        meters(store),
        credits(store),
        events([this] { return store.now(); }),
        webhooks([this] { return store.now(); }, options.webhook_retry_delays),
        error_report_samples(options.error_report_samples),
        sessions([this] { return store.now(); }),
        restricted_keys(options.restricted_keys),
        pipeline(options.api_keys, store, meters, credits, events, sessions,
                 SpecCatalog::embedded(), faults, hangs, rate_limiter, meter_locks,
                 restricted_keys) {}

  // Started only once the Emulator is whole, since control requests call back into it.
  void start(Emulator& emulator, int port) {
    server = std::make_unique<HttpServer>(
        host, port, [this](const IncomingRequest& request) { return pipeline.handle(request); },
        [&emulator](const IncomingRequest& request) {
          return Outcome{handle_control(emulator, request), false};
        },
        log);
  }

  void stop() {
    hangs.shut();
    if (server) server->stop();
    webhooks.stop();
  }

  // Delivers a new snapshot event of `object` to every endpoint.
  void emit_snapshot(const std::string& type, const nlohmann::json& object) {
    webhooks.send(events.add_snapshot(type, object, webhooks.endpoint_count()),
                  WebhookSender::Kind::kNormal);
  }

  // A thin meter error report over the failed events; "" when there are none.
  std::string emit_error_report(const std::string& type, const nlohmann::json& related_object,
                                const std::vector<MeterEvent>& failed) {
    if (failed.empty()) return "";
    const auto event = events.add_thin(
        type, related_object, error_report_data(failed, error_report_samples, store.now()));
    webhooks.send(event, WebhookSender::Kind::kNormal);
    return event.id;
  }

  void resend(const std::string& event_id, WebhookSender::Kind kind,
              std::chrono::seconds age = {}) {
    const auto event = events.find(event_id);
    if (!event) throw std::invalid_argument("No such event: " + event_id);
    webhooks.send(*event, kind, age);
  }

  std::string host;
  Store store;
  MeterStore meters;
  CreditStore credits;
  EventLog events;
  WebhookSender webhooks;
  std::size_t error_report_samples;
  MeterSessions sessions;
  FaultQueue faults;
  HangGate hangs;
  RateLimiter rate_limiter;
  MeterEventLocks meter_locks;
  RestrictedKeys restricted_keys;
  RequestLog log;
  ApiPipeline pipeline;
  std::unique_ptr<HttpServer> server;  // last: stops before everything it serves from
};

Emulator::Emulator(EmulatorOptions options) : impl_(std::make_unique<Impl>(options)) {
  impl_->start(*this, options.port);
}

Emulator::~Emulator() { stop(); }

int Emulator::port() const { return impl_->server->port(); }

std::string Emulator::base_url() const {
  return "http://" + impl_->host + ":" + std::to_string(port());
}

void Emulator::stop() { impl_->stop(); }

std::string Emulator::create_customer(const std::map<std::string, std::string>& metadata,
                                      const std::string& email) {
  Customer customer;
  customer.email = email;
  customer.metadata = metadata;
  return impl_->store.add_customer(std::move(customer)).id;
}

std::string Emulator::create_product(const std::string& name) {
  Product product;
  product.name = name;
  return std::get<Product>(impl_->store.add_product(std::move(product))).id;
}

std::string Emulator::create_metered_price(const std::string& product_id, std::int64_t unit_amount,
                                           const std::string& currency) {
  Price price;
  price.product = product_id;
  price.currency = currency;
  price.unit_amount = unit_amount;
  price.recurring = Recurring{"month", 1, "metered", "sum", ""};
  auto created = impl_->store.add_price(std::move(price));
  if (const auto* error = std::get_if<ApiError>(&created))
    throw std::invalid_argument(error->message);
  return std::get<Price>(created).id;
}

SubscriptionIds Emulator::create_subscription(const std::string& customer_id,
                                              const std::string& price_id,
                                              std::optional<std::int64_t> period_start,
                                              std::optional<std::int64_t> period_end) {
  constexpr std::int64_t kDay = 86400;
  const auto now = impl_->store.now();
  const Period period{period_start.value_or(now - kDay), period_end.value_or(now + 29 * kDay)};
  auto created =
      impl_->store.add_subscription(customer_id, {NewItem{price_id, std::nullopt}}, {}, period);
  if (const auto* error = std::get_if<ApiError>(&created))
    throw std::invalid_argument(error->message);
  const auto& subscription = std::get<Subscription>(created);
  return SubscriptionIds{subscription.id, subscription.items.front().id};
}

void Emulator::delete_subscription_item(const std::string& item_id) {
  impl_->store.delete_item(item_id);
}

std::string Emulator::create_meter(const std::string& event_name,
                                   const std::string& customer_payload_key,
                                   const std::string& value_payload_key, const std::string& formula,
                                   const std::vector<std::string>& dimension_payload_keys) {
  if (formula != "sum" && formula != "count" && formula != "last") {
    throw std::invalid_argument("A meter's formula is sum, count or last, not " + formula);
  }
  Meter meter;
  meter.display_name = event_name;
  meter.event_name = event_name;
  meter.customer_key = customer_payload_key;
  meter.value_key = value_payload_key;
  meter.formula = formula;
  meter.dimension_keys = dimension_payload_keys;
  auto created = impl_->meters.add_meter(std::move(meter));
  if (const auto* error = std::get_if<ApiError>(&created))
    throw std::invalid_argument(error->message);
  return std::get<Meter>(created).id;
}

std::string Emulator::create_credit_grant(const std::string& customer_id, std::int64_t amount,
                                          const std::string& currency) {
  const auto grant = or_throw(impl_->credits.add_grant(customer_id, amount, currency));
  impl_->emit_snapshot("billing.credit_grant.created", grant);
  return grant.id;
}

void Emulator::consume_credits(const std::string& customer_id, std::int64_t amount) {
  for (const auto& transaction : or_throw(impl_->credits.apply(customer_id, amount))) {
    impl_->emit_snapshot("billing.credit_balance_transaction.created", transaction);
  }
}

std::int64_t Emulator::credit_balance(const std::string& customer_id) const {
  return impl_->credits.balance(customer_id);
}

void Emulator::add_webhook_endpoint(const std::string& url, const std::string& secret) {
  impl_->webhooks.add_endpoint(url, secret);
}

void Emulator::redeliver_event(const std::string& event_id) {
  impl_->resend(event_id, WebhookSender::Kind::kRedelivery);
}

void Emulator::deliver_forged(const std::string& event_id) {
  impl_->resend(event_id, WebhookSender::Kind::kForged);
}

void Emulator::deliver_stale(const std::string& event_id, std::chrono::seconds age) {
  impl_->resend(event_id, WebhookSender::Kind::kStale, age);
}

std::vector<WebhookDelivery> Emulator::webhook_deliveries() const {
  return impl_->webhooks.deliveries();
}

bool Emulator::wait_for_webhook_deliveries(std::size_t count,
                                           std::chrono::milliseconds timeout) const {
  return impl_->webhooks.wait_for(count, timeout);
}

void Emulator::reject_meter_event_async(const std::string& identifier, const std::string& code) {
  if (code.empty()) throw std::invalid_argument("An error report code is needed");
  if (!impl_->meters.reject(identifier, code)) {
    throw std::invalid_argument("No counted meter event has identifier " + identifier);
  }
}

std::string Emulator::trigger_meter_error_report(const std::string& event_name) {
  const auto meters = impl_->meters.meters();
  const auto meter = std::find_if(meters.begin(), meters.end(), [&](const Meter& candidate) {
    return candidate.event_name == event_name && candidate.status == "active";
  });
  if (meter == meters.end()) throw std::invalid_argument("No active meter on " + event_name);
  const auto failed = impl_->meters.take_unreported([&](const MeterEventRecord& record) {
    return record.event_name == event_name && record.error_code != "no_meter";
  });
  const nlohmann::json related = {
      {"id", meter->id}, {"type", "billing.meter"}, {"url", "/v1/billing/meters/" + meter->id}};
  return impl_->emit_error_report("v1.billing.meter.error_report_triggered", related, failed);
}

std::string Emulator::trigger_no_meter_found() {
  const auto failed = impl_->meters.take_unreported(
      [](const MeterEventRecord& record) { return record.error_code == "no_meter"; });
  return impl_->emit_error_report("v1.billing.meter.no_meter_found", nullptr, failed);
}

void Emulator::add_restricted_key(const std::string& key,
                                  const std::set<std::string>& permissions) {
  impl_->restricted_keys.add(key, permissions);
}

void Emulator::inject(const Fault& fault, int count) { impl_->faults.push(fault, count); }

void Emulator::clear_faults() { impl_->faults.clear(); }

void Emulator::set_random_faults(const std::vector<std::pair<Fault, double>>& faults,
                                 std::uint32_t seed) {
  impl_->faults.set_random(faults, seed);
}

void Emulator::set_rate_limit(double requests_per_second,
                              std::optional<std::chrono::seconds> retry_after) {
  impl_->rate_limiter.set_rate(requests_per_second, retry_after);
}

void Emulator::release_hangs() { impl_->hangs.release_all(); }

std::size_t Emulator::hung_requests() const { return impl_->hangs.held(); }

bool Emulator::wait_for_hung_requests(std::size_t count, std::chrono::milliseconds timeout) const {
  return impl_->hangs.wait_until_held(count, timeout);
}

std::int64_t Emulator::total_usage(const std::string& item_id) const {
  return impl_->store.total_usage(item_id);
}

std::vector<UsageRecord> Emulator::usage_records(const std::string& item_id) const {
  return impl_->store.usage_records(item_id);
}

std::map<std::string, std::int64_t> Emulator::totals_by_customer() const {
  return impl_->store.totals_by_customer();
}

std::map<std::string, std::int64_t> Emulator::totals_by_item() const {
  return impl_->store.totals_by_item();
}

std::vector<RecordedRequest> Emulator::requests() const { return impl_->log.entries(); }

void Emulator::clear_requests() { impl_->log.clear(); }

AnswerCounts Emulator::answer_counts() const { return impl_->log.counts(); }

std::size_t Emulator::count_answers(int min_status, int max_status,
                                    std::chrono::steady_clock::time_point from,
                                    std::chrono::steady_clock::time_point to) const {
  return impl_->log.count(min_status, max_status, from, to);
}

std::vector<MeterEventRecord> Emulator::meter_events() const { return impl_->meters.events(); }

std::map<std::string, double> Emulator::meter_totals_by_customer(
    const std::string& event_name, const std::string& group_key,
    const std::string& group_value) const {
  return impl_->meters.totals_by_customer(event_name, group_key, group_value);
}

std::map<std::vector<std::string>, double> Emulator::meter_totals_by_dimension(
    const std::string& event_name, const std::string& customer_id,
    const std::vector<std::string>& keys) const {
  return impl_->meters.totals_by_dimension(event_name, customer_id, keys);
}

std::size_t Emulator::concurrent_meter_event_refusals() const {
  return impl_->meter_locks.refusals();
}

void Emulator::expire_meter_sessions() { impl_->sessions.expire_all(); }

std::size_t Emulator::meter_sessions_created() const { return impl_->sessions.created(); }

}  // namespace stripe_emulator
