#include "outbox.h"

#include "pg_outbox.h"
#include "sqlite_outbox.h"
#include "usage_record.h"

namespace stripe_billing {

std::string carry_key(const NewEvent& event) {
  return event.customer_key + '\n' + event.dimension + '\n' +
         std::to_string(static_cast<int>(event.sink));
}

void OutboxCounts::set(std::int64_t state, std::int64_t rows) noexcept {
  switch (static_cast<EventState>(state)) {
    case EventState::kPending:
      pending = rows;
      break;
    case EventState::kBatched:
      batched = rows;
      break;
    case EventState::kDelivered:
      delivered = rows;
      break;
    case EventState::kParked:
      parked = rows;
      break;
    case EventState::kDead:
      dead = rows;
      break;
  }
}

Expected<bool> Outbox::batch_delivered(const Batch& batch, const std::string& request_id,
                                       std::int64_t now_ms) {
  return finish_batch(batch, kBatchDelivered, EventState::kDelivered, "", request_id, now_ms,
                      "cannot record a delivery");
}

Expected<bool> Outbox::batch_dead(const Batch& batch, const std::string& reason,
                                  const std::string& request_id, std::int64_t now_ms) {
  return finish_batch(batch, kBatchDead, EventState::kDead, reason, request_id, now_ms,
                      "cannot record a dead batch");
}

Expected<InsertResult> Outbox::insert(const std::vector<NewEvent>& events) {
  return insert(events, carry_cost_row);
}

Expected<std::unique_ptr<Outbox>> open_configured_outbox(const FinalizedConfig& config,
                                                         StoreMode mode, bool full_sync) {
  if (config.uses_postgres()) {
    return PgOutbox::open(config.outbox_url(), config.outbox_schema(), mode, config.fleet_lease());
  }
  return SqliteOutbox::open_file(config.outbox_path(), full_sync, mode);
}

}  // namespace stripe_billing
