#include "planner.h"

#include <algorithm>
#include <map>

#include "usage_record.h"

namespace stripe_billing {
namespace {

// One planning pass's rows of one (sink, dimension, customer key).
struct Group {
  Sink sink = Sink::kUsageRecord;
  const BilledDimension* dimension = nullptr;
  std::string customer_key;
  std::vector<StoredEvent> rows;
};

std::vector<Group> group_rows(std::vector<StoredEvent> rows, const FinalizedConfig& config) {
  std::vector<Group> groups;
  std::map<std::string, std::size_t> index;
  for (StoredEvent& row : rows) {
    const std::string key =
        std::to_string(static_cast<int>(row.sink)) + '\n' + row.dimension + '\n' + row.customer_key;
    auto [it, inserted] = index.try_emplace(key, groups.size());
    if (inserted) {
      groups.push_back(Group{row.sink, config.dimension(row.dimension), row.customer_key, {}});
    }
    groups[it->second].rows.push_back(std::move(row));
  }
  return groups;
}

std::vector<std::int64_t> ids_of(const std::vector<StoredEvent>& rows) {
  std::vector<std::int64_t> ids;
  ids.reserve(rows.size());
  for (const auto& row : rows) ids.push_back(row.id);
  return ids;
}

MeterEvent meter_event(const StoredEvent& row, const BilledDimension& dimension,
                       const std::string& customer_id, std::string model) {
  return MeterEvent{dimension.meter_event_name,
                    meter_event_identifier(row.call_id, row.dimension),
                    customer_id,
                    row.quantity,
                    row.event_time,
                    dimension.token_type,
                    std::move(model)};
}

// The model a meter event carries: as stored, or its slug (nullopt: no slug names it).
std::optional<std::string> sent_model(const StoredEvent& row, const FinalizedConfig& config,
                                      const ModelSlugs* slugs) {
  if (!config.model_slugs()) return row.model;
  if (slugs == nullptr) return std::nullopt;
  // Stored as `provider/model` when the host named the provider: the mapping may name either.
  if (auto mapped = slugs->mapped(row.model)) return mapped;
  if (const std::size_t slash = row.model.find('/'); slash != std::string::npos) {
    if (auto mapped = slugs->mapped(std::string_view(row.model).substr(slash + 1))) return mapped;
  }
  return slugs->slug(row.model, "");
}

class Planner {
 public:
  explicit Planner(const PlanInput& input) : in_(input) {}

  Plan run(std::vector<StoredEvent> rows) {
    for (Group& group : group_rows(std::move(rows), in_.config)) plan_group(group);
    plan_stream();
    return std::move(out_);
  }

 private:
  // A row's window starts when it was accepted. A row accepted "later" than now (the wall clock
  // has gone back since) has waited out its window already, as far as anyone can tell.
  std::int64_t window_start(const StoredEvent& row) const {
    const std::int64_t window_ms = in_.config.aggregation_window().count();
    return row.accepted_at_ms > in_.now_ms ? in_.now_ms - window_ms : row.accepted_at_ms;
  }

  void wake_at(std::int64_t at) {
    out_.next_wake_ms = out_.next_wake_ms == 0 ? at : std::min(out_.next_wake_ms, at);
  }

  void park(const Group& group, Reason reason, std::optional<std::int64_t> retry_at,
            std::vector<std::int64_t> ids) {
    out_.notices.push_back({reason, group.sink, group.customer_key, ids.size()});
    out_.writes.parks.push_back(RowChange{std::move(ids), to_string(reason), retry_at});
  }

  void plan_group(Group& group) {
    if (group.dimension == nullptr) {
      // Stored under a dimension this configuration does not bill (STRIPE_QUANTITY changed):
      // kept until a start whose configuration bills it again.
      return park(group, Reason::kDimensionNotConfigured, std::nullopt, ids_of(group.rows));
    }
    const bool records = group.sink == Sink::kUsageRecord;
    if (records ? group.dimension->price_id.empty() : group.dimension->meter_event_name.empty()) {
      // Stored under a mode that sent this sink (dual, say), and the mode changed since: kept
      // until a start in a mode that sends them.
      return park(group, records ? Reason::kUsageRecordsNotInMode : Reason::kMetersNotInMode,
                  std::nullopt, ids_of(group.rows));
    }
    const std::string price = records ? group.dimension->price_id : std::string();
    const Lookup lookup = in_.lookup(group.customer_key, price);
    switch (lookup.status) {
      case Lookup::Status::kWaiting:
        out_.lookups.push_back({group.customer_key, price, false});
        if (lookup.retry_at_ms > 0) wake_at(lookup.retry_at_ms);
        return;
      case Lookup::Status::kNotFound: {
        const auto retry_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(in_.config.park_retry()).count();
        const Reason reason = lookup.not_found == ErrorCode::kSubscriptionItemNotFound
                                  ? Reason::kSubscriptionItemNotFound
                                  : Reason::kCustomerNotFound;
        return park(group, reason, in_.now_ms + retry_ms, ids_of(group.rows));
      }
      case Lookup::Status::kInvalidKey:
        out_.notices.push_back(
            {Reason::kInvalidCustomerKey, group.sink, group.customer_key, group.rows.size()});
        out_.writes.kills.push_back(
            RowChange{ids_of(group.rows), to_string(Reason::kInvalidCustomerKey), std::nullopt});
        return;
      case Lookup::Status::kFound:
        break;
    }
    if (records) return plan_usage_records(group, lookup);
    plan_meter_events(group, lookup.target);
  }

  // The cached item's period ended before some row happened, and the cache is older than that
  // row: a fresh lookup finds the new period. (Fresher than the row and still ended: Stripe has
  // no newer period; the rows go, and Stripe's answer decides.)
  static bool period_stale(const Group& group, const Lookup& lookup) {
    if (lookup.target.period_end <= 0) return false;
    return std::any_of(group.rows.begin(), group.rows.end(), [&](const StoredEvent& row) {
      return row.event_time >= lookup.target.period_end && lookup.fetched_ms < row.accepted_at_ms;
    });
  }

  void plan_usage_records(Group& group, const Lookup& lookup) {
    if (period_stale(group, lookup)) {
      out_.lookups.push_back({group.customer_key, group.dimension->price_id, true});
      return;
    }
    const BillingTarget& target = lookup.target;
    const std::string& item = target.subscription_item_id;
    const std::int64_t window_ms = in_.config.aggregation_window().count();
    if (window_ms > 0) {
      if (in_.busy_items.count(item) != 0 || planned_items_.count(item) != 0) return;
      const std::int64_t ready_at = window_start(group.rows.front()) + window_ms;
      if (!in_.force && ready_at > in_.now_ms) return wake_at(ready_at);
      planned_items_.insert(item);
    }
    // Rows before the item's current period stay apart; no window: one record per row.
    std::vector<StoredEvent> earlier, current;
    for (StoredEvent& row : group.rows) {
      (row.event_time < target.period_start ? earlier : current).push_back(std::move(row));
    }
    for (std::vector<StoredEvent>* part : {&earlier, &current}) {
      NewBatch* open = nullptr;
      for (const StoredEvent& row : *part) {
        if (open == nullptr || window_ms == 0 ||
            open->batch.quantity > kMaxBatchQuantity - row.quantity) {
          out_.writes.batches.push_back(usage_record_batch(group, target));
          open = &out_.writes.batches.back();
        }
        open->batch.quantity += row.quantity;
        open->batch.timestamp = std::max(open->batch.timestamp, row.event_time);
        open->members.push_back({row.id, target.customer_id});
        add_model(open->batch, row);
      }
    }
  }

  static NewBatch usage_record_batch(const Group& group, const BillingTarget& target) {
    NewBatch planned;
    planned.batch.kind = BatchKind::kUsageRecord;
    planned.batch.target = target.subscription_item_id;
    planned.batch.customer_id = target.customer_id;
    planned.batch.customer_key = group.customer_key;
    return planned;
  }

  static void add_model(Batch& batch, const StoredEvent& row) {
    for (auto& [model, quantity] : batch.quantity_by_model) {
      if (model == row.model) {
        quantity += row.quantity;
        return;
      }
    }
    batch.quantity_by_model.emplace_back(row.model, row.quantity);
  }

  void plan_meter_events(Group& group, const BillingTarget& target) {
    const std::int64_t oldest_allowed = in_.now_ms / 1000 - kMeterEventMaxAgeSeconds;
    std::vector<std::int64_t> too_old;
    std::vector<std::int64_t> unmapped;
    for (StoredEvent& row : group.rows) {
      if (row.event_time < oldest_allowed) {
        // Stripe refuses meter events older than 35 days: kept for an operator, never sent.
        too_old.push_back(row.id);
        continue;
      }
      std::optional<std::string> model = sent_model(row, in_.config, in_.slugs);
      if (!model) {
        // Never sent under a wrong name: kept until a mapping names the model.
        unmapped.push_back(row.id);
        continue;
      }
      if (in_.config.billing_mode() == BillingMode::kMeterEventStream) {
        MeterEvent event =
            meter_event(row, *group.dimension, target.customer_id, std::move(*model));
        stream_.push_back({std::move(row), std::move(event)});
        continue;
      }
      NewBatch planned;
      planned.batch.kind = BatchKind::kMeterEvent;
      planned.batch.target = group.dimension->meter_event_name + " " + target.customer_id;
      planned.batch.customer_id = target.customer_id;
      planned.batch.customer_key = group.customer_key;
      planned.batch.quantity = row.quantity;
      planned.batch.timestamp = row.event_time;
      planned.batch.meter_events.push_back(
          meter_event(row, *group.dimension, target.customer_id, std::move(*model)));
      add_model(planned.batch, row);
      planned.members.push_back({row.id, target.customer_id});
      out_.writes.batches.push_back(std::move(planned));
    }
    if (!too_old.empty()) park(group, Reason::kMeterTimestampTooOld, std::nullopt, too_old);
    if (!unmapped.empty()) {
      const auto retry_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(in_.config.park_retry()).count();
      park(group, Reason::kUnmappedModel, in_.now_ms + retry_ms, unmapped);
    }
  }

  void plan_stream() {
    if (stream_.empty()) return;
    const std::int64_t window_ms = in_.config.aggregation_window().count();
    std::int64_t oldest = window_start(stream_.front().row);
    for (const StreamRow& entry : stream_) oldest = std::min(oldest, window_start(entry.row));
    const bool window_over = in_.force || oldest + window_ms <= in_.now_ms;
    for (std::size_t first = 0; first < stream_.size(); first += kMaxStreamEvents) {
      const std::size_t last = std::min(stream_.size(), first + kMaxStreamEvents);
      if (last - first < kMaxStreamEvents && !window_over) {
        wake_at(oldest + window_ms);  // a partial batch waits for more rows, or for the window
        return;
      }
      NewBatch planned;
      planned.batch.kind = BatchKind::kMeterStream;
      for (std::size_t i = first; i < last; ++i) {
        StreamRow& entry = stream_[i];
        planned.batch.quantity += entry.row.quantity;
        planned.batch.timestamp = std::max(planned.batch.timestamp, entry.row.event_time);
        add_model(planned.batch, entry.row);
        planned.members.push_back({entry.row.id, entry.event.customer_id});
        planned.batch.meter_events.push_back(std::move(entry.event));
      }
      out_.writes.batches.push_back(std::move(planned));
    }
  }

  struct StreamRow {
    StoredEvent row;
    MeterEvent event;
  };

  const PlanInput& in_;
  Plan out_;
  std::set<std::string> planned_items_;
  std::vector<StreamRow> stream_;
};

}  // namespace

Plan plan(std::vector<StoredEvent> rows, const PlanInput& input) {
  return Planner(input).run(std::move(rows));
}

Expected<std::vector<MeterEvent>> meter_events_for(const std::vector<StoredEvent>& rows,
                                                   const FinalizedConfig& config,
                                                   const ModelSlugs* slugs) {
  std::vector<MeterEvent> events;
  events.reserve(rows.size());
  for (const StoredEvent& row : rows) {
    const BilledDimension* dimension = config.dimension(row.dimension);
    if (dimension == nullptr || dimension->meter_event_name.empty()) {
      return Error{ErrorCode::kInvalidConfig,
                   "dimension " + row.dimension + " has no meter in this configuration",
                   std::nullopt};
    }
    std::optional<std::string> model = sent_model(row, config, slugs);
    if (!model) {
      return Error{ErrorCode::kInvalidConfig,
                   "model " + log_safe(row.model) + " maps to no provider/model slug now",
                   std::nullopt};
    }
    events.push_back(meter_event(row, *dimension, row.customer_id, std::move(*model)));
  }
  return events;
}

}  // namespace stripe_billing
