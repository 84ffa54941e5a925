#include "meter_endpoints.h"

#include <vector>

#include "form_values.h"
#include "pagination.h"
#include "resources.h"

namespace stripe_emulator {
namespace {

using nlohmann::json;

constexpr std::int64_t kMinute = 60;
constexpr std::int64_t kHour = 3600;
constexpr std::int64_t kDay = 86'400;

Answer create_meter(MeterStore& meters, const ApiCall& call) {
  Meter meter;
  meter.display_name = text(call.params, "display_name");
  meter.event_name = text(call.params, "event_name");
  meter.formula = text(call.params["default_aggregation"], "formula");
  if (call.params.contains("customer_mapping")) {
    meter.customer_key = text(call.params["customer_mapping"], "event_payload_key");
  }
  if (call.params.contains("value_settings")) {
    meter.value_key = text(call.params["value_settings"], "event_payload_key");
  }
  for (const auto& key : array(call.params, "dimension_payload_keys")) {
    if (key.is_string()) meter.dimension_keys.push_back(key);
  }
  return answer(meters.add_meter(std::move(meter)));
}

Answer list_meters(const MeterStore& meters, const ApiCall& call) {
  const auto status = text(call.params, "status");
  std::vector<json> listed;
  for (const auto& meter : meters.meters()) {
    if (status.empty() || meter.status == status) listed.emplace_back(meter);
  }
  return ok(page(listed, call.params, "/v1/billing/meters"));
}

// The meter named by the path's {id}.
Expected<Meter> meter_in_path(const MeterStore& meters, const ApiCall& call) {
  const auto& id = call.path_params.at("id");
  auto meter = meters.meter(id);
  if (!meter) return errors::resource_missing("billing.meter", id, "id");
  return *meter;
}

Answer retrieve_meter(const MeterStore& meters, const ApiCall& call) {
  return answer(meter_in_path(meters, call));
}

Answer record_meter_event(MeterStore& meters, const ApiCall& call) {
  return answer(meters.record_v1(
      NewMeterEvent{text(call.params, "event_name"), text(call.params, "identifier"),
                    string_hash(call.params, "payload"), integer(call.params, "timestamp")}));
}

Answer cancel_meter_event(MeterStore& meters, const ApiCall& call) {
  const auto cancel = call.params.value("cancel", json::object());
  if (!cancel.contains("identifier")) {
    return to_answer(errors::parameter_missing("cancel[identifier]"));
  }
  const auto event_name = text(call.params, "event_name");
  const auto cancelled = meters.cancel(event_name, text(cancel, "identifier"));
  if (const auto* error = std::get_if<ApiError>(&cancelled)) return to_answer(*error);
  return ok(meter_event_adjustment(std::get<MeterEvent>(cancelled)));
}

std::optional<ApiError> misaligned(const char* param, std::int64_t time, std::int64_t unit,
                                   const char* boundary) {
  if (time % unit == 0) return std::nullopt;
  return errors::invalid_request(
      std::string("The ") + param + " must be aligned with " + boundary + " boundaries.", param);
}

std::optional<ApiError> summary_range_error(std::int64_t start_time, std::int64_t end_time,
                                            const std::string& window) {
  const auto unit = window == "day" ? kDay : window == "hour" ? kHour : kMinute;
  const auto* boundary = window == "day" ? "UTC day" : window == "hour" ? "hour" : "minute";
  if (auto error = misaligned("start_time", start_time, unit, boundary)) return error;
  if (auto error = misaligned("end_time", end_time, unit, boundary)) return error;
  if (end_time <= start_time) {
    return errors::invalid_request("The end_time must be after the start_time.", "end_time");
  }
  return std::nullopt;
}

Answer event_summaries(const MeterStore& meters, const Store& store, const ApiCall& call) {
  const auto found = meter_in_path(meters, call);
  if (const auto* error = std::get_if<ApiError>(&found)) return to_answer(*error);
  const auto& meter = std::get<Meter>(found);
  const auto customer = text(call.params, "customer");
  if (!store.customer(customer)) {
    auto error = errors::resource_missing("customer", customer, "customer");
    error.status = 400;
    return to_answer(error);
  }
  const auto start_time = *integer(call.params, "start_time");
  const auto end_time = *integer(call.params, "end_time");
  const auto window = text(call.params, "value_grouping_window");
  if (auto error = summary_range_error(start_time, end_time, window)) return to_answer(*error);
  const auto window_seconds = window == "day"    ? std::optional<std::int64_t>(kDay)
                              : window == "hour" ? std::optional<std::int64_t>(kHour)
                                                 : std::nullopt;
  std::vector<json> summaries;
  for (const auto& summary :
       meters.summaries(meter, customer, start_time, end_time, window_seconds)) {
    summaries.push_back(meter_event_summary(meter, customer, summary));
  }
  return ok(page(summaries, call.params, "/v1/billing/meters/" + meter.id + "/event_summaries"));
}

}  // namespace

std::map<std::string, Endpoint> make_meter_endpoints(MeterStore& meters, const Store& store) {
  return {
      {"GetBillingMeters", bound(meters, list_meters)},
      {"GetBillingMetersId", bound(meters, retrieve_meter)},
      {"GetBillingMetersIdEventSummaries",
       [&meters, &store](const ApiCall& call) { return event_summaries(meters, store, call); }},
      {"PostBillingMeterEventAdjustments", bound(meters, cancel_meter_event)},
      {"PostBillingMeterEvents", bound(meters, record_meter_event)},
      {"PostBillingMeters", bound(meters, create_meter)},
  };
}

}  // namespace stripe_emulator
