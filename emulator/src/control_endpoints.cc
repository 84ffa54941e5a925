#include "control_endpoints.h"

#include <optional>

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

Answer inject(Emulator& emulator, const json& body) {
  const auto kind = fault_kind(body.value("kind", "status"));
  if (!kind) return failure(400, "kind must be one of status, hang, close, close_after_commit");
  Fault fault;
  fault.kind = *kind;
  fault.status = body.value("status", 500);
  fault.path_prefix = body.value("path_prefix", "");
  fault.hang = std::chrono::milliseconds(body.value("hang_ms", 0));
  const auto count = body.value("count", 1);
  emulator.inject(fault, count);
  return ok({{"ok", true}, {"queued", count}});
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

Answer route(Emulator& emulator, const std::string& what, const std::string& method,
             const json& body) {
  if (what == "totals" && method == "GET") return totals(emulator);
  if (what == "faults" && method == "POST") return inject(emulator, body);
  if (what == "faults" && method == "DELETE") {
    emulator.clear_faults();
    return ok();
  }
  if (what == "rate_limit" && method == "POST") {
    emulator.set_rate_limit(body.value("rps", 0.0));
    return ok();
  }
  if (what == "release_hangs" && method == "POST") {
    emulator.release_hangs();
    return ok();
  }
  if (what == "requests" && method == "GET") return requests(emulator);
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
    return route(emulator, request.path.substr(sizeof(kControlPrefix) - 1), request.method, body);
  } catch (const json::exception& error) {
    return failure(400, error.what());
  }
}

}  // namespace stripe_emulator
