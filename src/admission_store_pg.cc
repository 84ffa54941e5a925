// AdmissionStore in the fleet's PostgreSQL schema, on its own connection. take() locks the
// customer's budget row (SELECT … FOR UPDATE) so that concurrent takes from the fleet are
// serialised per customer and period, and never hand out more than is left.
#include <string>

#include "admission_store.h"
#include "admission_take.h"
#include "pg_connection.h"

namespace stripe_billing {
namespace {

constexpr const char* kAdmissionSchema = R"sql(
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.admission_owners(
  owner TEXT PRIMARY KEY,
  heartbeat_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.admission_grants(
  customer TEXT NOT NULL,
  period TEXT NOT NULL,
  owner TEXT NOT NULL,
  granted BIGINT NOT NULL DEFAULT 0,
  used BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY(customer, period, owner));
CREATE TABLE IF NOT EXISTS {s}.admission_budgets(
  customer TEXT NOT NULL,
  period TEXT NOT NULL,
  budget BIGINT NOT NULL,
  crossing_owner TEXT,
  PRIMARY KEY(customer, period));
CREATE TABLE IF NOT EXISTS {s}.webhook_events(
  id TEXT PRIMARY KEY,
  type TEXT NOT NULL,
  payload TEXT NOT NULL,
  received_ms BIGINT NOT NULL,
  processed_ms BIGINT);
CREATE INDEX IF NOT EXISTS webhook_events_unprocessed ON {s}.webhook_events(received_ms)
  WHERE processed_ms IS NULL;
)sql";

std::string in_schema(std::string sql, const std::string& schema) {
  for (std::size_t at = sql.find("{s}"); at != std::string::npos; at = sql.find("{s}", at)) {
    sql.replace(at, 3, schema);
  }
  return sql;
}

class PgAdmissionStore final : public AdmissionStore {
 public:
  PgAdmissionStore(const FinalizedConfig& config, std::string owner, std::int64_t dead_after_ms)
      : AdmissionStore(std::move(owner), dead_after_ms),
        schema_(config.outbox_schema()),
        db_(config.outbox_url(), config.outbox_url_redacted()) {}

  // The tables, made at the first use (PostgreSQL may be down at start: admission then follows
  // STRIPE_ADMISSION_FAIL until it answers). Called with the connection's mutex held.
  Expected<void> ready_locked() {
    if (created_) return {};
    auto made = db_.transaction<bool>(
        [&]() -> Expected<bool> {
          auto locked =
              db_.exec("SELECT pg_advisory_xact_lock(hashtext($1))", {p(schema_ + ".admission")});
          if (!locked) return locked.error();
          auto made = db_.exec(in_schema(kAdmissionSchema, schema_));
          if (!made) return made.error();
          return true;
        },
        "cannot create the admission tables");
    if (!made) return made.error();
    created_ = true;
    return {};
  }

  Expected<GrantTaken> take(const std::string& customer, const std::string& period,
                            std::int64_t want, std::int64_t budget, bool force,
                            std::int64_t now_ms) override {
    std::lock_guard lock(db_.mutex);
    if (auto ready = ready_locked(); !ready) return ready.error();
    const std::int64_t alive_since = now_ms - dead_after_ms_;
    return db_.transaction<GrantTaken>(
        [&]() -> Expected<GrantTaken> {
          if (auto beat = beat_locked(now_ms); !beat) return beat.error();
          auto row = db_.exec_prepared(
              "adm_budget_row",
              "INSERT INTO " + table("admission_budgets") +
                  "(customer, period, budget) VALUES($1,$2,$3) ON CONFLICT(customer, period) DO "
                  "UPDATE SET budget=EXCLUDED.budget RETURNING crossing_owner",
              {p(customer), p(period), p(budget)});
          if (!row) return row.error();
          // The upsert locked the row until commit: every take of this customer and period waits.
          TakeInputs in;
          in.want = want;
          in.budget = budget;
          in.force = force;
          const std::string holder = row->null(0, 0) ? std::string() : row->text(0, 0);
          in.mine_crossing = holder == owner_;
          if (!holder.empty() && !in.mine_crossing) {
            auto beat = db_.exec_prepared(
                "adm_holder_beat",
                "SELECT heartbeat_ms FROM " + table("admission_owners") + " WHERE owner=$1",
                {p(holder)});
            if (!beat) return beat.error();
            in.crossing_free = beat->rows() == 0 || beat->integer(0, 0) < alive_since;
          }
          auto sums = db_.exec_prepared(
              "adm_sums",
              "SELECT COALESCE(SUM(CASE WHEN g.owner=$3 OR o.heartbeat_ms>=$4 THEN g.granted ELSE "
              "g.used END),0), COALESCE(SUM(g.used),0) FROM " +
                  table("admission_grants") + " g LEFT JOIN " + table("admission_owners") +
                  " o ON o.owner=g.owner WHERE g.customer=$1 AND g.period=$2",
              {p(customer), p(period), p(owner_), p(alive_since)});
          if (!sums) return sums.error();
          in.fleet_total = sums->integer(0, 0);
          in.fleet_used = sums->integer(0, 1);
          const TakeOutcome out = decide_take(in);
          auto grant = db_.exec_prepared(
              "adm_grant",
              "INSERT INTO " + table("admission_grants") +
                  " AS g(customer, period, owner, granted) VALUES($1,$2,$3,$4) ON "
                  "CONFLICT(customer, "
                  "period, owner) DO UPDATE SET granted=g.granted+EXCLUDED.granted",
              {p(customer), p(period), p(owner_), p(out.taken.granted)});
          if (!grant) return grant.error();
          if (out.set_crossing) {
            auto mark =
                db_.exec_prepared("adm_crossing",
                                  "UPDATE " + table("admission_budgets") +
                                      " SET crossing_owner=$3 WHERE customer=$1 AND period=$2",
                                  {p(customer), p(period), p(owner_)});
            if (!mark) return mark.error();
          }
          return out.taken;
        },
        "cannot take an admission grant");
  }

  Expected<void> report(const std::vector<GrantReport>& rows, std::int64_t now_ms) override {
    std::lock_guard lock(db_.mutex);
    if (auto ready = ready_locked(); !ready) return ready.error();
    auto reported = db_.transaction<bool>(
        [&]() -> Expected<bool> {
          if (auto beat = beat_locked(now_ms); !beat) return beat.error();
          for (const GrantReport& row : rows) {
            auto write = db_.exec_prepared(
                "adm_report",
                "INSERT INTO " + table("admission_grants") +
                    "(customer, period, owner, granted, used) VALUES($1,$2,$3,$4,$5) ON "
                    "CONFLICT(customer, period, owner) DO UPDATE SET "
                    "granted=EXCLUDED.granted, used=EXCLUDED.used",
                {p(row.customer), p(row.period), p(owner_), p(row.granted), p(row.used)});
            if (!write) return write.error();
          }
          return true;
        },
        "cannot report admission usage");
    if (!reported) return reported.error();
    return {};
  }

  Expected<void> heartbeat(std::int64_t now_ms) override {
    std::lock_guard lock(db_.mutex);
    if (auto ready = ready_locked(); !ready) return ready.error();
    return beat_locked(now_ms);
  }

  Expected<bool> remember_webhook(const StoredWebhook& event, std::int64_t now_ms) override {
    std::lock_guard lock(db_.mutex);
    if (auto ready = ready_locked(); !ready) return ready.error();
    auto insert = db_.exec_prepared("adm_webhook",
                                    "INSERT INTO " + table("webhook_events") +
                                        "(id, type, payload, received_ms) VALUES($1,$2,$3,$4) ON "
                                        "CONFLICT(id) DO NOTHING",
                                    {p(event.id), p(event.type), p(event.payload), p(now_ms)});
    if (!insert) return insert.error();
    return insert->affected() == 1;
  }

  Expected<void> webhook_processed(const std::string& id, std::int64_t now_ms) override {
    std::lock_guard lock(db_.mutex);
    if (auto ready = ready_locked(); !ready) return ready.error();
    auto update =
        db_.exec_prepared("adm_webhook_done",
                          "UPDATE " + table("webhook_events") + " SET processed_ms=$2 WHERE id=$1",
                          {p(id), p(now_ms)});
    if (!update) return update.error();
    return {};
  }

  Expected<std::vector<StoredWebhook>> unprocessed_webhooks(int limit) override {
    std::lock_guard lock(db_.mutex);
    if (auto ready = ready_locked(); !ready) return ready.error();
    auto select = db_.exec_prepared("adm_webhook_open",
                                    "SELECT id, type, payload FROM " + table("webhook_events") +
                                        " WHERE processed_ms IS NULL ORDER BY received_ms, id "
                                        "LIMIT $1",
                                    {p(static_cast<std::int64_t>(limit))});
    if (!select) return select.error();
    std::vector<StoredWebhook> out;
    for (int row = 0; row < select->rows(); ++row) {
      out.push_back({select->text(row, 0), select->text(row, 1), select->text(row, 2)});
    }
    return out;
  }

 private:
  std::string table(const char* name) const { return schema_ + "." + name; }

  Expected<void> beat_locked(std::int64_t now_ms) {
    auto beat = db_.exec_prepared("adm_beat",
                                  "INSERT INTO " + table("admission_owners") +
                                      "(owner, heartbeat_ms) VALUES($1,$2) ON CONFLICT(owner) DO "
                                      "UPDATE SET heartbeat_ms=EXCLUDED.heartbeat_ms",
                                  {p(owner_), p(now_ms)});
    if (!beat) return beat.error();
    return {};
  }

  const std::string schema_;
  PgConnection db_;
  bool created_ = false;
};

}  // namespace

Expected<std::unique_ptr<AdmissionStore>> open_pg_admission_store(const FinalizedConfig& config,
                                                                  std::string owner,
                                                                  std::int64_t dead_after_ms) {
  return std::unique_ptr<AdmissionStore>(
      std::make_unique<PgAdmissionStore>(config, std::move(owner), dead_after_ms));
}

}  // namespace stripe_billing
