// AdmissionStore in the SQLite outbox file: its own connection (WAL lets it write between the
// engine's transactions), its own tables beside the outbox's.
#include <sqlite3.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "admission_store.h"
#include "admission_take.h"
#include "sqlite_statement.h"

namespace stripe_billing {
namespace {

constexpr const char* kAdmissionSchema = R"sql(
CREATE TABLE IF NOT EXISTS admission_owners(
  owner TEXT PRIMARY KEY,
  heartbeat_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS admission_grants(
  customer TEXT NOT NULL,
  period TEXT NOT NULL,
  owner TEXT NOT NULL,
  granted INTEGER NOT NULL DEFAULT 0,
  used INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(customer, period, owner));
CREATE TABLE IF NOT EXISTS admission_budgets(
  customer TEXT NOT NULL,
  period TEXT NOT NULL,
  budget INTEGER NOT NULL,
  crossing_owner TEXT,
  PRIMARY KEY(customer, period));
CREATE TABLE IF NOT EXISTS webhook_events(
  id TEXT PRIMARY KEY,
  type TEXT NOT NULL,
  payload TEXT NOT NULL,
  received_ms INTEGER NOT NULL,
  processed_ms INTEGER);
CREATE INDEX IF NOT EXISTS webhook_events_unprocessed ON webhook_events(received_ms)
  WHERE processed_ms IS NULL;
)sql";

int admission_busy_wait(void*, int attempt) {
  if (attempt >= 500) return 0;  // ~5 s
  std::this_thread::sleep_for(std::chrono::milliseconds(attempt < 20 ? 1 : 10));
  return 1;
}

class SqliteAdmissionStore final : public AdmissionStore {
 public:
  SqliteAdmissionStore(sqlite3* db, std::string owner, std::int64_t dead_after_ms)
      : AdmissionStore(std::move(owner), dead_after_ms), db_(db) {}
  ~SqliteAdmissionStore() override { sqlite3_close(db_); }

  Expected<GrantTaken> take(const std::string& customer, const std::string& period,
                            std::int64_t want, std::int64_t budget, bool force,
                            std::int64_t now_ms) override {
    std::lock_guard lock(mutex_);
    Transaction transaction(db_);
    if (!transaction.began()) return storage_error(db_, "cannot take an admission grant");
    if (!beat(now_ms)) return storage_error(db_, "cannot take an admission grant");
    const std::int64_t alive_since = now_ms - dead_after_ms_;
    TakeInputs in;
    in.want = want;
    in.budget = budget;
    in.force = force;
    Statement sums(db_,
                   "SELECT COALESCE(SUM(CASE WHEN g.owner=?3 OR o.heartbeat_ms>=?4 THEN g.granted "
                   "ELSE g.used END),0), COALESCE(SUM(g.used),0) FROM admission_grants g LEFT JOIN "
                   "admission_owners o ON o.owner=g.owner WHERE g.customer=?1 AND g.period=?2");
    if (!sums.ok()) return storage_error(db_, "cannot take an admission grant");
    sums.bind(1, customer).bind(2, period).bind(3, owner_).bind(4, alive_since);
    if (sums.step() != SQLITE_ROW) return storage_error(db_, "cannot take an admission grant");
    in.fleet_total = sums.integer(0);
    in.fleet_used = sums.integer(1);
    Statement crossing(
        db_,
        "SELECT b.crossing_owner, COALESCE(o.heartbeat_ms, 0) FROM admission_budgets "
        "b LEFT JOIN admission_owners o ON o.owner=b.crossing_owner "
        "WHERE b.customer=? AND b.period=?");
    if (!crossing.ok()) return storage_error(db_, "cannot take an admission grant");
    crossing.bind(1, customer).bind(2, period);
    if (crossing.step() == SQLITE_ROW && !crossing.null(0)) {
      in.mine_crossing = crossing.text(0) == owner_;
      in.crossing_free = !in.mine_crossing && crossing.integer(1) < alive_since;
    }
    const TakeOutcome out = decide_take(in);
    Statement grant(
        db_,
        "INSERT INTO admission_grants(customer, period, owner, granted) VALUES(?,?,?,?) "
        "ON CONFLICT(customer, period, owner) DO UPDATE SET granted=granted+excluded.granted");
    Statement budget_row(
        db_,
        "INSERT INTO admission_budgets(customer, period, budget, crossing_owner) "
        "VALUES(?1,?2,?3,CASE WHEN ?4 THEN ?5 END) ON CONFLICT(customer, period) "
        "DO UPDATE SET budget=excluded.budget, crossing_owner=CASE WHEN ?4 THEN ?5 "
        "ELSE crossing_owner END");
    if (!grant.ok() || !budget_row.ok() ||
        !grant.bind(1, customer).bind(2, period).bind(3, owner_).bind(4, out.taken.granted).run() ||
        !budget_row.bind(1, customer)
             .bind(2, period)
             .bind(3, budget)
             .bind(4, out.set_crossing ? 1 : 0)
             .bind(5, owner_)
             .run() ||
        !transaction.commit()) {
      return storage_error(db_, "cannot take an admission grant");
    }
    return out.taken;
  }

  Expected<void> report(const std::vector<GrantReport>& rows, std::int64_t now_ms) override {
    std::lock_guard lock(mutex_);
    Transaction transaction(db_);
    Statement write(db_,
                    "INSERT INTO admission_grants(customer, period, owner, granted, used) "
                    "VALUES(?,?,?,?,?) ON CONFLICT(customer, period, owner) DO UPDATE SET "
                    "granted=excluded.granted, used=excluded.used");
    if (!transaction.began() || !write.ok() || !beat(now_ms)) {
      return storage_error(db_, "cannot report admission usage");
    }
    for (const GrantReport& row : rows) {
      if (!write.bind(1, row.customer)
               .bind(2, row.period)
               .bind(3, owner_)
               .bind(4, row.granted)
               .bind(5, row.used)
               .run()) {
        return storage_error(db_, "cannot report admission usage");
      }
    }
    if (!transaction.commit()) return storage_error(db_, "cannot report admission usage");
    return {};
  }

  Expected<void> heartbeat(std::int64_t now_ms) override {
    std::lock_guard lock(mutex_);
    if (!beat(now_ms)) return storage_error(db_, "cannot renew the admission heartbeat");
    return {};
  }

  Expected<bool> remember_webhook(const StoredWebhook& event, std::int64_t now_ms) override {
    std::lock_guard lock(mutex_);
    Statement insert(db_,
                     "INSERT INTO webhook_events(id, type, payload, received_ms) VALUES(?,?,?,?) "
                     "ON CONFLICT(id) DO NOTHING");
    if (!insert.ok() || !insert.bind(1, event.id)
                             .bind(2, event.type)
                             .bind(3, event.payload)
                             .bind(4, now_ms)
                             .run()) {
      return storage_error(db_, "cannot store a webhook event");
    }
    return sqlite3_changes(db_) == 1;
  }

  Expected<void> webhook_processed(const std::string& id, std::int64_t now_ms) override {
    std::lock_guard lock(mutex_);
    Statement update(db_, "UPDATE webhook_events SET processed_ms=? WHERE id=?");
    if (!update.ok() || !update.bind(1, now_ms).bind(2, id).run()) {
      return storage_error(db_, "cannot mark a webhook event processed");
    }
    return {};
  }

  Expected<std::vector<StoredWebhook>> unprocessed_webhooks(int limit) override {
    std::lock_guard lock(mutex_);
    Statement select(db_,
                     "SELECT id, type, payload FROM webhook_events WHERE processed_ms IS NULL "
                     "ORDER BY received_ms, id LIMIT ?");
    if (!select.ok()) return storage_error(db_, "cannot read webhook events");
    select.bind(1, static_cast<std::int64_t>(limit));
    std::vector<StoredWebhook> out;
    int rc = SQLITE_ROW;
    while ((rc = select.step()) == SQLITE_ROW) {
      out.push_back({select.text(0), select.text(1), select.text(2)});
    }
    if (rc != SQLITE_DONE) return storage_error(db_, "cannot read webhook events");
    return out;
  }

 private:
  bool beat(std::int64_t now_ms) {
    Statement write(db_,
                    "INSERT INTO admission_owners(owner, heartbeat_ms) VALUES(?,?) "
                    "ON CONFLICT(owner) DO UPDATE SET heartbeat_ms=excluded.heartbeat_ms");
    return write.ok() && write.bind(1, owner_).bind(2, now_ms).run();
  }

  std::mutex mutex_;
  sqlite3* db_;
};

}  // namespace

Expected<std::unique_ptr<AdmissionStore>> open_sqlite_admission_store(const std::string& path,
                                                                      std::string owner,
                                                                      std::int64_t dead_after_ms) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    Error error = storage_error(db, "cannot open the admission store in " + path);
    sqlite3_close(db);
    return error;
  }
  sqlite3_busy_handler(db, admission_busy_wait, nullptr);
  char* message = nullptr;
  const int rc = sqlite3_exec(
      db,
      (std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;") + kAdmissionSchema)
          .c_str(),
      nullptr, nullptr, &message);
  if (rc != SQLITE_OK) {
    Error error{ErrorCode::kStorage,
                "cannot create the admission tables in " + path + ": " + (message ? message : "?"),
                std::nullopt};
    sqlite3_free(message);
    sqlite3_close(db);
    return error;
  }
  return std::unique_ptr<AdmissionStore>(
      std::make_unique<SqliteAdmissionStore>(db, std::move(owner), dead_after_ms));
}

}  // namespace stripe_billing
