#include "stripe_billing/reconciliation.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "outbox.h"
#include "stripe_billing/stripe_client.h"
#include "stripe_billing/version.h"

namespace stripe_billing {
namespace {

constexpr int kPageLimit = 100;

std::int64_t floor_minute(std::int64_t t) { return t - ((t % 60) + 60) % 60; }
std::int64_t ceil_minute(std::int64_t t) { return -floor_minute(-t); }

// Every object of a Stripe list, following has_more with starting_after.
Expected<std::vector<nlohmann::json>> list_all(const StripeClient& client, const std::string& path,
                                               FormFields query) {
  std::vector<nlohmann::json> objects;
  query.emplace_back("limit", std::to_string(kPageLimit));
  while (true) {
    auto page = client.get(path, query);
    if (!page) return std::move(page).error();
    const auto& data = page->body.value("data", nlohmann::json::array());
    for (const auto& object : data) objects.push_back(object);
    if (!page->body.value("has_more", false) || data.empty() || !data.back().contains("id")) {
      return objects;
    }
    query.erase(std::remove_if(query.begin(), query.end(),
                               [](const auto& field) { return field.first == "starting_after"; }),
                query.end());
    query.emplace_back("starting_after", data.back()["id"].get<std::string>());
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
    auto summaries = list_all(
        client_, "/v1/subscription_items/" + encode_path_segment(item) + "/usage_record_summaries",
        {});
    if (!summaries) return std::move(summaries).error();
    for (const auto& summary : *summaries) {
      const auto& period = summary.value("period", nlohmann::json::object());
      const std::int64_t start = period.value("start", std::int64_t{0});
      const std::int64_t end = period.value("end", std::int64_t{0});
      if (end <= since || start >= until) continue;
      auto local = outbox_.ledger_totals(start, end);
      if (!local) return std::move(local).error();
      ReconciliationRow row{"usage_record", any.customer_key, any.customer_id, item, start, end,
                            0, static_cast<double>(summary.value("total_usage", std::int64_t{0}))};
      for (const LedgerTotal& total : *local) {
        if (total.sink == Sink::kUsageRecord && total.target == item) {
          row.local += static_cast<double>(total.quantity);
        }
      }
      report.rows.push_back(std::move(row));
    }
    return {};
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
    auto summaries = list_all(client_,
                              "/v1/billing/meters/" + encode_path_segment(*meter_id) +
                                  "/event_summaries",
                              {{"customer", row.customer_id},
                               {"start_time", std::to_string(row.start)},
                               {"end_time", std::to_string(row.end)}});
    if (!summaries) return std::move(summaries).error();
    for (const auto& summary : *summaries) {
      const auto value = summary.find("aggregated_value");
      if (value != summary.end() && value->is_number()) row.stripe += value->get<double>();
    }
    return {};
  }

  Expected<std::string> meter_id_of(const std::string& event_name) {
    if (meter_ids_.empty()) {
      auto meters = list_all(client_, "/v1/billing/meters", {});
      if (!meters) return std::move(meters).error();
      for (const auto& meter : *meters) {
        if (meter.value("status", "active") == "active") {
          meter_ids_[meter.value("event_name", "")] = meter.value("id", "");
        }
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
  auto outbox = Outbox::open_for_reading(config.outbox_path());
  if (!outbox) return std::move(outbox).error();
  std::shared_ptr<HttpTransport> transport =
      options.transport ? std::move(options.transport)
                        : std::shared_ptr<HttpTransport>(
                              make_curl_transport({config.connect_timeout(), kUserAgent}));
  StripeClient client(*transport, StripeClientOptions{config.api_base(), config.api_key(),
                                                      config.api_version(), config.timeout()});
  return Reconciler(config, client, **outbox).run(since, until);
}

}  // namespace stripe_billing
