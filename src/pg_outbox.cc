#include "pg_outbox.h"

#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <tuple>
#include <utility>

#include "pg_connection.h"
#include "pg_conninfo.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

int stored(EventState state) { return static_cast<int>(state); }

// The database's clock in milliseconds: leases expire on one clock for the whole fleet.
constexpr const char* kDbNowMs = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

std::string random_id(int length) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device device;
  std::uniform_int_distribution<int> pick(0, 35);
  std::string id;
  for (int i = 0; i < length; ++i) id.push_back(kAlphabet[pick(device)]);
  return id;
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "host";
  return name;
}

// A PostgreSQL array literal of integers: {1,2,3}.
std::string int_array(const std::vector<std::int64_t>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(values[i]);
  }
  return out + "}";
}

// One element of a PostgreSQL array literal, quoted: "b\"c".
void append_array_text(std::string& out, const std::string& raw) {
  const std::string value = is_storable_text(raw) ? raw : log_safe(raw, raw.size() * 4 + 16);
  out += '"';
  for (char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

// A PostgreSQL array literal of texts, every element quoted: {"a","b\"c"}.
std::string text_array(const std::vector<std::string>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    append_array_text(out, values[i]);
  }
  return out + "}";
}

// Rows of kEventColumns, from `first` on.
constexpr const char* kEventColumns =
    "id, call_id, dimension, sink, model, customer_key, quantity, event_time, accepted_at_ms, "
    "customer_id";

StoredEvent read_event(const Result& result, int row, int first = 0) {
  StoredEvent event;
  event.id = result.integer(row, first);
  event.call_id = result.text(row, first + 1);
  event.dimension = result.text(row, first + 2);
  event.sink = static_cast<Sink>(result.integer(row, first + 3));
  event.model = result.text(row, first + 4);
  event.customer_key = result.text(row, first + 5);
  event.quantity = result.integer(row, first + 6);
  event.event_time = result.integer(row, first + 7);
  event.accepted_at_ms = result.integer(row, first + 8);
  event.customer_id = result.text(row, first + 9);
  return event;
}

// The 15 values of a row, in the order of the events' insert.
std::vector<Param> event_params(const NewEvent& e) {
  return {p(e.call_id),  p(e.dimension),       p(static_cast<int>(e.sink)), p(e.customer_key),
          p(e.quantity), p(e.event_time),      p(e.accepted_at_ms),         p(e.model),
          p(e.cost),     p(e.prompt_tokens),   p(e.completion_tokens),      p(stored(e.state)),
          p(e.reason),   p(e.next_attempt_ms), p(e.accepted_at_ms)};
}

}  // namespace

namespace {

Error storage(const std::string& message) {
  return Error{ErrorCode::kStorage, message, std::nullopt};
}

// The schema of format 1, in `{s}` (replaced by the schema's name).
constexpr const char* kSchema = R"sql(
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.events(
  id BIGSERIAL PRIMARY KEY,
  call_id TEXT NOT NULL,
  dimension TEXT NOT NULL,
  sink SMALLINT NOT NULL,
  customer_key TEXT NOT NULL,
  quantity BIGINT NOT NULL,
  event_time BIGINT NOT NULL,
  accepted_at_ms BIGINT NOT NULL,
  model TEXT NOT NULL DEFAULT '',
  cost DOUBLE PRECISION NOT NULL DEFAULT 0,
  prompt_tokens BIGINT NOT NULL DEFAULT 0,
  completion_tokens BIGINT NOT NULL DEFAULT 0,
  state SMALLINT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  next_attempt_ms BIGINT,
  batch_id BIGINT,
  updated_ms BIGINT NOT NULL,
  customer_id TEXT NOT NULL DEFAULT '',
  UNIQUE(call_id, dimension, sink));
CREATE INDEX IF NOT EXISTS events_by_state ON {s}.events(state, id);
CREATE INDEX IF NOT EXISTS events_by_batch ON {s}.events(batch_id) WHERE batch_id IS NOT NULL;
CREATE SEQUENCE IF NOT EXISTS {s}.batch_ids;
CREATE TABLE IF NOT EXISTS {s}.batches(
  id BIGINT PRIMARY KEY,
  idempotency_key TEXT NOT NULL UNIQUE,
  kind SMALLINT NOT NULL,
  sink SMALLINT NOT NULL,
  target TEXT NOT NULL,
  customer_id TEXT NOT NULL,
  customer_key TEXT NOT NULL,
  quantity BIGINT NOT NULL,
  timestamp BIGINT NOT NULL,
  state SMALLINT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  delivered_ms BIGINT,
  request_id TEXT NOT NULL DEFAULT '',
  last_error TEXT NOT NULL DEFAULT '',
  event_count BIGINT NOT NULL DEFAULT 0,
  lease_owner TEXT,
  lease_token BIGINT NOT NULL DEFAULT 0,
  lease_expires_ms BIGINT);
CREATE INDEX IF NOT EXISTS batches_by_state ON {s}.batches(state, next_attempt_ms);
CREATE TABLE IF NOT EXISTS {s}.carries(key TEXT PRIMARY KEY, remainder BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.engine_lease(
  name TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  token BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL);
)sql";

std::string in_schema(const char* text, const std::string& schema) {
  std::string out = text;
  for (std::size_t at = out.find("{s}"); at != std::string::npos; at = out.find("{s}", at)) {
    out.replace(at, 3, schema);
  }
  return out;
}

}  // namespace

PgOutbox::PgOutbox(std::string schema, StoreMode mode, std::chrono::seconds lease)
    : schema_(std::move(schema)),
      mode_(mode),
      lease_(lease),
      owner_(host_name() + "/" + std::to_string(::getpid()) + "/" + random_id(8)) {}

PgOutbox::~PgOutbox() {
  if (mode_ == StoreMode::kEngine) release_engine();
}

Expected<std::unique_ptr<Outbox>> PgOutbox::open(const Secret& conninfo, const std::string& schema,
                                                 StoreMode mode, std::chrono::seconds lease) {
  const std::string redacted = redact_pg_conninfo(conninfo.reveal());
  std::unique_ptr<PgOutbox> outbox(new PgOutbox(schema, mode, lease));
  for (auto* connection : {&outbox->writer_, &outbox->engine_, &outbox->reader_}) {
    *connection = std::make_unique<PgConnection>(conninfo, redacted);
    (*connection)->share_interrupt(outbox->interrupted_);
  }
  PgConnection& db = *outbox->engine_;
  std::lock_guard lock(db.mutex);
  if (auto ready = db.ready(); !ready) return ready.error();
  const std::string meta = schema + ".meta";
  auto exists = db.exec("SELECT to_regclass($1) IS NOT NULL", {p(meta)});
  if (!exists) return exists.error();
  const bool present = exists->text(0, 0) == "t";
  if (!present && mode == StoreMode::kReadOnly) {
    return storage("no outbox in schema " + schema + " of PostgreSQL " + redacted);
  }
  int current = 0;  // the format found, when the schema exists
  if (present) {
    // Never read a format newer than this library knows.
    auto version = db.exec("SELECT value FROM " + meta + " WHERE key='schema_version'", {});
    if (!version) return version.error();
    current = version->rows() == 0
                  ? 0
                  : static_cast<int>(std::strtol(version->text(0, 0).c_str(), nullptr, 10));
    if (current > kSchemaVersion) {
      return storage("the outbox in schema " + schema + " is of format " + std::to_string(current) +
                     ", newer than this library's " + std::to_string(kSchemaVersion) +
                     "; upgrade this replica");
    }
  }
  // A schema of the current format is used as it is: a replica needs no right to create or alter
  // anything (docs/deployment.md lists the grants), only the first start or an upgrade does.
  if (mode != StoreMode::kReadOnly && current != kSchemaVersion) {
    // Replicas starting together create or migrate the schema one at a time.
    auto migrated = db.transaction<int>(
        [&]() -> Expected<int> {
          auto locked = db.exec("SELECT pg_advisory_xact_lock(hashtext($1))",
                                {p("stripe_billing schema " + schema)});
          if (!locked) return locked.error();
          auto created = db.exec(in_schema(kSchema, schema));
          if (!created) return created.error();
          auto version = db.exec("SELECT value FROM " + meta + " WHERE key='schema_version'", {});
          if (!version) return version.error();
          const int found =
              version->rows() == 0
                  ? 0
                  : static_cast<int>(std::strtol(version->text(0, 0).c_str(), nullptr, 10));
          if (found > kSchemaVersion) {
            return storage("the outbox in schema " + schema + " is of format " +
                           std::to_string(found) + ", newer than this library's " +
                           std::to_string(kSchemaVersion) + "; upgrade this replica");
          }
          auto saved = db.exec("INSERT INTO " + meta +
                                   "(key, value) VALUES('schema_version', $1) "
                                   "ON CONFLICT(key) DO UPDATE SET value=EXCLUDED.value",
                               {p(kSchemaVersion)});
          if (!saved) return saved.error();
          auto id = db.exec("INSERT INTO " + meta +
                                "(key, value) VALUES('instance_id', $1) ON CONFLICT DO NOTHING",
                            {p(random_id(16))});
          if (!id) return id.error();
          return found;
        },
        "cannot prepare the outbox in PostgreSQL");
    if (!migrated) return migrated.error();
    if (*migrated == 0) {
      outbox->notes_.push_back("created the outbox in schema " + schema + " of PostgreSQL " +
                               redacted);
    }
  }
  auto id = db.exec("SELECT value FROM " + meta + " WHERE key='instance_id'", {});
  if (!id) return id.error();
  if (id->rows() == 1) outbox->instance_id_ = id->text(0, 0);
  return std::unique_ptr<Outbox>(std::move(outbox));
}

void PgOutbox::interrupt_writes() { interrupted_->store(true); }

// ---------------------------------------------------------------------------------------------
// The engine lease

Expected<bool> PgOutbox::hold_engine(const std::vector<std::int64_t>& held) {
  if (mode_ != StoreMode::kEngine) return false;
  std::lock_guard lock(engine_->mutex);
  const auto started = std::chrono::steady_clock::now();
  // Renewed a third of the lease at most: a round of the planner costs no write.
  const auto lease = std::chrono::duration_cast<std::chrono::milliseconds>(lease_);
  if (engine_token_ > 0 && started < held_until_ && started - renewed_at_ < lease / 3) return true;
  const auto lease_ms = static_cast<std::int64_t>(lease.count());
  const std::string lease_table = table("engine_lease");
  // Taken when free or expired (a new token, also for this process coming back after its lease
  // expired), renewed while held (the same token).
  auto taken = engine_->exec(
      "INSERT INTO " + lease_table + "(name, owner, token, expires_ms) VALUES('engine', $1, 1, " +
          kDbNowMs + " + $2) ON CONFLICT(name) DO UPDATE SET owner=EXCLUDED.owner, token=" +
          lease_table + ".token + CASE WHEN " + lease_table + ".owner=EXCLUDED.owner AND " +
          lease_table + ".expires_ms >= " + kDbNowMs + " THEN 0 ELSE 1 END, " +
          "expires_ms=EXCLUDED.expires_ms WHERE " + lease_table + ".owner=EXCLUDED.owner OR " +
          lease_table + ".expires_ms < " + kDbNowMs + " RETURNING token",
      {p(owner_), p(lease_ms)});
  if (!taken) {
    // Not known to be held any more: the engine stops here, and whatever is held next time is
    // taken as new (every claim released then).
    engine_token_ = 0;
    return taken.error();
  }
  if (taken->rows() == 0) {
    engine_token_ = 0;
    return false;
  }
  const std::int64_t token = taken->integer(0, 0);
  if (token != engine_token_) {
    // New holder: every claim is nobody's now — earlier holders', and this process's own from
    // before (its queues were dropped when it stopped holding). Each claim's token is raised, so
    // no answer to an earlier claim is recorded; the next claim raises it again.
    auto released = engine_->exec("UPDATE " + table("batches") +
                                      " SET lease_owner=NULL, lease_token=lease_token+1 "
                                      "WHERE state=$1 AND lease_owner IS NOT NULL",
                                  {p(kBatchSending)});
    if (!released) {
      engine_token_ = 0;
      return released.error();
    }
  } else {
    // Only the claims the engine holds (queued or in flight): one it lost track of (a commit
    // whose answer never came) expires and is claimed again.
    std::vector<std::int64_t> ids(held);
    auto renewed =
        engine_->exec("UPDATE " + table("batches") + " SET lease_expires_ms=" + kDbNowMs +
                          " + $1 WHERE state=$2 AND lease_owner=$3 AND " + "id = ANY($4::bigint[])",
                      {p(lease_ms), p(kBatchSending), p(owner_), p(int_array(ids))});
    if (!renewed) {
      engine_token_ = 0;
      return renewed.error();
    }
  }
  engine_token_ = token;
  renewed_at_ = started;
  // From before the round trip, less a margin for clocks that run a little apart: never later
  // than the database's expiry.
  held_until_ = started + lease - lease / 5;
  return true;
}

void PgOutbox::release_engine() {
  std::lock_guard lock(engine_->mutex);
  if (engine_token_ == 0) return;
  // Even past a shutdown's deadline (interrupt_writes): one short statement, so another replica
  // takes over at once instead of after the lease.
  (void)engine_->exec("UPDATE " + table("engine_lease") +
                          " SET expires_ms=0 WHERE name='engine' AND owner=$1 AND token=$2",
                      {p(owner_), p(engine_token_)}, /*even_interrupted=*/true);
  engine_token_ = 0;
}

// ---------------------------------------------------------------------------------------------
// Intake

Expected<InsertResult> PgOutbox::insert(const std::vector<NewEvent>& events,
                                        const CarryRule& carry_rule) {
  if (mode_ == StoreMode::kReadOnly) return storage("the outbox is open read-only");
  begin_insert();  // numbered as it begins: counts() cannot tell when its commit becomes visible
  for (const NewEvent& event : events) {
    if (!std::isfinite(event.cost)) {
      return storage("outbox write refused: a row's cost is not finite");
    }
  }
  std::vector<const NewEvent*> plain, costs;
  for (const NewEvent& event : events) (event.amount_micros ? costs : plain).push_back(&event);
  // Every replica takes its locks in one order (the rows' unique keys, the carries' keys), so two
  // writes of overlapping calls or customers wait for each other instead of deadlocking. A stable
  // sort keeps the rows of one carry in their order (the carry's arithmetic depends on it) and the
  // first of two equal rows first.
  std::stable_sort(plain.begin(), plain.end(), [](const NewEvent* a, const NewEvent* b) {
    return std::tie(a->call_id, a->dimension, a->sink) <
           std::tie(b->call_id, b->dimension, b->sink);
  });
  std::stable_sort(costs.begin(), costs.end(), [](const NewEvent* a, const NewEvent* b) {
    return carry_key(*a) < carry_key(*b);
  });
  PgConnection& db = *writer_;
  std::lock_guard lock(db.mutex);
  // The plain rows: one prepared statement over 15 arrays, whatever their number (parsed once a
  // connection), and without costs no transaction around it: one round trip, one commit.
  const auto insert_plain = [&]() -> Expected<InsertResult> {
    InsertResult result;
    if (plain.empty()) return result;
    std::string columns[15];
    for (std::string& column : columns) column = "{";
    for (std::size_t i = 0; i < plain.size(); ++i) {
      const NewEvent& e = *plain[i];
      const char* comma = i == 0 ? "" : ",";
      const auto text = [&](int column, const std::string& value) {
        columns[column] += comma;
        append_array_text(columns[column], value);
      };
      const auto number = [&](int column, std::int64_t value) {
        columns[column] += comma;
        columns[column] += std::to_string(value);
      };
      text(0, e.call_id);
      text(1, e.dimension);
      number(2, static_cast<int>(e.sink));
      text(3, e.customer_key);
      number(4, e.quantity);
      number(5, e.event_time);
      number(6, e.accepted_at_ms);
      text(7, e.model);
      columns[8] += comma;
      columns[8] += *p(e.cost);
      number(9, e.prompt_tokens);
      number(10, e.completion_tokens);
      number(11, stored(e.state));
      text(12, e.reason);
      columns[13] += comma;
      columns[13] += e.next_attempt_ms ? std::to_string(*e.next_attempt_ms) : "NULL";
      number(14, e.accepted_at_ms);
    }
    std::vector<Param> params;
    for (std::string& column : columns) params.push_back(std::move(column += "}"));
    auto inserted = db.exec_prepared(
        "insert_events",
        "INSERT INTO " + table("events") +
            "(call_id, dimension, sink, customer_key, quantity, event_time, accepted_at_ms, "
            "model, cost, prompt_tokens, completion_tokens, state, reason, next_attempt_ms, "
            "updated_ms) SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], "
            "$4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[], $9::float8[], "
            "$10::bigint[], $11::bigint[], $12::smallint[], $13::text[], $14::bigint[], "
            "$15::bigint[]) ON CONFLICT(call_id, dimension, sink) DO NOTHING",
        params);
    if (!inserted) return inserted.error();
    result.inserted = inserted->affected();
    result.duplicates = static_cast<std::int64_t>(plain.size()) - inserted->affected();
    return result;
  };
  if (costs.empty()) {
    auto result = insert_plain();
    if (!result)
      return Error{ErrorCode::kStorage, "outbox write failed: " + result.error().message,
                   std::nullopt};
    return result;
  }
  return db.transaction<InsertResult>(
      [&]() -> Expected<InsertResult> {
        auto result = insert_plain();
        if (!result) return result.error();
        auto inserted = insert_costs(db, costs, carry_rule, result->duplicates);
        if (!inserted) return inserted.error();
        result->inserted += *inserted;
        return result;
      },
      "outbox write failed");
}

// Cost rows, one at a time under their carry's row lock: replicas storing rows of the same
// customer take turns, and a row already stored (by any replica) moves no carry.
Expected<std::int64_t> PgOutbox::insert_costs(PgConnection& db,
                                              const std::vector<const NewEvent*>& rows,
                                              const CarryRule& carry_rule,
                                              std::int64_t& duplicates) {
  std::map<std::string, std::int64_t> carried;
  std::int64_t inserted = 0;
  for (const NewEvent* original : rows) {
    const std::string key = carry_key(*original);
    auto it = carried.find(key);
    if (it == carried.end()) {
      auto made = db.exec("INSERT INTO " + table("carries") +
                              "(key, remainder) VALUES($1, 0) ON CONFLICT DO NOTHING",
                          {p(key)});
      if (!made) return made.error();
      auto read = db.exec("SELECT remainder FROM " + table("carries") + " WHERE key=$1 FOR UPDATE",
                          {p(key)});
      if (!read) return read.error();
      it = carried.emplace(key, read->integer(0, 0)).first;
    }
    auto exists = db.exec(
        "SELECT 1 FROM " + table("events") + " WHERE call_id=$1 AND dimension=$2 AND sink=$3",
        {p(original->call_id), p(original->dimension), p(static_cast<int>(original->sink))});
    if (!exists) return exists.error();
    if (exists->rows() > 0) {
      ++duplicates;
      continue;
    }
    NewEvent row = *original;
    const std::int64_t remainder = carry_rule(row, it->second);
    auto stored_row = db.exec(
        "INSERT INTO " + table("events") +
            "(call_id, dimension, sink, customer_key, quantity, event_time, accepted_at_ms, "
            "model, cost, prompt_tokens, completion_tokens, state, reason, next_attempt_ms, "
            "updated_ms) VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) "
            "ON CONFLICT(call_id, dimension, sink) DO NOTHING",
        event_params(row));
    if (!stored_row) return stored_row.error();
    if (stored_row->affected() == 0) {
      ++duplicates;
      continue;
    }
    ++inserted;
    it->second = remainder;
  }
  for (const auto& [key, remainder] : carried) {
    auto saved = db.exec("UPDATE " + table("carries") + " SET remainder=$2 WHERE key=$1",
                         {p(key), p(remainder)});
    if (!saved) return saved.error();
  }
  return inserted;
}

// ---------------------------------------------------------------------------------------------
// Planning

Expected<std::vector<StoredEvent>> PgOutbox::due_events(std::int64_t now_ms, int limit) {
  std::lock_guard lock(engine_->mutex);
  auto woken =
      engine_->exec("UPDATE " + table("events") +
                        " SET state=$1, updated_ms=$2 WHERE state=$3 AND "
                        "next_attempt_ms IS NOT NULL AND next_attempt_ms<=$2",
                    {p(stored(EventState::kPending)), p(now_ms), p(stored(EventState::kParked))});
  if (!woken) return woken.error();
  auto rows = engine_->exec("SELECT " + std::string(kEventColumns) + " FROM " + table("events") +
                                " WHERE state=$1 ORDER BY id LIMIT $2",
                            {p(stored(EventState::kPending)), p(limit)});
  if (!rows) return rows.error();
  std::vector<StoredEvent> out;
  out.reserve(static_cast<std::size_t>(rows->rows()));
  for (int i = 0; i < rows->rows(); ++i) out.push_back(read_event(*rows, i));
  return out;
}

Expected<std::vector<StoredEvent>> PgOutbox::new_events(std::int64_t after_id, int limit) {
  std::lock_guard lock(engine_->mutex);
  auto rows = engine_->exec("SELECT " + std::string(kEventColumns) + " FROM " + table("events") +
                                " WHERE state=$1 AND id>$2 ORDER BY id LIMIT $3",
                            {p(stored(EventState::kPending)), p(after_id), p(limit)});
  if (!rows) return rows.error();
  std::vector<StoredEvent> out;
  out.reserve(static_cast<std::size_t>(rows->rows()));
  for (int i = 0; i < rows->rows(); ++i) out.push_back(read_event(*rows, i));
  return out;
}

Expected<std::vector<Batch>> PgOutbox::apply(PlanWrites writes, std::int64_t now_ms,
                                             std::size_t lease) {
  std::lock_guard lock(engine_->mutex);
  PgConnection& db = *engine_;
  const std::int64_t token = engine_token_;
  const auto lease_ms = std::chrono::duration_cast<std::chrono::milliseconds>(lease_).count();
  return db.transaction<std::vector<Batch>>(
      [&]() -> Expected<std::vector<Batch>> {
        // Only the lease's holder plans: a replica that lost it (paused past its expiry) writes
        // nothing. FOR SHARE holds the lease's row until the commit.
        auto holder = db.exec("SELECT 1 FROM " + table("engine_lease") +
                                  " WHERE name='engine' AND owner=$1 AND token=$2 FOR SHARE",
                              {p(owner_), p(token)});
        if (!holder) return holder.error();
        if (holder->rows() == 0) return storage("this replica no longer holds the engine lease");
        for (const auto* changes : {&writes.parks, &writes.kills}) {
          const bool park = changes == &writes.parks;
          for (const RowChange& change : *changes) {
            auto moved = db.exec("UPDATE " + table("events") +
                                     " SET state=$1, reason=$2, next_attempt_ms=$3 " +
                                     "WHERE id = ANY($4::bigint[]) AND state=$5",
                                 {p(stored(park ? EventState::kParked : EventState::kDead)),
                                  p(change.reason), park ? p(change.next_attempt_ms) : Param(),
                                  p(int_array(change.event_ids)), p(stored(EventState::kPending))});
            if (!moved) return moved.error();
          }
        }
        std::vector<Batch> created;
        if (writes.batches.empty()) return created;
        auto ids =
            db.exec("SELECT nextval('" + table("batch_ids") + "') FROM generate_series(1, $1)",
                    {p(static_cast<std::int64_t>(writes.batches.size()))});
        if (!ids) return ids.error();
        std::vector<std::string> cols[16];
        std::vector<std::int64_t> member_ids;
        std::vector<std::int64_t> member_batches;
        std::vector<std::string> member_customers;
        created.reserve(writes.batches.size());
        for (std::size_t i = 0; i < writes.batches.size(); ++i) {
          NewBatch& spec = writes.batches[i];
          Batch& batch = spec.batch;
          const bool leased = created.size() < lease;
          batch.lease = leased ? 1 : 0;
          batch.id = ids->integer(static_cast<int>(i), 0);
          // The random part keeps a key unique even if a failover ever hands a batch id out
          // again (a promoted replica behind the primary).
          batch.idempotency_key =
              "sb1-" + instance_id_ + "-b" + std::to_string(batch.id) + "-" + random_id(8);
          batch.created_ms = now_ms;
          batch.attempts = 0;
          batch.events = static_cast<std::int64_t>(spec.members.size());
          const std::string values[] = {std::to_string(batch.id),
                                        batch.idempotency_key,
                                        std::to_string(static_cast<int>(batch.kind)),
                                        std::to_string(static_cast<int>(batch.sink())),
                                        batch.target,
                                        batch.customer_id,
                                        batch.customer_key,
                                        std::to_string(batch.quantity),
                                        std::to_string(batch.timestamp),
                                        std::to_string(now_ms),
                                        std::to_string(batch.events),
                                        leased ? owner_ : std::string(),
                                        std::to_string(batch.lease)};
          for (int c = 0; c < 13; ++c) cols[c].push_back(values[c]);
          for (const BatchMember& member : spec.members) {
            member_ids.push_back(member.event_id);
            member_batches.push_back(batch.id);
            member_customers.push_back(member.customer_id);
          }
          created.push_back(std::move(batch));
        }
        auto inserted = db.exec(
            "INSERT INTO " + table("batches") +
                "(id, idempotency_key, kind, sink, target, customer_id, customer_key, quantity, "
                "timestamp, state, next_attempt_ms, created_ms, event_count, lease_owner, "
                "lease_token, lease_expires_ms) "
                "SELECT b.id, b.k, b.kind, b.sink, b.target, b.cid, b.ckey, b.q, b.ts, $14, b.now, "
                "b.now, b.n, NULLIF(b.owner, ''), b.token, CASE WHEN b.owner='' THEN NULL ELSE " +
                kDbNowMs + " + $15 END FROM unnest($1::bigint[], $2::text[], $3::smallint[], " +
                "$4::smallint[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], " +
                "$10::bigint[], $11::bigint[], $12::text[], $13::bigint[]) AS b(id, k, kind, " +
                "sink, target, cid, ckey, q, ts, now, n, owner, token)",
            {p(text_array(cols[0])), p(text_array(cols[1])), p(text_array(cols[2])),
             p(text_array(cols[3])), p(text_array(cols[4])), p(text_array(cols[5])),
             p(text_array(cols[6])), p(text_array(cols[7])), p(text_array(cols[8])),
             p(text_array(cols[9])), p(text_array(cols[10])), p(text_array(cols[11])),
             p(text_array(cols[12])), p(kBatchSending), p(static_cast<std::int64_t>(lease_ms))});
        if (!inserted) return inserted.error();
        auto claimed =
            db.exec("UPDATE " + table("events") +
                        " e SET state=$1, batch_id=m.batch, customer_id=m.cid, updated_ms=$2 FROM "
                        "unnest($3::bigint[], $4::bigint[], $5::text[]) AS m(id, batch, cid) "
                        "WHERE e.id=m.id AND e.state=$6",
                    {p(stored(EventState::kBatched)), p(now_ms), p(int_array(member_ids)),
                     p(int_array(member_batches)), p(text_array(member_customers)),
                     p(stored(EventState::kPending))});
        if (!claimed) return claimed.error();
        if (claimed->affected() != static_cast<std::int64_t>(member_ids.size())) {
          return storage("rows of a batch were no longer pending");
        }
        return created;
      },
      "cannot store a planning round");
}

Expected<std::vector<ClaimedBatch>> PgOutbox::claim_due_batches(std::int64_t now_ms, int limit) {
  std::lock_guard lock(engine_->mutex);
  PgConnection& db = *engine_;
  const auto lease_ms = std::chrono::duration_cast<std::chrono::milliseconds>(lease_).count();
  return db.transaction<std::vector<ClaimedBatch>>(
      [&]() -> Expected<std::vector<ClaimedBatch>> {
        // Only the engine's holder claims (a replica paused past its lease claims none); the
        // lease's row is held until the commit, so a new holder's release comes after it.
        auto holder = db.exec("SELECT 1 FROM " + table("engine_lease") +
                                  " WHERE name='engine' AND owner=$1 AND token=$2 FOR SHARE",
                              {p(owner_), p(engine_token_)});
        if (!holder) return holder.error();
        if (holder->rows() == 0) return std::vector<ClaimedBatch>();
        auto claimed = db.exec(
            "UPDATE " + table("batches") + " SET lease_owner=$1, lease_token=lease_token+1, " +
                "lease_expires_ms=" + kDbNowMs + " + $2 WHERE id IN (SELECT id FROM " +
                table("batches") + " WHERE state=$3 AND (lease_owner IS NULL OR " +
                "lease_expires_ms < " + kDbNowMs + ") AND next_attempt_ms<=$4 " +
                "ORDER BY next_attempt_ms, id LIMIT $5 FOR UPDATE SKIP LOCKED) " +
                "RETURNING id, kind, idempotency_key, target, customer_id, customer_key, " +
                "quantity, timestamp, attempts, created_ms, event_count, lease_token, " +
                "next_attempt_ms",
            {p(owner_), p(static_cast<std::int64_t>(lease_ms)), p(kBatchSending), p(now_ms),
             p(limit)});
        if (!claimed) return claimed.error();
        std::vector<std::pair<std::int64_t, ClaimedBatch>> entries;
        std::vector<std::int64_t> ids;
        for (int i = 0; i < claimed->rows(); ++i) {
          ClaimedBatch entry;
          Batch& batch = entry.batch;
          batch.id = claimed->integer(i, 0);
          batch.kind = static_cast<BatchKind>(claimed->integer(i, 1));
          batch.idempotency_key = claimed->text(i, 2);
          batch.target = claimed->text(i, 3);
          batch.customer_id = claimed->text(i, 4);
          batch.customer_key = claimed->text(i, 5);
          batch.quantity = claimed->integer(i, 6);
          batch.timestamp = claimed->integer(i, 7);
          batch.attempts = static_cast<int>(claimed->integer(i, 8));
          batch.created_ms = claimed->integer(i, 9);
          batch.events = claimed->integer(i, 10);
          batch.lease = claimed->integer(i, 11);
          ids.push_back(batch.id);
          entries.emplace_back(claimed->integer(i, 12), std::move(entry));
        }
        std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
          return a.first != b.first ? a.first < b.first : a.second.batch.id < b.second.batch.id;
        });
        std::vector<ClaimedBatch> out;
        if (entries.empty()) return out;
        std::map<std::int64_t, ClaimedBatch*> by_id;
        out.reserve(entries.size());
        for (auto& [due, entry] : entries) out.push_back(std::move(entry));
        for (ClaimedBatch& entry : out) by_id[entry.batch.id] = &entry;
        auto models = db.exec("SELECT batch_id, model, SUM(quantity) FROM " + table("events") +
                                  " WHERE batch_id = ANY($1::bigint[]) GROUP BY batch_id, model "
                                  "ORDER BY batch_id, model",
                              {p(int_array(ids))});
        if (!models) return models.error();
        for (int i = 0; i < models->rows(); ++i) {
          by_id[models->integer(i, 0)]->batch.quantity_by_model.emplace_back(models->text(i, 1),
                                                                             models->integer(i, 2));
        }
        auto rows = db.exec("SELECT batch_id, " + std::string(kEventColumns) + " FROM " +
                                table("events") + " WHERE batch_id IN (SELECT id FROM " +
                                table("batches") + " WHERE id = ANY($1::bigint[]) AND kind <> " +
                                std::to_string(static_cast<int>(BatchKind::kUsageRecord)) +
                                ") ORDER BY batch_id, id",
                            {p(int_array(ids))});
        if (!rows) return rows.error();
        for (int i = 0; i < rows->rows(); ++i) {
          by_id[rows->integer(i, 0)]->rows.push_back(read_event(*rows, i, 1));
        }
        return out;
      },
      "cannot claim batches");
}

// ---------------------------------------------------------------------------------------------
// Outcomes

Expected<bool> PgOutbox::finish_batch(const Batch& batch, BatchState batch_state,
                                      EventState event_state, const std::string& reason,
                                      const std::string& request_id, std::int64_t now_ms,
                                      const char* what) {
  std::lock_guard lock(engine_->mutex);
  PgConnection& db = *engine_;
  return db.transaction<bool>(
      [&]() -> Expected<bool> {
        auto updated =
            db.exec("UPDATE " + table("batches") +
                        " SET state=$1, delivered_ms=$2, request_id=$3, last_error=$4, "
                        "lease_owner=NULL WHERE id=$5 AND lease_token=$6 AND state=$7",
                    {p(batch_state), batch_state == kBatchDelivered ? p(now_ms) : Param(),
                     p(request_id), p(reason), p(batch.id), p(batch.lease), p(kBatchSending)});
        if (!updated) return updated.error();
        if (updated->affected() == 0) return false;  // the claim is gone: not ours to record
        auto events = db.exec("UPDATE " + table("events") +
                                  " SET state=$1, updated_ms=$2, reason=$3 "
                                  "WHERE batch_id=$4 AND state=$5",
                              {p(stored(event_state)), p(now_ms), p(reason), p(batch.id),
                               p(stored(EventState::kBatched))});
        if (!events) return events.error();
        return true;
      },
      what);
}

Expected<bool> PgOutbox::batch_retry_later(const Batch& batch, int attempts,
                                           std::int64_t next_attempt_ms,
                                           const std::string& last_error) {
  std::lock_guard lock(engine_->mutex);
  auto updated = engine_->exec("UPDATE " + table("batches") +
                                   " SET attempts=$1, next_attempt_ms=$2, last_error=$3, "
                                   "lease_owner=NULL WHERE id=$4 AND lease_token=$5 AND state=$6",
                               {p(attempts), p(next_attempt_ms), p(last_error), p(batch.id),
                                p(batch.lease), p(kBatchSending)});
  if (!updated) return updated.error();
  return updated->affected() == 1;
}

Expected<bool> PgOutbox::release(const Batch& batch) {
  std::lock_guard lock(engine_->mutex);
  auto updated = engine_->exec("UPDATE " + table("batches") +
                                   " SET lease_owner=NULL WHERE id=$1 AND lease_token=$2 AND "
                                   "state=$3",
                               {p(batch.id), p(batch.lease), p(kBatchSending)});
  if (!updated) return updated.error();
  return updated->affected() == 1;
}

Expected<bool> PgOutbox::dissolve_batch(const Batch& batch) {
  std::lock_guard lock(engine_->mutex);
  PgConnection& db = *engine_;
  return db.transaction<bool>(
      [&]() -> Expected<bool> {
        // Kept, not deleted: its id (and so its idempotency key) is never handed out again.
        auto updated = db.exec("UPDATE " + table("batches") +
                                   " SET state=$1, lease_owner=NULL WHERE id=$2 AND "
                                   "lease_token=$3 AND state=$4",
                               {p(kBatchDissolved), p(batch.id), p(batch.lease), p(kBatchSending)});
        if (!updated) return updated.error();
        if (updated->affected() == 0) return false;
        auto events = db.exec(
            "UPDATE " + table("events") +
                " SET state=$1, batch_id=NULL, customer_id='' "
                "WHERE batch_id=$2 AND state=$3",
            {p(stored(EventState::kPending)), p(batch.id), p(stored(EventState::kBatched))});
        if (!events) return events.error();
        return true;
      },
      "cannot dissolve a batch");
}

// ---------------------------------------------------------------------------------------------
// Housekeeping

Expected<std::vector<std::string>> PgOutbox::open_targets() {
  std::lock_guard lock(engine_->mutex);
  auto rows = engine_->exec(
      "SELECT DISTINCT target FROM " + table("batches") + " WHERE state=$1 AND kind=$2",
      {p(kBatchSending), p(static_cast<int>(BatchKind::kUsageRecord))});
  if (!rows) return rows.error();
  std::vector<std::string> out;
  for (int i = 0; i < rows->rows(); ++i) out.push_back(rows->text(i, 0));
  return out;
}

Expected<PruneStep> PgOutbox::prune_delivered(std::int64_t older_than_ms, int max_rows) {
  std::lock_guard lock(engine_->mutex);
  PgConnection& db = *engine_;
  auto seen = db.exec("SELECT id, updated_ms, batch_id FROM " + table("events") +
                          " WHERE state=$1 AND id>$2 ORDER BY id LIMIT $3",
                      {p(stored(EventState::kDelivered)), p(prune_cursor_), p(max_rows)});
  if (!seen) return seen.error();
  std::vector<std::int64_t> old_rows;
  std::set<std::int64_t> batch_set;
  std::int64_t cursor = prune_cursor_;
  for (int i = 0; i < seen->rows(); ++i) {
    cursor = seen->integer(i, 0);
    if (seen->integer(i, 1) >= older_than_ms) continue;
    old_rows.push_back(seen->integer(i, 0));
    if (!seen->null(i, 2)) batch_set.insert(seen->integer(i, 2));
  }
  if (!old_rows.empty()) {
    const std::vector<std::int64_t> batches(batch_set.begin(), batch_set.end());
    auto removed = db.transaction<bool>(
        [&]() -> Expected<bool> {
          auto rows = db.exec(
              "DELETE FROM " + table("events") + " WHERE id = ANY($1::bigint[]) AND state=$2",
              {p(int_array(old_rows)), p(stored(EventState::kDelivered))});
          if (!rows) return rows.error();
          auto empty = db.exec("DELETE FROM " + table("batches") +
                                   " b WHERE b.id = ANY($1::bigint[]) AND b.state=$2 AND NOT "
                                   "EXISTS (SELECT 1 FROM " +
                                   table("events") + " e WHERE e.batch_id = b.id)",
                               {p(int_array(batches)), p(kBatchDelivered)});
          if (!empty) return empty.error();
          return true;
        },
        "cannot prune the ledger");
    if (!removed) return removed.error();
  }
  prune_cursor_ = cursor;
  PruneStep step{static_cast<std::int64_t>(old_rows.size()), seen->rows() < max_rows};
  if (step.done) prune_cursor_ = 0;
  return step;
}

Expected<void> PgOutbox::shift_schedule(std::int64_t delta_ms) {
  // Every replica's clock is its own; the engine's holder moves the schedule it set.
  std::lock_guard lock(engine_->mutex);
  PgConnection& db = *engine_;
  auto shifted = db.transaction<bool>(
      [&]() -> Expected<bool> {
        auto batches = db.exec(
            "UPDATE " + table("batches") + " SET next_attempt_ms=next_attempt_ms+$1 WHERE state=$2",
            {p(delta_ms), p(kBatchSending)});
        if (!batches) return batches.error();
        auto events = db.exec("UPDATE " + table("events") +
                                  " SET next_attempt_ms=next_attempt_ms+$1 WHERE state=$2 AND "
                                  "next_attempt_ms IS NOT NULL",
                              {p(delta_ms), p(stored(EventState::kParked))});
        if (!events) return events.error();
        return true;
      },
      "cannot move the retry schedule");
  if (!shifted) return shifted.error();
  return {};
}

Expected<std::int64_t> PgOutbox::reject_delivered(
    const std::vector<std::pair<std::string, std::string>>& call_dimensions,
    const std::string& reason, std::int64_t now_ms) {
  std::lock_guard lock(engine_->mutex);
  PgConnection& db = *engine_;
  return db.transaction<std::int64_t>(
      [&]() -> Expected<std::int64_t> {
        std::int64_t moved = 0;
        for (const auto& [call_id, dimension] : call_dimensions) {
          auto killed = db.exec_prepared(
              "reject_delivered",
              "UPDATE " + table("events") +
                  " SET state=$1, reason=$2, updated_ms=$3 WHERE call_id=$4 AND dimension=$5 AND "
                  "sink=$6 AND state=$7",
              {p(stored(EventState::kDead)), p(reason), p(now_ms), p(call_id), p(dimension),
               p(static_cast<int>(Sink::kMeterEvent)), p(stored(EventState::kDelivered))});
          if (!killed) return killed.error();
          moved += killed->affected();
        }
        return moved;
      },
      "cannot mark rejected events");
}

// ---------------------------------------------------------------------------------------------
// Reports

Expected<OutboxCounts> PgOutbox::counts() {
  std::lock_guard lock(reader_->mutex);
  auto rows = reader_->exec("SELECT state, COUNT(*) FROM " + table("events") + " GROUP BY state");
  if (!rows) return rows.error();
  OutboxCounts counts;
  for (int i = 0; i < rows->rows(); ++i) {
    counts.set(rows->integer(i, 0), rows->integer(i, 1));
  }
  auto oldest = reader_->exec("SELECT accepted_at_ms FROM " + table("events") +
                                  " WHERE state IN ($1, $2) ORDER BY id LIMIT 1",
                              {p(stored(EventState::kPending)), p(stored(EventState::kBatched))});
  if (!oldest) return oldest.error();
  if (oldest->rows() == 1) counts.oldest_pending_ms = oldest->integer(0, 0);
  // Read after the query: an insert that began later committed after it, so is not in it; one
  // that began before may be (its commit is seen by the server before the writer hears of it).
  counts.inserts = inserts_begun();
  return counts;
}

Expected<bool> PgOutbox::has_outstanding() {
  std::lock_guard lock(reader_->mutex);
  auto row =
      reader_->exec("SELECT EXISTS(SELECT 1 FROM " + table("events") + " WHERE state IN ($1, $2))",
                    {p(stored(EventState::kPending)), p(stored(EventState::kBatched))});
  if (!row) return row.error();
  return row->text(0, 0) == "t";
}

Expected<RequeueResult> PgOutbox::requeue(const std::string& reason,
                                          const std::string& customer_key,
                                          std::chrono::milliseconds) {
  if (mode_ == StoreMode::kReadOnly) return storage("the outbox is open read-only");
  std::lock_guard lock(engine_->mutex);
  auto moved = engine_->exec("UPDATE " + table("events") +
                                 " SET state=$1, reason='', next_attempt_ms=NULL, batch_id=NULL "
                                 "WHERE state IN ($2, $3) AND ($4='' OR reason=$4) AND "
                                 "($5='' OR customer_key=$5)",
                             {p(stored(EventState::kPending)), p(stored(EventState::kParked)),
                              p(stored(EventState::kDead)), p(reason), p(customer_key)});
  if (!moved) return moved.error();
  return RequeueResult{moved->affected(), false, true};
}

Expected<std::vector<ReasonCount>> PgOutbox::reason_counts() {
  std::lock_guard lock(reader_->mutex);
  auto rows = reader_->exec("SELECT state, reason, COUNT(*) FROM " + table("events") +
                                " WHERE state IN ($1, $2) GROUP BY state, reason "
                                "ORDER BY 3 DESC, 1, 2",
                            {p(stored(EventState::kParked)), p(stored(EventState::kDead))});
  if (!rows) return rows.error();
  std::vector<ReasonCount> out;
  for (int i = 0; i < rows->rows(); ++i) {
    out.push_back(ReasonCount{static_cast<EventState>(rows->integer(i, 0)), rows->text(i, 1),
                              rows->integer(i, 2)});
  }
  return out;
}

Expected<std::optional<BatchFailure>> PgOutbox::latest_batch_failure() {
  std::lock_guard lock(reader_->mutex);
  auto rows = reader_->exec("SELECT id, sink, state, attempts, last_error, request_id FROM " +
                                table("batches") +
                                " WHERE last_error<>'' AND state IN ($1, $2) "
                                "ORDER BY next_attempt_ms DESC, id DESC LIMIT 1",
                            {p(kBatchSending), p(kBatchDead)});
  if (!rows) return rows.error();
  if (rows->rows() == 0) return std::optional<BatchFailure>();
  BatchFailure failure;
  failure.batch_id = rows->integer(0, 0);
  failure.sink = static_cast<Sink>(rows->integer(0, 1));
  failure.dead = rows->integer(0, 2) == kBatchDead;
  failure.attempts = static_cast<int>(rows->integer(0, 3));
  failure.last_error = rows->text(0, 4);
  failure.request_id = rows->text(0, 5);
  return std::optional<BatchFailure>(std::move(failure));
}

Expected<std::vector<LedgerTotal>> PgOutbox::ledger_totals(std::int64_t since, std::int64_t until) {
  std::lock_guard lock(reader_->mutex);
  // Rows delivered without a batch (a cost below one unit, carried) have nothing at Stripe yet.
  auto rows = reader_->exec(
      "SELECT e.sink, e.customer_key, e.customer_id, e.dimension, "
      "CASE WHEN e.sink=0 THEN b.target ELSE '' END, SUM(e.quantity), COUNT(*) FROM " +
          table("events") + " e JOIN " + table("batches") +
          " b ON b.id = e.batch_id WHERE e.state=$1 AND e.event_time>=$2 AND e.event_time<$3 "
          "GROUP BY 1, 2, 3, 4, 5 ORDER BY 3, 1, 4, 5",
      {p(stored(EventState::kDelivered)), p(since), p(until)});
  if (!rows) return rows.error();
  std::vector<LedgerTotal> out;
  for (int i = 0; i < rows->rows(); ++i) {
    out.push_back(LedgerTotal{static_cast<Sink>(rows->integer(i, 0)), rows->text(i, 1),
                              rows->text(i, 2), rows->text(i, 3), rows->text(i, 4),
                              rows->integer(i, 5), rows->integer(i, 6)});
  }
  return out;
}

Expected<std::vector<LedgerRow>> PgOutbox::ledger_rows(std::int64_t since, std::int64_t until) {
  std::lock_guard lock(reader_->mutex);
  auto rows = reader_->exec(
      "SELECT e.call_id, e.customer_key, e.customer_id, e.sink, e.dimension, e.model, "
      "e.prompt_tokens, e.completion_tokens, e.cost, e.quantity, e.event_time, "
      "COALESCE(b.request_id, ''), COALESCE(b.delivered_ms, e.updated_ms) FROM " +
          table("events") + " e LEFT JOIN " + table("batches") +
          " b ON b.id = e.batch_id WHERE e.state=$1 AND e.event_time>=$2 AND e.event_time<$3 "
          "ORDER BY e.event_time, e.id",
      {p(stored(EventState::kDelivered)), p(since), p(until)});
  if (!rows) return rows.error();
  std::vector<LedgerRow> out;
  out.reserve(static_cast<std::size_t>(rows->rows()));
  for (int i = 0; i < rows->rows(); ++i) {
    LedgerRow ledger;
    ledger.call_id = rows->text(i, 0);
    ledger.customer_key = rows->text(i, 1);
    ledger.customer_id = rows->text(i, 2);
    ledger.sink = static_cast<Sink>(rows->integer(i, 3));
    ledger.dimension = rows->text(i, 4);
    ledger.model = rows->text(i, 5);
    ledger.prompt_tokens = rows->integer(i, 6);
    ledger.completion_tokens = rows->integer(i, 7);
    ledger.cost = rows->real(i, 8);
    ledger.quantity = rows->integer(i, 9);
    ledger.event_time = rows->integer(i, 10);
    ledger.request_id = rows->text(i, 11);
    ledger.delivered_ms = rows->integer(i, 12);
    out.push_back(std::move(ledger));
  }
  return out;
}

}  // namespace stripe_billing
