#include "stripe_billing/reconciliation.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "outbox.h"
#include "stripe_billing/stripe_client.h"
#include "stripe_billing/version.h"

namespace stripe_billing {
namespace {

constexpr int kPageLimit = 100;
// Up to here a double holds every whole number exactly; a larger meter sum cannot be compared.
constexpr double kMaxExactDouble = 9'007'199'254'740'992.0;  // 2^53

std::int64_t floor_minute(std::int64_t t) { return t - ((t % 60) + 60) % 60; }
std::int64_t ceil_minute(std::int64_t t) { return -floor_minute(-t); }

using nlohmann::json;

// Stripe answered something its API does not document: what, and to which request.
Error wrong_answer(const std::string& request, const std::string& what) {
  return Error{ErrorCode::kInvalidResponse, "Stripe's answer to " + request + ": " + what,
               std::nullopt};
}

// A whole number from 0 to INT64_MAX, checked before any conversion (a float such as 1e300 would
// not fit). nullopt when the value is not one.
std::optional<std::int64_t> to_count(const json& value) {
  if (value.is_number_unsigned()) {
    const auto number = value.get<std::uint64_t>();
    if (number > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return std::nullopt;
    }
    return static_cast<std::int64_t>(number);
  }
  if (value.is_number_integer()) {
    const auto number = value.get<std::int64_t>();
    return number >= 0 ? std::optional<std::int64_t>(number) : std::nullopt;
  }
  if (value.is_number_float()) {
    const double number = value.get<double>();
    if (std::isfinite(number) && number >= 0 && number < 9.0e18 && number == std::floor(number)) {
      return static_cast<std::int64_t>(number);
    }
  }
  return std::nullopt;
}

// `object[name]` as a count. `when_absent` (nullopt: required) when it is absent or null.
Expected<std::int64_t> count_field(const json& object, const char* name,
                                   std::optional<std::int64_t> when_absent,
                                   const std::string& request, const std::string& where) {
  const auto it = object.find(name);
  const std::string field = where + "." + name;
  if (it == object.end() || it->is_null()) {
    if (when_absent) return *when_absent;
    return wrong_answer(request, field + " is missing");
  }
  const std::optional<std::int64_t> count = to_count(*it);
  if (!count) {
    return wrong_answer(request, field + " is not a whole number from 0 to " +
                                     std::to_string(std::numeric_limits<std::int64_t>::max()));
  }
  return *count;
}

// `object[name]` as a string. `when_absent` (nullopt: required) when it is absent or null.
Expected<std::string> string_field(const json& object, const char* name,
                                   std::optional<std::string> when_absent,
                                   const std::string& request, const std::string& where) {
  const auto it = object.find(name);
  const std::string field = where + "." + name;
  if (it == object.end() || it->is_null()) {
    if (when_absent) return std::move(*when_absent);
    return wrong_answer(request, field + " is missing");
  }
  if (!it->is_string()) return wrong_answer(request, field + " is not a string");
  return it->get<std::string>();
}

// Every object of a Stripe list, following has_more with starting_after. Each is an object; a
// list that is not one, or pages that never end, are kInvalidResponse.
Expected<std::vector<json>> list_all(const StripeClient& client, const std::string& path,
                                     FormFields query) {
  const std::string request = "GET " + path;
  std::vector<json> objects;
  std::set<std::string> pages_after;  // the starting_after ids asked for so far
  query.emplace_back("limit", std::to_string(kPageLimit));
  while (true) {
    auto page = client.get(path, query);
    if (!page) return std::move(page).error();
    const json& body = page->body;
    if (!body.is_object()) return wrong_answer(request, "the answer is not a JSON object");
    const auto data = body.find("data");
    if (data == body.end() || !data->is_array()) {
      return wrong_answer(request, "data is not a list");
    }
    for (const json& object : *data) {
      if (!object.is_object()) {
        return wrong_answer(request,
                            "data[" + std::to_string(objects.size()) + "] is not an object");
      }
      objects.push_back(object);
    }
    bool has_more = false;
    if (const auto more = body.find("has_more"); more != body.end() && !more->is_null()) {
      if (!more->is_boolean()) return wrong_answer(request, "has_more is not true or false");
      has_more = more->get<bool>();
    }
    if (!has_more || data->empty()) return objects;
    auto last_id = string_field(data->back(), "id", std::nullopt, request,
                                "data[" + std::to_string(objects.size() - 1) + "]");
    if (!last_id) return std::move(last_id).error();
    if (!pages_after.insert(*last_id).second) {
      return wrong_answer(request, "has_more is true, but the page after " + *last_id +
                                       " was asked for already: the list does not end");
    }
    query.erase(std::remove_if(query.begin(), query.end(),
                               [](const auto& field) { return field.first == "starting_after"; }),
                query.end());
    query.emplace_back("starting_after", std::move(*last_id));
  }
}

class Reconciler {
 public:
  Reconciler(const FinalizedConfig& config, const StripeClient& client, Outbox& outbox)
      : config_(config), client_(client), outbox_(outbox) {}

  Expected<ReconciliationReport> run(std::int64_t since, std::int64_t until) {
    ReconciliationReport report{since, until, {}};
    auto totals = outbox_.ledger_totals(since, until);
    if (!totals) return std::move(totals).error();
    std::map<std::pair<std::string, std::string>, ReconciliationRow> meters;  // (cus, meter)
    std::map<std::string, const LedgerTotal*> items;                          // si -> a total
    for (const LedgerTotal& total : *totals) {
      // What the configuration bills is compared: a meter row under a usage-records config
      // (or the reverse) has no meter (price) to ask Stripe about.
      const BilledDimension* dimension = config_.dimension(total.dimension);
      if (total.sink == Sink::kUsageRecord) {
        if (config_.uses_usage_records()) items.emplace(total.target, &total);
        continue;
      }
      if (dimension == nullptr || dimension->meter_event_name.empty()) continue;
      const std::string& meter = dimension->meter_event_name;
      ReconciliationRow& row = meters[{total.customer_id, meter}];
      row.dimension = dimension_of_target(meter, false);
      row.kind = "meter";
      row.customer_key = total.customer_key;
      row.customer_id = total.customer_id;
      row.target = meter;
      row.start = floor_minute(since);
      row.end = ceil_minute(until);
    }
    for (const auto& [item, total] : items) {
      if (auto added = add_usage_record_rows(item, *total, since, until, report); !added) {
        return std::move(added).error();
      }
    }
    for (auto& [key, row] : meters) {
      if (auto filled = fill_meter_row(row); !filled) return std::move(filled).error();
      report.rows.push_back(std::move(row));
    }
    return report;
  }

 private:
  // One row per billing period of the item that overlaps [since, until).
  Expected<void> add_usage_record_rows(const std::string& item, const LedgerTotal& any,
                                       std::int64_t since, std::int64_t until,
                                       ReconciliationReport& report) {
    const std::string path =
        "/v1/subscription_items/" + encode_path_segment(item) + "/usage_record_summaries";
    auto summaries = list_all(client_, path, {});
    if (!summaries) return std::move(summaries).error();
    const std::string request = "GET " + path;
    for (std::size_t i = 0; i < summaries->size(); ++i) {
      const json& summary = (*summaries)[i];
      const std::string where = "data[" + std::to_string(i) + "]";
      // Stripe documents the period's start and end as nullable: null counts as 0.
      json period = json::object();
      if (const auto it = summary.find("period"); it != summary.end() && !it->is_null()) {
        if (!it->is_object()) return wrong_answer(request, where + ".period is not an object");
        period = *it;
      }
      auto start = count_field(period, "start", 0, request, where + ".period");
      if (!start) return std::move(start).error();
      auto end = count_field(period, "end", 0, request, where + ".period");
      if (!end) return std::move(end).error();
      auto total_usage = count_field(summary, "total_usage", std::nullopt, request, where);
      if (!total_usage) return std::move(total_usage).error();
      if (*end <= since || *start >= until) continue;
      auto local = outbox_.ledger_totals(*start, *end);
      if (!local) return std::move(local).error();
      ReconciliationRow row{"usage_record",
                            any.customer_key,
                            any.customer_id,
                            item,
                            dimension_of_target(any.dimension, true),
                            *start,
                            *end,
                            0,
                            static_cast<double>(*total_usage)};
      for (const LedgerTotal& total : *local) {
        if (total.sink == Sink::kUsageRecord && total.target == item) {
          row.local += static_cast<double>(total.quantity);
        }
      }
      report.rows.push_back(std::move(row));
    }
    return {};
  }

  // The one dimension a meter (by event name) or a usage-record row's dimension bills; "" when
  // several dimensions share the meter.
  std::string dimension_of_target(const std::string& target, bool records) const {
    if (records) return target;
    std::string found;
    for (const BilledDimension& dimension : config_.dimensions()) {
      if (dimension.meter_event_name != target) continue;
      if (!found.empty()) return {};
      found = dimension.name;
    }
    return found;
  }

  Expected<void> fill_meter_row(ReconciliationRow& row) {
    auto meter_id = meter_id_of(row.target);
    if (!meter_id) return std::move(meter_id).error();
    auto local = outbox_.ledger_totals(row.start, row.end);
    if (!local) return std::move(local).error();
    for (const LedgerTotal& total : *local) {
      const BilledDimension* dimension = config_.dimension(total.dimension);
      if (total.sink == Sink::kMeterEvent && total.customer_id == row.customer_id && dimension &&
          dimension->meter_event_name == row.target) {
        row.local += static_cast<double>(total.quantity);
      }
    }
    const std::string path =
        "/v1/billing/meters/" + encode_path_segment(*meter_id) + "/event_summaries";
    auto summaries = list_all(client_, path,
                              {{"customer", row.customer_id},
                               {"start_time", std::to_string(row.start)},
                               {"end_time", std::to_string(row.end)}});
    if (!summaries) return std::move(summaries).error();
    for (std::size_t i = 0; i < summaries->size(); ++i) {
      auto value =
          aggregated_value((*summaries)[i], "GET " + path, "data[" + std::to_string(i) + "]");
      if (!value) return std::move(value).error();
      row.stripe += *value;
    }
    return {};
  }

  // A meter summary's sum: a number from 0 to 2^53, so that it can be compared exactly.
  static Expected<double> aggregated_value(const json& summary, const std::string& request,
                                           const std::string& where) {
    const auto it = summary.find("aggregated_value");
    const std::string field = where + ".aggregated_value";
    if (it == summary.end() || it->is_null()) return wrong_answer(request, field + " is missing");
    const double value = it->is_number() ? it->get<double>() : -1;
    if (!it->is_number() || !std::isfinite(value) || value < 0 || value > kMaxExactDouble) {
      return wrong_answer(request, field + " is not a number from 0 to 9007199254740992");
    }
    return value;
  }

  Expected<std::string> meter_id_of(const std::string& event_name) {
    if (meter_ids_.empty()) {
      const std::string path = "/v1/billing/meters";
      auto meters = list_all(client_, path, {});
      if (!meters) return std::move(meters).error();
      for (std::size_t i = 0; i < meters->size(); ++i) {
        const json& meter = (*meters)[i];
        const std::string where = "data[" + std::to_string(i) + "]";
        auto status = string_field(meter, "status", "active", "GET " + path, where);
        if (!status) return std::move(status).error();
        auto name = string_field(meter, "event_name", std::nullopt, "GET " + path, where);
        if (!name) return std::move(name).error();
        auto id = string_field(meter, "id", std::nullopt, "GET " + path, where);
        if (!id) return std::move(id).error();
        if (*status == "active") meter_ids_[std::move(*name)] = std::move(*id);
      }
    }
    const auto it = meter_ids_.find(event_name);
    if (it == meter_ids_.end()) {
      return Error{ErrorCode::kInvalidConfig,
                   "Stripe has no active meter with event_name " + event_name, std::nullopt};
    }
    return it->second;
  }

  const FinalizedConfig& config_;
  const StripeClient& client_;
  Outbox& outbox_;
  std::map<std::string, std::string> meter_ids_;
};

}  // namespace

bool ReconciliationReport::matches(double tolerance) const {
  return std::all_of(rows.begin(), rows.end(), [tolerance](const ReconciliationRow& row) {
    return std::abs(row.difference()) <= tolerance;
  });
}

Expected<ReconciliationReport> reconcile(const FinalizedConfig& config, std::int64_t since,
                                         std::int64_t until, ReconcileOptions options) {
  auto outbox = open_configured_outbox(config, StoreMode::kReadOnly, false);
  if (!outbox) return std::move(outbox).error();
  std::shared_ptr<HttpTransport> transport =
      options.transport ? std::move(options.transport)
                        : std::shared_ptr<HttpTransport>(
                              make_curl_transport({config.connect_timeout(), kUserAgent}));
  StripeClient client(*transport, StripeClientOptions{config.api_base(), config.api_key(),
                                                      config.api_version(), config.timeout()});
  try {
    return Reconciler(config, client, **outbox).run(since, until);
  } catch (const std::exception& e) {
    // Every answer is checked before it is read, so only the unforeseen (memory) lands here; it
    // stays behind the API boundary all the same.
    return Error{ErrorCode::kInternal, std::string("reconcile failed: ") + e.what(), std::nullopt};
  }
}

}  // namespace stripe_billing
