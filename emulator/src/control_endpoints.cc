#include "control_endpoints.h"

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "form_parser.h"
#include "form_values.h"

namespace stripe_emulator {
namespace {

using nlohmann::json;

using stripe_emulator::ok;
Answer ok() { return ok({{"ok", true}}); }

Answer failure(int status, const std::string& message) {
  return Answer{status, {{"error", {{"message", message}}}}, {}};
}

bool is_loopback(const std::string& address) {
  return address.rfind("127.", 0) == 0 || address == "::1" || address.rfind("::ffff:127.", 0) == 0;
}

std::optional<FaultKind> fault_kind(const std::string& name) {
  if (name == "status") return FaultKind::kStatus;
  if (name == "hang") return FaultKind::kHang;
  if (name == "close") return FaultKind::kCloseConnection;
  if (name == "close_after_commit") return FaultKind::kCloseAfterCommit;
  return std::nullopt;
}

// Meters with at least one counted event, by event name.
json meter_totals(const Emulator& emulator) {
  json totals = json::object();
  for (const auto& event : emulator.meter_events()) {
    if (event.error_code.empty() && !totals.contains(event.event_name)) {
      totals[event.event_name] = emulator.meter_totals_by_customer(event.event_name);
    }
  }
  return totals;
}

Answer totals(const Emulator& emulator) {
  return ok({{"items", emulator.totals_by_item()},
             {"customers", emulator.totals_by_customer()},
             {"meters", meter_totals(emulator)}});
}

std::optional<TooManyRequestsCode> too_many_requests_code(const std::string& name) {
  if (name == "rate_limit") return TooManyRequestsCode::kRateLimit;
  if (name == "lock_timeout") return TooManyRequestsCode::kLockTimeout;
  return std::nullopt;
}

// "retry_after_seconds", if the body has it; throws json::exception when it is not an integer and
// std::invalid_argument when it is negative.
std::optional<std::chrono::seconds> retry_after(const json& body) {
  if (!body.contains("retry_after_seconds")) return std::nullopt;
  const auto seconds = body.at("retry_after_seconds").get<std::int64_t>();
  if (seconds < 0) throw std::invalid_argument("retry_after_seconds must not be negative");
  return std::chrono::seconds(seconds);
}

// A fault described in JSON; throws std::invalid_argument or json::exception when it is malformed.
Fault fault_of(const json& body) {
  const auto kind = fault_kind(body.value("kind", "status"));
  if (!kind) {
    throw std::invalid_argument("kind must be one of status, hang, close, close_after_commit");
  }
  const auto code = too_many_requests_code(body.value("code", "rate_limit"));
  if (!code) throw std::invalid_argument("code must be rate_limit or lock_timeout");
  Fault fault;
  fault.kind = *kind;
  fault.status = body.value("status", 500);
  fault.path_prefix = body.value("path_prefix", "");
  fault.hang = std::chrono::milliseconds(body.value("hang_ms", 0));
  fault.code = *code;
  fault.rate_limited_reason = body.value("rate_limited_reason", fault.rate_limited_reason);
  fault.retry_after = retry_after(body);
  return fault;
}

Answer inject(Emulator& emulator, const json& body) {
  const auto fault = fault_of(body);
  const auto count = body.value("count", 1);
  emulator.inject(fault, count);
  return ok({{"ok", true}, {"queued", count}});
}

Answer random_faults(Emulator& emulator, const json& body) {
  std::vector<std::pair<Fault, double>> faults;
  for (const auto& fault : body.value("faults", json::array())) {
    if (!fault.is_object()) throw std::invalid_argument("each of faults must be a JSON object");
    faults.emplace_back(fault_of(fault), fault.at("probability").get<double>());
  }
  emulator.set_random_faults(faults, body.value("seed", std::uint32_t{0}));
  return ok({{"ok", true}, {"faults", faults.size()}});
}

Answer answers(const Emulator& emulator) {
  const auto counts = emulator.answer_counts();
  json by_status = json::object();
  for (const auto& [status, count] : counts.by_status) by_status[std::to_string(status)] = count;
  return ok({{"by_status", by_status},
             {"too_many_requests", counts.too_many_requests},
             {"concurrent_meter_event_refusals", emulator.concurrent_meter_event_refusals()}});
}

json recorded(const RecordedRequest& request) {
  return {{"method", request.method},   {"path", request.path}, {"raw_target", request.raw_target},
          {"headers", request.headers}, {"body", request.body}, {"status", request.status}};
}

Answer requests(const Emulator& emulator) {
  json log = json::array();
  for (const auto& request : emulator.requests()) log.push_back(recorded(request));
  return ok({{"requests", log}});
}

std::vector<std::string> comma_separated(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

Answer meter_dimensions(const Emulator& emulator, const IncomingRequest& request) {
  const auto parsed = parse_form(request.query());
  if (const auto* error = std::get_if<ApiError>(&parsed)) return failure(400, error->message);
  const auto& query = std::get<json>(parsed);
  const auto event_name = text(query, "event_name");
  if (event_name.empty()) return failure(400, "event_name is required");
  const auto keys = comma_separated(text(query, "keys"));
  json totals = json::array();
  for (const auto& [group, value] :
       emulator.meter_totals_by_dimension(event_name, text(query, "customer"), keys)) {
    json dimensions = json::object();
    for (std::size_t i = 0; i < keys.size(); ++i) dimensions[keys[i]] = group.at(i + 1);
    totals.push_back({{"customer", group.at(0)}, {"dimensions", dimensions}, {"value", value}});
  }
  return ok({{"totals", totals}});
}

Answer add_restricted_key(Emulator& emulator, const json& body) {
  emulator.add_restricted_key(body.at("key").get<std::string>(),
                              body.value("permissions", std::set<std::string>{}));
  return ok();
}

std::string field(const json& body, const char* name) { return body.at(name).get<std::string>(); }

Answer deliver(Emulator& emulator, const json& body) {
  const auto event_id = field(body, "event_id");
  const auto kind = field(body, "kind");
  if (kind == "redelivery") {
    emulator.redeliver_event(event_id);
  } else if (kind == "forged") {
    emulator.deliver_forged(event_id);
  } else if (kind == "stale") {
    emulator.deliver_stale(event_id,
                           std::chrono::seconds(body.value("age_seconds", std::int64_t{600})));
  } else {
    throw std::invalid_argument("kind must be one of redelivery, forged, stale");
  }
  return ok();
}

Answer webhook_deliveries(const Emulator& emulator) {
  json deliveries = json::array();
  for (const auto& delivery : emulator.webhook_deliveries()) {
    deliveries.push_back({{"event_id", delivery.event_id},
                          {"type", delivery.type},
                          {"url", delivery.url},
                          {"kind", delivery.kind},
                          {"attempt", delivery.attempt},
                          {"status", delivery.status},
                          {"signature_header", delivery.signature_header},
                          {"body", delivery.body}});
  }
  return ok({{"deliveries", deliveries}});
}

// The controls of credits, meter error reports and webhooks; nothing when `what` is none of them.
std::optional<Answer> route_events(Emulator& emulator, const std::string& what,
                                   const std::string& method, const json& body) {
  if (what == "webhook_deliveries" && method == "GET") return webhook_deliveries(emulator);
  if (method != "POST") return std::nullopt;
  if (what == "credit_grants") {
    return ok({{"id", emulator.create_credit_grant(field(body, "customer"),
                                                   body.at("amount").get<std::int64_t>(),
                                                   body.value("currency", "usd"))}});
  }
  if (what == "consume_credits") {
    emulator.consume_credits(field(body, "customer"), body.at("amount").get<std::int64_t>());
    return ok();
  }
  if (what == "reject_meter_event") {
    emulator.reject_meter_event_async(field(body, "identifier"), field(body, "code"));
    return ok();
  }
  if (what == "meter_error_report") {
    return ok({{"event_id", emulator.trigger_meter_error_report(field(body, "event_name"))}});
  }
  if (what == "no_meter_found") return ok({{"event_id", emulator.trigger_no_meter_found()}});
  if (what == "webhook_endpoints") {
    emulator.add_webhook_endpoint(field(body, "url"), field(body, "secret"));
    return ok();
  }
  if (what == "deliver") return deliver(emulator, body);
  return std::nullopt;
}

Answer route(Emulator& emulator, const std::string& what, const std::string& method,
             const json& body) {
  if (auto answer = route_events(emulator, what, method, body)) return std::move(*answer);
  if (what == "totals" && method == "GET") return totals(emulator);
  if (what == "faults" && method == "POST") return inject(emulator, body);
  if (what == "faults" && method == "DELETE") {
    emulator.clear_faults();
    return ok();
  }
  if (what == "random_faults" && method == "POST") return random_faults(emulator, body);
  if (what == "rate_limit" && method == "POST") {
    emulator.set_rate_limit(body.value("rps", 0.0), retry_after(body));
    return ok();
  }
  if (what == "release_hangs" && method == "POST") {
    emulator.release_hangs();
    return ok();
  }
  if (what == "requests" && method == "GET") return requests(emulator);
  if (what == "answers" && method == "GET") return answers(emulator);
  if (what == "restricted_keys" && method == "POST") return add_restricted_key(emulator, body);
  return failure(404, "No control endpoint " + method + " " + kControlPrefix + what);
}

}  // namespace

Answer handle_control(Emulator& emulator, const IncomingRequest& request) {
  if (!is_loopback(request.remote_addr)) {
    return failure(403, "Control endpoints answer loopback clients only");
  }
  const auto body =
      request.body.empty() ? json::object() : json::parse(request.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return failure(400, "The body must be a JSON object");
  try {
    const auto what = request.path.substr(sizeof(kControlPrefix) - 1);
    if (what == "meter_dimensions" && request.method == "GET") {
      return meter_dimensions(emulator, request);
    }
    return route(emulator, what, request.method, body);
  } catch (const json::exception& error) {
    return failure(400, error.what());
  } catch (const std::invalid_argument& error) {
    return failure(400, error.what());
  }
}

}  // namespace stripe_emulator
