#include "outbox.h"

#include "pg_outbox.h"
#include "sqlite_outbox.h"
#include "usage_record.h"

namespace stripe_billing {

std::string carry_key(const NewEvent& event) {
  return event.customer_key + '\n' + event.dimension + '\n' +
         std::to_string(static_cast<int>(event.sink));
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
