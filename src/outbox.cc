#include "outbox.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

#include "usage_record.h"

namespace stripe_billing {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events(
  id INTEGER PRIMARY KEY,
  call_id TEXT NOT NULL,
  dimension TEXT NOT NULL,
  sink INTEGER NOT NULL DEFAULT 0,
  customer_key TEXT NOT NULL,
  quantity INTEGER NOT NULL,
  event_time INTEGER NOT NULL,
  accepted_at_ms INTEGER NOT NULL,
  model TEXT NOT NULL DEFAULT '',
  cost REAL NOT NULL DEFAULT 0,
  prompt_tokens INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  state INTEGER NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  next_attempt_ms INTEGER,
  batch_id INTEGER,
  updated_ms INTEGER NOT NULL,
  customer_id TEXT NOT NULL DEFAULT '',
  UNIQUE(call_id, dimension, sink));
CREATE INDEX IF NOT EXISTS events_by_state ON events(state, next_attempt_ms);
CREATE INDEX IF NOT EXISTS events_by_batch ON events(batch_id) WHERE batch_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS batches(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  idempotency_key TEXT NOT NULL UNIQUE,
  target TEXT NOT NULL,
  customer_id TEXT NOT NULL,
  customer_key TEXT NOT NULL,
  quantity INTEGER NOT NULL,
  timestamp INTEGER NOT NULL,
  state INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_ms INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  delivered_ms INTEGER,
  request_id TEXT NOT NULL DEFAULT '',
  last_error TEXT NOT NULL DEFAULT '',
  sink INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS batches_by_state ON batches(state, next_attempt_ms);
CREATE TABLE IF NOT EXISTS carries(key TEXT PRIMARY KEY, remainder INTEGER NOT NULL);
)sql";

// Files written before billing meters had no `sink`: every row was a usage record. The events
// table is rebuilt (its uniqueness now includes the sink), in one transaction with the schema.
constexpr const char* kMigrateBeforeSchema = R"sql(
DROP INDEX IF EXISTS events_by_state;
DROP INDEX IF EXISTS events_by_batch;
ALTER TABLE events RENAME TO events_v1;
ALTER TABLE batches ADD COLUMN sink INTEGER NOT NULL DEFAULT 0;
)sql";
constexpr const char* kMigrateAfterSchema = R"sql(
INSERT INTO events(id, call_id, dimension, sink, customer_key, quantity, event_time,
  accepted_at_ms, model, cost, prompt_tokens, completion_tokens, state, reason, next_attempt_ms,
  batch_id, updated_ms, customer_id)
SELECT id, call_id, dimension, 0, customer_key, quantity, event_time, accepted_at_ms, model, cost,
  prompt_tokens, completion_tokens, state, reason, next_attempt_ms, batch_id, updated_ms,
  COALESCE((SELECT customer_id FROM batches WHERE batches.id = events_v1.batch_id), '')
FROM events_v1;
DROP TABLE events_v1;
)sql";

// Event states as stored; the numbers are part of the file format.
int stored(EventState state) { return static_cast<int>(state); }
constexpr int kBatchSending = 1;
constexpr int kBatchDelivered = 2;
constexpr int kBatchDead = 4;
constexpr int kBatchDissolved = 5;  // never sent successfully; its events went back to pending

Error storage_error(sqlite3* db, const std::string& what) {
  return Error{ErrorCode::kStorage, what + ": " + (db ? sqlite3_errmsg(db) : "no database"),
               std::nullopt};
}

// A prepared statement that finalizes itself.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql) : Statement(db, sql.c_str()) {}
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &statement_, nullptr) != SQLITE_OK) statement_ = nullptr;
  }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  bool ok() const { return statement_ != nullptr; }
  Statement& bind(int index, std::int64_t value) {
    sqlite3_bind_int64(statement_, index, value);
    return *this;
  }
  // The text is not copied: it must outlive the next step() (every caller binds and runs).
  Statement& bind(int index, const std::string& value) {
    sqlite3_bind_text(statement_, index, value.data(), static_cast<int>(value.size()),
                      SQLITE_STATIC);
    return *this;
  }
  Statement& bind(int index, double value) {
    sqlite3_bind_double(statement_, index, value);
    return *this;
  }
  Statement& bind_null(int index) {
    sqlite3_bind_null(statement_, index);
    return *this;
  }
  int step() { return sqlite3_step(statement_); }
  void reset() {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }
  std::int64_t integer(int column) { return sqlite3_column_int64(statement_, column); }
  double real(int column) { return sqlite3_column_double(statement_, column); }
  std::string text(int column) {
    const auto* data = reinterpret_cast<const char*>(sqlite3_column_text(statement_, column));
    return data ? std::string(data, static_cast<std::size_t>(sqlite3_column_bytes(statement_, column)))
                : std::string();
  }
  // Runs a statement that returns no rows.
  bool run() {
    const int rc = step();
    reset();
    return rc == SQLITE_DONE;
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* statement_ = nullptr;
};

// BEGIN IMMEDIATE … COMMIT, rolled back unless commit() succeeded.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {
    began_ = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  ~Transaction() {
    if (began_ && !committed_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  bool began() const { return began_; }
  bool commit() {
    committed_ = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK;
    return committed_;
  }

 private:
  sqlite3* db_;
  bool began_ = false;
  bool committed_ = false;
};

std::string random_instance_id() {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device device;
  std::uniform_int_distribution<int> pick(0, 35);
  std::string id;
  for (int i = 0; i < 16; ++i) id.push_back(kAlphabet[pick(device)]);
  return id;
}

std::string in_list(const std::vector<std::int64_t>& ids) {
  std::string list;
  for (std::int64_t id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
  return "(" + list + ")";
}

constexpr const char* kEventColumns =
    "id, call_id, dimension, sink, model, customer_key, quantity, event_time, accepted_at_ms, "
    "customer_id";

// A row selected with kEventColumns.
StoredEvent read_event(Statement& row) {
  StoredEvent event;
  event.id = row.integer(0);
  event.call_id = row.text(1);
  event.dimension = row.text(2);
  event.sink = static_cast<Sink>(row.integer(3));
  event.model = row.text(4);
  event.customer_key = row.text(5);
  event.quantity = row.integer(6);
  event.event_time = row.integer(7);
  event.accepted_at_ms = row.integer(8);
  event.customer_id = row.text(9);
  return event;
}

template <typename Row, typename Read>
Expected<std::vector<Row>> collect_rows(sqlite3* db, Statement& select, const char* what,
                                        Read read) {
  std::vector<Row> rows;
  int rc;
  while ((rc = select.step()) == SQLITE_ROW) rows.push_back(read(select));
  if (rc != SQLITE_DONE) return storage_error(db, what);
  return rows;
}

bool has_column(sqlite3* db, const char* table, const char* column) {
  const std::string sql = std::string("SELECT ") + column + " FROM " + table + " LIMIT 0";
  sqlite3_stmt* statement = nullptr;
  const bool ok = sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr) == SQLITE_OK;
  sqlite3_finalize(statement);
  return ok;
}

bool exec(sqlite3* db, const char* sql, char** message) {
  return sqlite3_exec(db, sql, nullptr, nullptr, message) == SQLITE_OK;
}

bool fail_with_errmsg(sqlite3* db, char** message) {
  *message = sqlite3_mprintf("%s", sqlite3_errmsg(db));
  return false;
}

bool create_schema(sqlite3* db, char** message) {
  Transaction transaction(db);
  if (!transaction.began()) return fail_with_errmsg(db, message);
  const bool migrate = has_column(db, "events", "id") && !has_column(db, "events", "sink");
  if (migrate && !exec(db, kMigrateBeforeSchema, message)) return false;
  if (!exec(db, kSchema, message)) return false;
  if (migrate && !exec(db, kMigrateAfterSchema, message)) return false;
  return transaction.commit() || fail_with_errmsg(db, message);
}

std::string carry_key(const NewEvent& event) {
  return event.customer_key + '\n' + event.dimension + '\n' +
         std::to_string(static_cast<int>(event.sink));
}

}  // namespace

const char* to_string(Sink sink) noexcept {
  switch (sink) {
    case Sink::kUsageRecord: return "usage_record";
    case Sink::kMeterEvent: return "meter_event";
  }
  return "unknown";
}

const char* to_string(EventState state) noexcept {
  switch (state) {
    case EventState::kPending: return "pending";
    case EventState::kBatched: return "sending";
    case EventState::kDelivered: return "delivered";
    case EventState::kParked: return "parked";
    case EventState::kDead: return "dead";
  }
  return "unknown";
}

Expected<std::unique_ptr<Outbox>> Outbox::open(const std::string& path, bool full_sync) {
  if (path != ":memory:") {
    // Create it 0600 before SQLite does, so usage data is never readable by others.
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      return Error{ErrorCode::kStorage, "cannot create the outbox file " + path, std::nullopt};
    }
    ::close(fd);
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    Error error = storage_error(db, "cannot open the outbox " + path);
    sqlite3_close(db);
    return error;
  }
  sqlite3_busy_timeout(db, 5000);
  const std::string pragmas = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=") +
                              (full_sync ? "FULL" : "NORMAL") +
                              "; PRAGMA foreign_keys=OFF; PRAGMA cache_size=-8192;";
  char* message = nullptr;
  if (sqlite3_exec(db, pragmas.c_str(), nullptr, nullptr, &message) != SQLITE_OK ||
      !create_schema(db, &message)) {
    std::string text = message ? message : "unknown";
    sqlite3_free(message);
    sqlite3_close(db);
    return Error{ErrorCode::kStorage, "cannot prepare the outbox " + path + ": " + text,
                 std::nullopt};
  }
  std::string instance_id;
  {
    Statement select(db, "SELECT value FROM meta WHERE key='instance_id'");
    if (select.ok() && select.step() == SQLITE_ROW) instance_id = select.text(0);
  }
  if (instance_id.empty()) {
    instance_id = random_instance_id();
    Statement insert(db, "INSERT INTO meta(key, value) VALUES('instance_id', ?)");
    if (!insert.ok() || !insert.bind(1, instance_id).run()) {
      Error error = storage_error(db, "cannot initialise the outbox " + path);
      sqlite3_close(db);
      return error;
    }
  }
  return std::unique_ptr<Outbox>(new Outbox(db, std::move(instance_id)));
}

Expected<std::unique_ptr<Outbox>> Outbox::open_for_reading(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) {
    return Error{ErrorCode::kStorage, "no outbox file at " + path, std::nullopt};
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    Error error = storage_error(db, "cannot open the outbox " + path);
    sqlite3_close(db);
    return error;
  }
  sqlite3_busy_timeout(db, 5000);
  if (!has_column(db, "events", "sink")) {
    sqlite3_close(db);
    return Error{ErrorCode::kStorage,
                 "the outbox " + path + " is not in the current format (start the library on it "
                 "once to migrate it)",
                 std::nullopt};
  }
  std::string instance_id;
  Statement select(db, "SELECT value FROM meta WHERE key='instance_id'");
  if (select.ok() && select.step() == SQLITE_ROW) instance_id = select.text(0);
  return std::unique_ptr<Outbox>(new Outbox(db, std::move(instance_id)));
}

Outbox::Outbox(sqlite3* db, std::string instance_id)
    : db_(db), instance_id_(std::move(instance_id)) {}

Outbox::~Outbox() { sqlite3_close(db_); }

Expected<InsertResult> Outbox::insert(const std::vector<NewEvent>& events) {
  std::lock_guard lock(mutex_);
  Transaction transaction(db_);
  if (!transaction.began()) return storage_error(db_, "cannot begin an outbox write");
  Statement statement(db_,
                      "INSERT OR IGNORE INTO events(call_id, dimension, sink, customer_key, "
                      "quantity, event_time, accepted_at_ms, model, cost, prompt_tokens, "
                      "completion_tokens, state, reason, next_attempt_ms, updated_ms) "
                      "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
  if (!statement.ok()) return storage_error(db_, "cannot prepare the outbox write");
  InsertResult result;
  std::map<std::string, std::int64_t> carried;  // remainders this transaction moves
  static const std::string kBelowOneUnit = "below_one_unit_carried";
  for (const NewEvent& event : events) {
    std::int64_t quantity = event.quantity;
    EventState state = event.state;
    const std::string* reason = &event.reason;
    std::string key;
    RoundedAmount rounded;
    if (event.amount_micros) {
      key = carry_key(event);
      auto it = carried.find(key);
      auto before = it != carried.end() ? Expected<std::int64_t>(it->second) : carry(key);
      if (!before) return std::move(before).error();
      rounded = round_with_carry(*event.amount_micros, *before);
      quantity = rounded.quantity;
      if (quantity == 0 && state == EventState::kPending) {
        // Nothing to bill yet: the amount lives on in the carry and is billed with a later call.
        state = EventState::kDelivered;
        reason = &kBelowOneUnit;
      }
    }
    statement.bind(1, event.call_id).bind(2, event.dimension)
        .bind(3, static_cast<std::int64_t>(event.sink)).bind(4, event.customer_key)
        .bind(5, quantity).bind(6, event.event_time).bind(7, event.accepted_at_ms)
        .bind(8, event.model).bind(9, event.cost).bind(10, event.prompt_tokens)
        .bind(11, event.completion_tokens).bind(12, static_cast<std::int64_t>(stored(state)))
        .bind(13, *reason).bind(15, event.accepted_at_ms);
    if (event.next_attempt_ms) {
      statement.bind(14, *event.next_attempt_ms);
    } else {
      statement.bind_null(14);
    }
    if (!statement.run()) return storage_error(db_, "outbox write failed");
    if (sqlite3_changes(db_) == 1) {
      ++result.inserted;
      if (event.amount_micros) carried[key] = rounded.carry;
    } else {
      ++result.duplicates;
    }
  }
  if (!carried.empty()) {
    Statement save(db_, "INSERT OR REPLACE INTO carries(key, remainder) VALUES(?, ?)");
    if (!save.ok()) return storage_error(db_, "cannot prepare the carry write");
    for (const auto& [key, remainder] : carried) {
      if (!save.bind(1, key).bind(2, remainder).run()) {
        return storage_error(db_, "cannot write the carry");
      }
    }
  }
  if (!transaction.commit()) return storage_error(db_, "outbox commit failed");
  for (auto& [key, remainder] : carried) carries_[key] = remainder;
  return result;
}

Expected<std::int64_t> Outbox::carry(const std::string& key) {
  if (auto it = carries_.find(key); it != carries_.end()) return it->second;
  Statement select(db_, "SELECT remainder FROM carries WHERE key=?");
  if (!select.ok()) return storage_error(db_, "cannot read the carry");
  select.bind(1, key);
  const int rc = select.step();
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return storage_error(db_, "cannot read the carry");
  const std::int64_t remainder = rc == SQLITE_ROW ? select.integer(0) : 0;
  carries_[key] = remainder;
  return remainder;
}

Expected<std::vector<StoredEvent>> Outbox::due_events(std::int64_t now_ms, int limit) {
  std::lock_guard lock(mutex_);
  {
    Statement wake(db_, "UPDATE events SET state=?, updated_ms=? WHERE state=? AND "
                        "next_attempt_ms IS NOT NULL AND next_attempt_ms<=?");
    if (!wake.ok() || !wake.bind(1, static_cast<std::int64_t>(stored(EventState::kPending)))
                           .bind(2, now_ms)
                           .bind(3, static_cast<std::int64_t>(stored(EventState::kParked)))
                           .bind(4, now_ms)
                           .run()) {
      return storage_error(db_, "cannot wake parked events");
    }
  }
  Statement select(db_, "SELECT " + std::string(kEventColumns) +
                            " FROM events WHERE state=? ORDER BY state, next_attempt_ms, id LIMIT ?");
  if (!select.ok()) return storage_error(db_, "cannot read pending events");
  select.bind(1, static_cast<std::int64_t>(stored(EventState::kPending)))
      .bind(2, static_cast<std::int64_t>(limit));
  return collect_rows<StoredEvent>(db_, select, "cannot read pending events", read_event);
}

Expected<std::vector<StoredEvent>> Outbox::batch_events(std::int64_t batch_id) {
  std::lock_guard lock(mutex_);
  Statement select(db_, "SELECT " + std::string(kEventColumns) +
                            " FROM events WHERE batch_id=? ORDER BY id");
  if (!select.ok()) return storage_error(db_, "cannot read a batch's events");
  select.bind(1, batch_id);
  return collect_rows<StoredEvent>(db_, select, "cannot read a batch's events", read_event);
}

Expected<void> Outbox::park(const std::vector<std::int64_t>& event_ids, const std::string& reason,
                            std::optional<std::int64_t> next_attempt_ms) {
  if (event_ids.empty()) return {};
  std::lock_guard lock(mutex_);
  Statement statement(db_, ("UPDATE events SET state=?, reason=?, next_attempt_ms=? WHERE id IN " +
                            in_list(event_ids)).c_str());
  if (!statement.ok()) return storage_error(db_, "cannot park events");
  statement.bind(1, static_cast<std::int64_t>(stored(EventState::kParked))).bind(2, reason);
  if (next_attempt_ms) {
    statement.bind(3, *next_attempt_ms);
  } else {
    statement.bind_null(3);
  }
  if (!statement.run()) return storage_error(db_, "cannot park events");
  return {};
}

Expected<void> Outbox::kill_events(const std::vector<std::int64_t>& event_ids,
                                   const std::string& reason) {
  if (event_ids.empty()) return {};
  std::lock_guard lock(mutex_);
  Statement statement(db_, ("UPDATE events SET state=?, reason=?, next_attempt_ms=NULL WHERE id IN " +
                            in_list(event_ids)).c_str());
  if (!statement.ok() ||
      !statement.bind(1, static_cast<std::int64_t>(stored(EventState::kDead))).bind(2, reason).run()) {
    return storage_error(db_, "cannot mark events dead");
  }
  return {};
}

Expected<std::vector<Batch>> Outbox::create_batches(std::vector<NewBatch> batches,
                                                    std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  Transaction transaction(db_);
  if (!transaction.began()) return storage_error(db_, "cannot begin a batch");
  Statement insert(db_, "INSERT INTO batches(idempotency_key, target, customer_id, customer_key, "
                        "quantity, timestamp, state, next_attempt_ms, created_ms, sink) "
                        "VALUES('', ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  Statement key(db_, "UPDATE batches SET idempotency_key=? WHERE id=?");
  Statement claim(db_, "UPDATE events SET state=?, batch_id=?, customer_id=?, updated_ms=? "
                       "WHERE state=? AND id=?");
  if (!insert.ok() || !key.ok() || !claim.ok()) return storage_error(db_, "cannot create a batch");
  std::vector<Batch> created;
  created.reserve(batches.size());
  for (NewBatch& spec : batches) {
    Batch& batch = spec.batch;
    if (!insert.bind(1, batch.target).bind(2, batch.customer_id).bind(3, batch.customer_key)
             .bind(4, batch.quantity).bind(5, batch.timestamp)
             .bind(6, static_cast<std::int64_t>(kBatchSending)).bind(7, now_ms).bind(8, now_ms)
             .bind(9, static_cast<std::int64_t>(batch.sink)).run()) {
      return storage_error(db_, "cannot create a batch");
    }
    batch.id = sqlite3_last_insert_rowid(db_);
    // The instance id keeps keys unique even if the outbox file is ever recreated.
    batch.idempotency_key = "sb1-" + instance_id_ + "-b" + std::to_string(batch.id);
    if (!key.bind(1, batch.idempotency_key).bind(2, batch.id).run()) {
      return storage_error(db_, "cannot create a batch");
    }
    for (const BatchMember& member : spec.members) {
      if (!claim.bind(1, static_cast<std::int64_t>(stored(EventState::kBatched)))
               .bind(2, batch.id).bind(3, member.customer_id).bind(4, now_ms)
               .bind(5, static_cast<std::int64_t>(stored(EventState::kPending)))
               .bind(6, member.event_id).run()) {
        return storage_error(db_, "cannot create a batch");
      }
      if (sqlite3_changes(db_) != 1) {
        return Error{ErrorCode::kStorage, "events of a batch were no longer pending", std::nullopt};
      }
    }
    batch.created_ms = now_ms;
    batch.attempts = 0;
    batch.events = static_cast<std::int64_t>(spec.members.size());
    created.push_back(std::move(batch));
  }
  if (!transaction.commit()) return storage_error(db_, "cannot commit a batch");
  return created;
}

Expected<Batch> Outbox::create_batch(const std::string& target, const std::string& customer_id,
                                     const std::string& customer_key, std::int64_t quantity,
                                     std::int64_t timestamp,
                                     const std::vector<std::int64_t>& event_ids,
                                     std::int64_t now_ms) {
  NewBatch spec;
  spec.batch.sink = Sink::kUsageRecord;
  spec.batch.target = target;
  spec.batch.customer_id = customer_id;
  spec.batch.customer_key = customer_key;
  spec.batch.quantity = quantity;
  spec.batch.timestamp = timestamp;
  for (std::int64_t id : event_ids) spec.members.push_back({id, customer_id});
  std::vector<NewBatch> specs;
  specs.push_back(std::move(spec));
  auto created = create_batches(std::move(specs), now_ms);
  if (!created) return std::move(created).error();
  return std::move(created->front());
}

Expected<std::vector<Batch>> Outbox::due_batches(std::int64_t now_ms, int limit) {
  std::lock_guard lock(mutex_);
  Statement select(db_, "SELECT id, idempotency_key, target, customer_id, customer_key, quantity, "
                        "timestamp, attempts, created_ms, "
                        "(SELECT COUNT(*) FROM events WHERE batch_id=batches.id), sink FROM batches "
                        "WHERE state=? AND next_attempt_ms<=? ORDER BY next_attempt_ms, id LIMIT ?");
  if (!select.ok()) return storage_error(db_, "cannot read batches");
  select.bind(1, static_cast<std::int64_t>(kBatchSending)).bind(2, now_ms)
      .bind(3, static_cast<std::int64_t>(limit));
  std::vector<Batch> batches;
  int rc;
  while ((rc = select.step()) == SQLITE_ROW) {
    Batch batch;
    batch.id = select.integer(0);
    batch.idempotency_key = select.text(1);
    batch.target = select.text(2);
    batch.customer_id = select.text(3);
    batch.customer_key = select.text(4);
    batch.quantity = select.integer(5);
    batch.timestamp = select.integer(6);
    batch.attempts = static_cast<int>(select.integer(7));
    batch.created_ms = select.integer(8);
    batch.events = select.integer(9);
    batch.sink = static_cast<Sink>(select.integer(10));
    batches.push_back(std::move(batch));
  }
  if (rc != SQLITE_DONE) return storage_error(db_, "cannot read batches");
  return batches;
}

Expected<void> Outbox::batch_delivered(std::int64_t batch_id, const std::string& request_id,
                                       std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  Transaction transaction(db_);
  Statement batch(db_, "UPDATE batches SET state=?, delivered_ms=?, request_id=? WHERE id=?");
  Statement events(db_, "UPDATE events SET state=?, updated_ms=? WHERE batch_id=?");
  if (!transaction.began() || !batch.ok() || !events.ok() ||
      !batch.bind(1, static_cast<std::int64_t>(kBatchDelivered)).bind(2, now_ms)
           .bind(3, request_id).bind(4, batch_id).run() ||
      !events.bind(1, static_cast<std::int64_t>(stored(EventState::kDelivered))).bind(2, now_ms)
           .bind(3, batch_id).run() ||
      !transaction.commit()) {
    return storage_error(db_, "cannot record a delivery");
  }
  return {};
}

Expected<void> Outbox::batch_retry_later(std::int64_t batch_id, int attempts,
                                         std::int64_t next_attempt_ms,
                                         const std::string& last_error) {
  std::lock_guard lock(mutex_);
  Statement statement(db_, "UPDATE batches SET attempts=?, next_attempt_ms=?, last_error=? WHERE id=?");
  if (!statement.ok() || !statement.bind(1, static_cast<std::int64_t>(attempts))
                              .bind(2, next_attempt_ms).bind(3, last_error).bind(4, batch_id).run()) {
    return storage_error(db_, "cannot schedule a retry");
  }
  return {};
}

Expected<void> Outbox::batch_dead(std::int64_t batch_id, const std::string& reason,
                                  const std::string& request_id) {
  std::lock_guard lock(mutex_);
  Transaction transaction(db_);
  Statement batch(db_, "UPDATE batches SET state=?, last_error=?, request_id=? WHERE id=?");
  Statement events(db_, "UPDATE events SET state=?, reason=? WHERE batch_id=?");
  if (!transaction.began() || !batch.ok() || !events.ok() ||
      !batch.bind(1, static_cast<std::int64_t>(kBatchDead)).bind(2, reason).bind(3, request_id)
           .bind(4, batch_id).run() ||
      !events.bind(1, static_cast<std::int64_t>(stored(EventState::kDead))).bind(2, reason)
           .bind(3, batch_id).run() ||
      !transaction.commit()) {
    return storage_error(db_, "cannot record a dead batch");
  }
  return {};
}

Expected<void> Outbox::dissolve_batch(std::int64_t batch_id) {
  std::lock_guard lock(mutex_);
  Transaction transaction(db_);
  Statement events(db_, "UPDATE events SET state=?, batch_id=NULL, customer_id='' WHERE batch_id=?");
  // Kept, not deleted: its id (and so its idempotency key) must never be handed out again.
  Statement batch(db_, "UPDATE batches SET state=? WHERE id=?");
  if (!transaction.began() || !events.ok() || !batch.ok() ||
      !events.bind(1, static_cast<std::int64_t>(stored(EventState::kPending))).bind(2, batch_id).run() ||
      !batch.bind(1, static_cast<std::int64_t>(kBatchDissolved)).bind(2, batch_id).run() ||
      !transaction.commit()) {
    return storage_error(db_, "cannot dissolve a batch");
  }
  return {};
}

Expected<OutboxCounts> Outbox::counts() {
  std::lock_guard lock(mutex_);
  Statement select(db_, "SELECT state, COUNT(*) FROM events GROUP BY state");
  Statement oldest(db_, "SELECT MIN(accepted_at_ms) FROM events WHERE state IN (?, ?)");
  if (!select.ok() || !oldest.ok()) return storage_error(db_, "cannot count the outbox");
  OutboxCounts counts;
  while (select.step() == SQLITE_ROW) {
    const std::int64_t n = select.integer(1);
    switch (static_cast<EventState>(select.integer(0))) {
      case EventState::kPending: counts.pending = n; break;
      case EventState::kBatched: counts.batched = n; break;
      case EventState::kDelivered: counts.delivered = n; break;
      case EventState::kParked: counts.parked = n; break;
      case EventState::kDead: counts.dead = n; break;
    }
  }
  oldest.bind(1, static_cast<std::int64_t>(stored(EventState::kPending)))
      .bind(2, static_cast<std::int64_t>(stored(EventState::kBatched)));
  if (oldest.step() == SQLITE_ROW) counts.oldest_pending_ms = oldest.integer(0);
  return counts;
}

Expected<bool> Outbox::has_outstanding() {
  std::lock_guard lock(mutex_);
  Statement select(db_, "SELECT EXISTS(SELECT 1 FROM events WHERE state IN (?, ?))");
  if (!select.ok()) return storage_error(db_, "cannot read the outbox");
  select.bind(1, static_cast<std::int64_t>(stored(EventState::kPending)))
      .bind(2, static_cast<std::int64_t>(stored(EventState::kBatched)));
  if (select.step() != SQLITE_ROW) return storage_error(db_, "cannot read the outbox");
  return select.integer(0) != 0;
}

Expected<std::vector<std::string>> Outbox::open_targets(Sink sink) {
  std::lock_guard lock(mutex_);
  Statement select(db_, "SELECT DISTINCT target FROM batches WHERE state=? AND sink=?");
  if (!select.ok()) return storage_error(db_, "cannot read batches");
  select.bind(1, static_cast<std::int64_t>(kBatchSending))
      .bind(2, static_cast<std::int64_t>(sink));
  std::vector<std::string> targets;
  while (select.step() == SQLITE_ROW) targets.push_back(select.text(0));
  return targets;
}

Expected<std::int64_t> Outbox::prune_delivered(std::int64_t older_than_ms) {
  std::lock_guard lock(mutex_);
  Transaction transaction(db_);
  Statement events(db_, "DELETE FROM events WHERE state=? AND updated_ms<?");
  Statement batches(db_, "DELETE FROM batches WHERE state=? AND delivered_ms<?");
  if (!transaction.began() || !events.ok() || !batches.ok() ||
      !events.bind(1, static_cast<std::int64_t>(stored(EventState::kDelivered)))
           .bind(2, older_than_ms).run()) {
    return storage_error(db_, "cannot prune the ledger");
  }
  const std::int64_t pruned = sqlite3_changes(db_);
  if (!batches.bind(1, static_cast<std::int64_t>(kBatchDelivered)).bind(2, older_than_ms).run() ||
      !transaction.commit()) {
    return storage_error(db_, "cannot prune the ledger");
  }
  return pruned;
}

Expected<std::vector<LedgerTotal>> Outbox::ledger_totals(std::int64_t since, std::int64_t until) {
  std::lock_guard lock(mutex_);
  // Rows delivered without a batch (a cost below one unit, carried) have nothing at Stripe yet.
  Statement select(db_, "SELECT e.sink, e.customer_key, e.customer_id, e.dimension, "
                        "CASE WHEN e.sink=0 THEN b.target ELSE '' END, SUM(e.quantity), COUNT(*) "
                        "FROM events e JOIN batches b ON b.id = e.batch_id "
                        "WHERE e.state=? AND e.event_time>=? AND e.event_time<? "
                        "GROUP BY 1, 2, 3, 4, 5 ORDER BY 3, 1, 4, 5");
  if (!select.ok()) return storage_error(db_, "cannot read the ledger");
  select.bind(1, static_cast<std::int64_t>(stored(EventState::kDelivered))).bind(2, since)
      .bind(3, until);
  return collect_rows<LedgerTotal>(db_, select, "cannot read the ledger", [](Statement& row) {
    return LedgerTotal{static_cast<Sink>(row.integer(0)), row.text(1), row.text(2), row.text(3),
                       row.text(4), row.integer(5), row.integer(6)};
  });
}

Expected<std::int64_t> Outbox::requeue(const std::string& reason, const std::string& customer_key) {
  std::lock_guard lock(mutex_);
  Statement statement(db_, "UPDATE events SET state=?, reason='', next_attempt_ms=NULL, batch_id=NULL "
                           "WHERE state IN (?, ?) AND (?='' OR reason=?) AND (?='' OR customer_key=?)");
  if (!statement.ok() ||
      !statement.bind(1, static_cast<std::int64_t>(stored(EventState::kPending)))
           .bind(2, static_cast<std::int64_t>(stored(EventState::kParked)))
           .bind(3, static_cast<std::int64_t>(stored(EventState::kDead)))
           .bind(4, reason).bind(5, reason).bind(6, customer_key).bind(7, customer_key).run()) {
    return storage_error(db_, "cannot requeue events");
  }
  return static_cast<std::int64_t>(sqlite3_changes(db_));
}

Expected<std::vector<ReasonCount>> Outbox::reason_counts() {
  std::lock_guard lock(mutex_);
  Statement select(db_, "SELECT state, reason, COUNT(*) FROM events WHERE state IN (?, ?) "
                        "GROUP BY state, reason ORDER BY 3 DESC, 1, 2");
  if (!select.ok()) return storage_error(db_, "cannot count reasons");
  select.bind(1, static_cast<std::int64_t>(stored(EventState::kParked)))
      .bind(2, static_cast<std::int64_t>(stored(EventState::kDead)));
  return collect_rows<ReasonCount>(db_, select, "cannot count reasons", [](Statement& row) {
    return ReasonCount{static_cast<EventState>(row.integer(0)), row.text(1), row.integer(2)};
  });
}

Expected<std::optional<BatchFailure>> Outbox::latest_batch_failure() {
  std::lock_guard lock(mutex_);
  Statement select(db_, "SELECT id, sink, state, attempts, last_error, request_id FROM batches "
                        "WHERE last_error<>'' AND state IN (?, ?) "
                        "ORDER BY next_attempt_ms DESC, id DESC LIMIT 1");
  if (!select.ok()) return storage_error(db_, "cannot read batches");
  select.bind(1, static_cast<std::int64_t>(kBatchSending))
      .bind(2, static_cast<std::int64_t>(kBatchDead));
  const int rc = select.step();
  if (rc == SQLITE_DONE) return std::optional<BatchFailure>();
  if (rc != SQLITE_ROW) return storage_error(db_, "cannot read batches");
  BatchFailure failure;
  failure.batch_id = select.integer(0);
  failure.sink = static_cast<Sink>(select.integer(1));
  failure.dead = select.integer(2) == kBatchDead;
  failure.attempts = static_cast<int>(select.integer(3));
  failure.last_error = select.text(4);
  failure.request_id = select.text(5);
  return std::optional<BatchFailure>(std::move(failure));
}

Expected<std::vector<LedgerRow>> Outbox::ledger_rows(std::int64_t since, std::int64_t until) {
  std::lock_guard lock(mutex_);
  Statement select(db_, "SELECT e.call_id, e.customer_key, e.customer_id, e.sink, e.dimension, "
                        "e.model, e.prompt_tokens, e.completion_tokens, e.cost, e.quantity, "
                        "e.event_time, COALESCE(b.request_id, ''), "
                        "COALESCE(b.delivered_ms, e.updated_ms) "
                        "FROM events e LEFT JOIN batches b ON b.id = e.batch_id "
                        "WHERE e.state=? AND e.event_time>=? AND e.event_time<? "
                        "ORDER BY e.event_time, e.id");
  if (!select.ok()) return storage_error(db_, "cannot read the ledger");
  select.bind(1, static_cast<std::int64_t>(stored(EventState::kDelivered))).bind(2, since)
      .bind(3, until);
  return collect_rows<LedgerRow>(db_, select, "cannot read the ledger", [](Statement& row) {
    LedgerRow ledger;
    ledger.call_id = row.text(0);
    ledger.customer_key = row.text(1);
    ledger.customer_id = row.text(2);
    ledger.sink = static_cast<Sink>(row.integer(3));
    ledger.dimension = row.text(4);
    ledger.model = row.text(5);
    ledger.prompt_tokens = row.integer(6);
    ledger.completion_tokens = row.integer(7);
    ledger.cost = row.real(8);
    ledger.quantity = row.integer(9);
    ledger.event_time = row.integer(10);
    ledger.request_id = row.text(11);
    ledger.delivered_ms = row.integer(12);
    return ledger;
  });
}

}  // namespace stripe_billing
