#include "v2_endpoints.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "rfc3339.h"

namespace stripe_emulator {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxEventsPerRequest = 100;
constexpr std::size_t kMaxNameLength = 100;  // event_name and identifier

ApiError invalid_body(const std::string& message) {
  return ApiError{400, "invalid_request_error", message, "", "invalid_fields", {}};
}

std::optional<json> parse_object(const std::string& body) {
  if (body.empty()) return json::object();
  auto parsed = json::parse(body, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) return std::nullopt;
  return parsed;
}

std::optional<ApiError> unknown_field(const json& object, const std::set<std::string>& known,
                                      const std::string& where) {
  for (const auto& [key, value] : object.items()) {
    if (known.count(key) == 0) return invalid_body("Unknown field " + where + key + ".");
  }
  return std::nullopt;
}

// `where` is the event's place in the body ("events[3]."), empty for a body that is the event.
// With `limit_lengths`, event_name and identifier may hold at most 100 characters.
Expected<NewMeterEvent> meter_event(const json& event, const std::string& where,
                                    bool limit_lengths) {
  if (!event.is_object())
    return invalid_body(where.substr(0, where.size() - 1) + " must be an object.");
  if (auto error =
          unknown_field(event, {"event_name", "identifier", "payload", "timestamp"}, where)) {
    return *error;
  }
  NewMeterEvent parsed;
  if (!event.contains("event_name") || !event["event_name"].is_string()) {
    return invalid_body(where + "event_name is required and must be a string.");
  }
  parsed.event_name = event["event_name"];
  if (event.contains("identifier")) {
    if (!event["identifier"].is_string())
      return invalid_body(where + "identifier must be a string.");
    parsed.identifier = event["identifier"];
  }
  if (limit_lengths) {
    if (parsed.event_name.empty() || parsed.event_name.size() > kMaxNameLength) {
      return invalid_body(where + "event_name must hold 1 to 100 characters.");
    }
    if (parsed.identifier.size() > kMaxNameLength) {
      return invalid_body(where + "identifier must hold at most 100 characters.");
    }
  }
  if (!event.contains("payload") || !event["payload"].is_object()) {
    return invalid_body(where + "payload is required and must be an object.");
  }
  for (const auto& [key, value] : event["payload"].items()) {
    if (!value.is_string()) return invalid_body(where + "payload." + key + " must be a string.");
    parsed.payload[key] = value;
  }
  if (event.contains("timestamp")) {
    const auto timestamp =
        event["timestamp"].is_string() ? from_rfc3339(event["timestamp"]) : std::nullopt;
    if (!timestamp) {
      return invalid_body(where + "timestamp must be an RFC 3339 date-time.");
    }
    parsed.timestamp = timestamp;
  }
  return parsed;
}

ApiError not_json() {
  return ApiError{400, "invalid_request_error", "The request body must be a JSON object.",
                  "",  "invalid_json",          {}};
}

Expected<std::vector<NewMeterEvent>> meter_events(const std::string& body) {
  const auto request = parse_object(body);
  if (!request) return not_json();
  if (auto error = unknown_field(*request, {"events"}, "")) return *error;
  if (!request->contains("events") || !(*request)["events"].is_array()) {
    return invalid_body("events is required and must be an array.");
  }
  const auto& events = (*request)["events"];
  if (events.size() > kMaxEventsPerRequest) {
    return invalid_body("events may hold at most 100 events; it holds " +
                        std::to_string(events.size()) + ".");
  }
  std::vector<NewMeterEvent> parsed;
  for (std::size_t i = 0; i < events.size(); ++i) {
    auto event = meter_event(events[i], "events[" + std::to_string(i) + "].", false);
    if (const auto* error = std::get_if<ApiError>(&event)) return *error;
    parsed.push_back(std::move(std::get<NewMeterEvent>(event)));
  }
  return parsed;
}

Answer create_session(const IncomingRequest& request, MeterSessions& sessions) {
  const auto body = parse_object(request.body);
  if (!body || !body->empty()) {
    return to_v2_answer(invalid_body("A meter event session takes an empty JSON body."));
  }
  const auto session = sessions.create();
  return ok({{"id", session.id},
             {"object", "v2.billing.meter_event_session"},
             {"authentication_token", session.authentication_token},
             {"created", to_rfc3339(session.created)},
             {"expires_at", to_rfc3339(session.expires_at)},
             {"livemode", false}});
}

Answer stream(const IncomingRequest& request, MeterStore& meters) {
  auto events = meter_events(request.body);
  if (const auto* error = std::get_if<ApiError>(&events)) return to_v2_answer(*error);
  for (auto& event : std::get<std::vector<NewMeterEvent>>(events)) {
    meters.record_v2(std::move(event));
  }
  return ok(json::object());
}

json v2_meter_event(const MeterEvent& event) {
  return {{"object", "v2.billing.meter_event"},
          {"created", to_rfc3339(event.created)},
          {"event_name", event.record.event_name},
          {"identifier", event.record.identifier},
          {"livemode", false},
          {"payload", event.record.payload},
          {"timestamp", to_rfc3339(event.record.timestamp)}};
}

Answer create_meter_event(const IncomingRequest& request, MeterStore& meters) {
  const auto body = parse_object(request.body);
  if (!body) return to_v2_answer(not_json());
  auto event = meter_event(*body, "", true);
  if (const auto* error = std::get_if<ApiError>(&event)) return to_v2_answer(*error);
  const auto recorded = meters.record_v2_event(std::move(std::get<NewMeterEvent>(event)));
  if (const auto* error = std::get_if<ApiError>(&recorded)) return to_v2_answer(*error);
  return ok(v2_meter_event(std::get<MeterEvent>(recorded)));
}

Answer retrieve_event(const std::string& id, const EventLog& events) {
  const auto event = events.find(id);
  if (!event || event->v2_event.is_null()) {
    return to_v2_answer(
        ApiError{404, "invalid_request_error", "No such event: '" + id + "'", "", "not_found", {}});
  }
  return ok(event->v2_event);
}

}  // namespace

Answer serve_v2(const IncomingRequest& request, MeterStore& meters, MeterSessions& sessions,
                const EventLog& events) {
  if (request.method == "POST" && request.path == "/v2/billing/meter_event_session") {
    return create_session(request, sessions);
  }
  if (request.method == "POST" && request.path == kMeterEventStreamPath) {
    return stream(request, meters);
  }
  if (request.method == "POST" && request.path == kMeterEventsPath) {
    return create_meter_event(request, meters);
  }
  const auto event_id =
      request.path.substr(std::min(request.path.size(), kCoreEventsPrefix.size()));
  if (request.method == "GET" && request.path.rfind(kCoreEventsPrefix, 0) == 0 &&
      !event_id.empty() && event_id.find('/') == std::string::npos) {
    return retrieve_event(event_id, events);
  }
  return to_v2_answer(errors::unrecognized_url(request.method, request.path));
}

}  // namespace stripe_emulator
