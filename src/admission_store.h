// Where admission's grants and the webhook events live: shared by the fleet (PostgreSQL, the
// outbox's database and schema) or kept in the SQLite outbox file for one process, so that a
// restart forgets neither. Each implementation has its own connection: admission never waits
// behind the delivery engine's writes.
//
// The model (docs/admission.md): a customer's budget for a period is handed out in grants, one
// row per owner (a running process). An owner admits calls from its grant, in memory; it reports
// what it has used (settled calls) and gives back what it does not need. The grants of the fleet
// never sum to more than the budget: take() hands out at most what is left, in one transaction.
// An owner whose heartbeat stopped (a crashed or stopped process) keeps counting its whole grant
// until `dead_after` has passed (its calls may still be running, and their holds are not known
// to anyone else); after that only what it used counts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "stripe_billing/config.h"
#include "stripe_billing/error.h"

namespace stripe_billing {

struct GrantTaken {
  std::int64_t granted = 0;      // added to this owner's grant now
  std::int64_t fleet_total = 0;  // what every owner holds as granted (or used, if dead), after
  std::int64_t fleet_used = 0;   // what every owner reported as used
  // Nothing is left to grant: the fleet's grants reach the budget.
  bool exhausted = false;
  // This owner holds the budget's last piece: only it may admit one call past its grant (the one
  // capped reservation of the bound).
  bool crossing = false;
};

// One owner's row for a customer and period, as it reports it.
struct GrantReport {
  std::string customer;
  std::string period;
  std::int64_t granted = 0;  // may be lower than before (given back), never below used + held
  std::int64_t used = 0;     // settled usage of this owner in the period
};

struct StoredWebhook {
  std::string id;
  std::string type;
  std::string payload;  // the event as Stripe sent it (verified)
};

class AdmissionStore {
 public:
  virtual ~AdmissionStore() = default;

  // Takes up to `want` of what is left of `budget` for (customer, period). `force`: takes `want`
  // whatever is left (overage: usage that exceeded its hold, recorded). The owner's heartbeat is
  // renewed.
  virtual Expected<GrantTaken> take(const std::string& customer, const std::string& period,
                                    std::int64_t want, std::int64_t budget, bool force,
                                    std::int64_t now_ms) = 0;
  // Writes this owner's rows as given and renews its heartbeat.
  virtual Expected<void> report(const std::vector<GrantReport>& rows, std::int64_t now_ms) = 0;
  // The heartbeat alone.
  virtual Expected<void> heartbeat(std::int64_t now_ms) = 0;

  // Webhooks: stores a verified event. false: its id is stored already (a redelivery).
  virtual Expected<bool> remember_webhook(const StoredWebhook& event, std::int64_t now_ms) = 0;
  virtual Expected<void> webhook_processed(const std::string& id, std::int64_t now_ms) = 0;
  // Events stored but not processed (a restart between the two), oldest first.
  virtual Expected<std::vector<StoredWebhook>> unprocessed_webhooks(int limit) = 0;

  const std::string& owner() const noexcept { return owner_; }

 protected:
  AdmissionStore(std::string owner, std::int64_t dead_after_ms)
      : owner_(std::move(owner)), dead_after_ms_(dead_after_ms) {}
  const std::string owner_;
  const std::int64_t dead_after_ms_;
};

// A name for this process as an owner: host, pid and a random part (never reused by a restart).
std::string admission_owner_name();

// The store for the configuration: PostgreSQL when STRIPE_OUTBOX_URL is set, else the SQLite
// outbox file, else (":memory:") memory. `dead_after_ms`: see above (STRIPE_HOLD_TTL_S).
Expected<std::unique_ptr<AdmissionStore>> open_admission_store(const FinalizedConfig& config,
                                                               std::string owner,
                                                               std::int64_t dead_after_ms);
std::unique_ptr<AdmissionStore> open_memory_admission_store(std::string owner,
                                                            std::int64_t dead_after_ms);
Expected<std::unique_ptr<AdmissionStore>> open_sqlite_admission_store(const std::string& path,
                                                                      std::string owner,
                                                                      std::int64_t dead_after_ms);
Expected<std::unique_ptr<AdmissionStore>> open_pg_admission_store(const FinalizedConfig& config,
                                                                  std::string owner,
                                                                  std::int64_t dead_after_ms);

}  // namespace stripe_billing
