#include "sqlite_outbox.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <random>
#include <set>
#include <thread>

#include "sqlite_statement.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

constexpr int kSchemaVersion = 3;

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
CREATE INDEX IF NOT EXISTS events_by_state_id ON events(state);
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
  sink INTEGER NOT NULL DEFAULT 0,
  kind INTEGER NOT NULL DEFAULT 0,
  event_count INTEGER NOT NULL DEFAULT 0,
  lease_owner TEXT,
  lease_token INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS batches_by_state ON batches(state, next_attempt_ms);
CREATE TABLE IF NOT EXISTS carries(key TEXT PRIMARY KEY, remainder INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS requeue_requests(
  id INTEGER PRIMARY KEY,
  reason TEXT NOT NULL,
  customer_key TEXT NOT NULL,
  requested_ms INTEGER NOT NULL,
  done_ms INTEGER,
  moved INTEGER NOT NULL DEFAULT 0);
)sql";

// Format 1 had no `sink`: every row was a usage record. The events table is rebuilt (its
// uniqueness now includes the sink), in one transaction with the schema.
constexpr const char* kMigrateV1BeforeSchema = R"sql(
DROP INDEX IF EXISTS events_by_state;
DROP INDEX IF EXISTS events_by_batch;
ALTER TABLE events RENAME TO events_v1;
ALTER TABLE batches ADD COLUMN sink INTEGER NOT NULL DEFAULT 0;
)sql";
constexpr const char* kMigrateV1AfterSchema = R"sql(
INSERT INTO events(id, call_id, dimension, sink, customer_key, quantity, event_time,
  accepted_at_ms, model, cost, prompt_tokens, completion_tokens, state, reason, next_attempt_ms,
  batch_id, updated_ms, customer_id)
SELECT id, call_id, dimension, 0, customer_key, quantity, event_time, accepted_at_ms, model, cost,
  prompt_tokens, completion_tokens, state, reason, next_attempt_ms, batch_id, updated_ms,
  COALESCE((SELECT customer_id FROM batches WHERE batches.id = events_v1.batch_id), '')
FROM events_v1;
DROP TABLE events_v1;
)sql";
// Format 2 (and 1) encoded the batch kind in the target ("meter_event_stream") and kept no claim.
constexpr const char* kMigrateV2AfterSchema = R"sql(
DROP INDEX IF EXISTS events_by_state;
ALTER TABLE batches ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN event_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN lease_owner TEXT;
ALTER TABLE batches ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
UPDATE batches SET
  kind = CASE WHEN sink = 0 THEN 0 WHEN target = 'meter_event_stream' THEN 2 ELSE 1 END,
  target = CASE WHEN sink = 1 AND target = 'meter_event_stream' THEN '' ELSE target END,
  event_count = (SELECT COUNT(*) FROM events WHERE events.batch_id = batches.id);
)sql";

int stored(EventState state) { return static_cast<int>(state); }

std::string random_id(int length) {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device device;
  std::uniform_int_distribution<int> pick(0, 35);
  std::string id;
  for (int i = 0; i < length; ++i) id.push_back(kAlphabet[pick(device)]);
  return id;
}

// ON CONFLICT of the key only: a row that breaks any other constraint fails the write loudly
// instead of vanishing as a "duplicate".
constexpr const char* kInsertEvent =
    "INSERT INTO events(call_id, dimension, sink, customer_key, quantity, event_time, "
    "accepted_at_ms, model, cost, prompt_tokens, completion_tokens, state, reason, "
    "next_attempt_ms, updated_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(call_id, dimension, sink) DO NOTHING";

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

// Creates or migrates the schema in one transaction. `migrated`: the format found, when older.
bool create_schema(sqlite3* db, char** message, int* migrated_from) {
  Transaction transaction(db);
  if (!transaction.began()) return fail_with_errmsg(db, message);
  const bool exists = has_column(db, "events", "id");
  const bool v1 = exists && !has_column(db, "events", "sink");
  const bool v2 = exists && !has_column(db, "batches", "kind");
  *migrated_from = v1 ? 1 : v2 ? 2 : 0;
  if (v1 && !exec(db, kMigrateV1BeforeSchema, message)) return false;
  if (!exec(db, kSchema, message)) return false;
  if (v1 && !exec(db, kMigrateV1AfterSchema, message)) return false;
  if (v2 && !exec(db, kMigrateV2AfterSchema, message)) return false;
  const std::string version = "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', '" +
                              std::to_string(kSchemaVersion) + "')";
  if (!exec(db, version.c_str(), message)) return false;
  return transaction.commit() || fail_with_errmsg(db, message);
}

// Waits for a lock held by another connection: at most 5 s, in steps that grow to 10 ms; not at
// all once `context` (an atomic<bool>, when given) is set.
int busy_wait(void* context, int attempt) {
  if (context != nullptr && static_cast<std::atomic<bool>*>(context)->load()) return 0;
  // Transactions here take a millisecond or two: wait in small steps first.
  if (attempt < 20) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  } else if (attempt < 120) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  } else if (attempt < 610) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  } else {
    return 0;
  }
  return 1;
}

Expected<sqlite3*> connect(const std::string& path, int flags) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    Error error = storage_error(db, "cannot open the outbox " + path);
    sqlite3_close(db);
    return error;
  }
  sqlite3_busy_handler(db, busy_wait, nullptr);
  return db;
}

// Page cache per connection, KiB: the writer keeps the unique index in memory; the engine reads
// recent rows and batches; the reader and the checkpointer touch a few pages each.
constexpr int kWriterCacheKib = 8192;
constexpr int kEngineCacheKib = 2048;
constexpr int kSmallCacheKib = 256;

bool tune(sqlite3* db, bool full_sync, bool checkpoints, int cache_kib, char** message) {
  const std::string pragmas =
      std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=") +
      (full_sync ? "FULL" : "NORMAL") + "; PRAGMA foreign_keys=OFF; PRAGMA cache_size=-" +
      std::to_string(cache_kib) + ";" + (checkpoints ? "" : " PRAGMA wal_autocheckpoint=0;");
  return exec(db, pragmas.c_str(), message);
}

// Takes the engine lock beside the outbox. Waits a little for an operator's tool that holds it
// for one short transaction; a running engine holds it for good.
int take_lock(const std::string& path, bool wait) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  for (int attempt = 0;; ++attempt) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return fd;
    if (errno != EWOULDBLOCK || !wait || attempt >= 40) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::close(fd);
  return -2;
}

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// Tightens a file left readable by others (an older version, a copy) to 0600.
bool tighten(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0 || (info.st_mode & 077) == 0) return false;
  return ::chmod(path.c_str(), 0600) == 0;
}

}  // namespace

struct SqliteOutbox::Connections {
  sqlite3* engine = nullptr;
  sqlite3* writer = nullptr;  // == engine for :memory: and read-only databases
  // The engine's checkpoints run on a connection of their own, so copying the WAL into the
  // database (and syncing it) holds up neither the planner nor a stats() scrape.
  sqlite3* checkpointer = nullptr;
  std::mutex checkpoint_mutex;
  // stats() reads on a connection of its own too: a scrape never waits for the engine's writes.
  sqlite3* reader = nullptr;
  std::mutex reader_mutex;
  std::mutex engine_mutex;
  std::mutex writer_own_mutex;
  std::mutex* writer_mutex = &writer_own_mutex;
  std::atomic<bool> writes_interrupted{false};
  int lock_fd = -1;
  struct stat file {};
  bool file_backed = false;

  // The writer's statements, prepared once: a small sync commit would otherwise spend a good part
  // of its time parsing SQL.
  TransactionStatements writer_transaction;
  sqlite3_stmt* insert_event = nullptr;
  sqlite3_stmt* save_carry = nullptr;
  sqlite3_stmt* read_carry = nullptr;

  bool prepare_writer() {
    const auto prepare = [this](const char* sql, sqlite3_stmt** out) {
      return sqlite3_prepare_v3(writer, sql, -1, SQLITE_PREPARE_PERSISTENT, out, nullptr) ==
             SQLITE_OK;
    };
    return prepare("BEGIN IMMEDIATE", &writer_transaction.begin) &&
           prepare("COMMIT", &writer_transaction.commit) &&
           prepare("ROLLBACK", &writer_transaction.rollback) &&
           prepare(kInsertEvent, &insert_event) &&
           prepare("INSERT OR REPLACE INTO carries(key, remainder) VALUES(?, ?)", &save_carry) &&
           prepare("SELECT remainder FROM carries WHERE key=?", &read_carry);
  }
  void finalize_writer() {
    for (sqlite3_stmt** statement :
         {&writer_transaction.begin, &writer_transaction.commit, &writer_transaction.rollback,
          &insert_event, &save_carry, &read_carry}) {
      sqlite3_finalize(*statement);
      *statement = nullptr;
    }
  }
  void close_databases() {
    finalize_writer();
    if (checkpointer != nullptr) sqlite3_close(checkpointer);
    if (reader != nullptr) sqlite3_close(reader);
    if (writer != nullptr && writer != engine) sqlite3_close(writer);
    if (engine != nullptr) sqlite3_close(engine);
    writer = engine = checkpointer = reader = nullptr;
  }
  ~Connections() {
    close_databases();
    if (lock_fd >= 0) ::close(lock_fd);
  }
};

Expected<std::unique_ptr<Outbox>> Outbox::open(const std::string& path, bool full_sync) {
  return SqliteOutbox::open_file(path, full_sync, StoreMode::kMaintenance);
}

Expected<std::unique_ptr<Outbox>> Outbox::open_engine(const std::string& path, bool full_sync) {
  return SqliteOutbox::open_file(path, full_sync, StoreMode::kEngine);
}

Expected<std::unique_ptr<Outbox>> Outbox::open_for_reading(const std::string& path) {
  return SqliteOutbox::open_file(path, false, StoreMode::kReadOnly);
}

Expected<std::unique_ptr<Outbox>> SqliteOutbox::open_file(const std::string& path, bool full_sync,
                                                          Mode mode) {
  if (mode == Mode::kReadOnly) return open_read_only(path);
  auto connections = std::make_unique<Connections>();
  std::vector<std::string> notes;
  const bool file_backed = path != ":memory:";
  if (file_backed) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) {
      // Created 0600 before SQLite opens it, so usage data is never readable by others. Only a
      // new file: closing a descriptor of a file SQLite has open would drop SQLite's locks.
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0) {
        return Error{ErrorCode::kStorage, "cannot create the outbox file " + path, std::nullopt};
      }
      ::close(fd);
    } else if (tighten(path)) {
      tighten(path + "-wal");
      tighten(path + "-shm");
      notes.push_back("the outbox file " + path +
                      " was readable by other users; its mode is now 0600");
    }
    if (mode == Mode::kEngine) {
      connections->lock_fd = take_lock(path + ".lock", true);
      if (connections->lock_fd == -2) {
        return Error{ErrorCode::kStorage,
                     "another process runs the delivery engine on the outbox " + path +
                         " (it holds " + path +
                         ".lock); give each gateway process its own STRIPE_OUTBOX_PATH",
                     std::nullopt};
      }
      if (connections->lock_fd < 0) {
        return Error{ErrorCode::kStorage, "cannot create the lock file " + path + ".lock",
                     std::nullopt};
      }
    }
  }
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  auto engine = connect(path, flags);
  if (!engine) return std::move(engine).error();
  connections->engine = *engine;
  sqlite3_busy_handler(connections->engine, busy_wait, &connections->writes_interrupted);
  char* message = nullptr;
  int migrated_from = 0;
  const bool separate_writer = file_backed;
  if (!tune(connections->engine, full_sync, true,
            separate_writer ? kEngineCacheKib : kWriterCacheKib, &message) ||
      !create_schema(connections->engine, &message, &migrated_from)) {
    std::string text = message ? message : "unknown";
    sqlite3_free(message);
    return Error{ErrorCode::kStorage, "cannot prepare the outbox " + path + ": " + text,
                 std::nullopt};
  }
  if (migrated_from > 0) {
    notes.push_back("the outbox " + path + " was migrated from format " +
                    std::to_string(migrated_from) + " to format " + std::to_string(kSchemaVersion));
  }
  if (separate_writer) {
    auto writer = connect(path, flags);
    if (!writer) return std::move(writer).error();
    connections->writer = *writer;
    sqlite3_busy_handler(connections->writer, busy_wait, &connections->writes_interrupted);
    // The writer never checkpoints: the engine does, off the host's commit path.
    if (!tune(connections->writer, full_sync, mode != Mode::kEngine, kWriterCacheKib, &message)) {
      std::string text = message ? message : "unknown";
      sqlite3_free(message);
      return Error{ErrorCode::kStorage, "cannot prepare the outbox " + path + ": " + text,
                   std::nullopt};
    }
  } else {
    connections->writer = connections->engine;
    connections->writer_mutex = &connections->engine_mutex;
  }
  if (file_backed && mode == Mode::kEngine) {
    auto reader = connect(path, flags);
    if (!reader) return std::move(reader).error();
    connections->reader = *reader;
    auto checkpointer = connect(path, flags);
    if (!checkpointer) return std::move(checkpointer).error();
    connections->checkpointer = *checkpointer;
    if (!tune(connections->checkpointer, full_sync, true, kSmallCacheKib, &message) ||
        !tune(connections->reader, full_sync, true, kSmallCacheKib, &message)) {
      std::string text = message ? message : "unknown";
      sqlite3_free(message);
      return Error{ErrorCode::kStorage, "cannot prepare the outbox " + path + ": " + text,
                   std::nullopt};
    }
  }
  if (file_backed) {
    connections->file_backed = true;
    ::stat(path.c_str(), &connections->file);
  }
  std::string instance_id;
  {
    Statement select(connections->engine, "SELECT value FROM meta WHERE key='instance_id'");
    if (select.ok() && select.step() == SQLITE_ROW) instance_id = select.text(0);
  }
  if (instance_id.empty()) {
    instance_id = random_id(16);
    Statement insert(connections->engine, "INSERT INTO meta(key, value) VALUES('instance_id', ?)");
    if (!insert.ok() || !insert.bind(1, instance_id).run()) {
      return storage_error(connections->engine, "cannot initialise the outbox " + path);
    }
  }
  if (mode == Mode::kEngine) {
    // This process holds the engine lock: claims left by an earlier run are nobody's now.
    Statement release(connections->engine,
                      "UPDATE batches SET lease_owner=NULL WHERE lease_owner IS NOT NULL");
    if (!release.ok() || !release.run()) {
      return storage_error(connections->engine, "cannot release old claims in " + path);
    }
  }
  std::unique_ptr<SqliteOutbox> outbox(
      new SqliteOutbox(path, std::move(connections), std::move(instance_id), mode, full_sync));
  outbox->notes_ = std::move(notes);
  if (auto loaded = outbox->load_counts(); !loaded) return loaded.error();
  return std::unique_ptr<Outbox>(std::move(outbox));
}

Expected<std::unique_ptr<Outbox>> SqliteOutbox::open_read_only(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) {
    return Error{ErrorCode::kStorage, "no outbox file at " + path, std::nullopt};
  }
  auto db = connect(path, SQLITE_OPEN_READONLY);
  if (!db) return std::move(db).error();
  auto connections = std::make_unique<Connections>();
  connections->engine = connections->writer = *db;
  connections->writer_mutex = &connections->engine_mutex;
  if (!has_column(*db, "events", "sink")) {
    return Error{ErrorCode::kStorage,
                 "the outbox " + path +
                     " is not in the current format (start the library on it once to migrate it)",
                 std::nullopt};
  }
  std::string instance_id;
  Statement select(*db, "SELECT value FROM meta WHERE key='instance_id'");
  if (select.ok() && select.step() == SQLITE_ROW) instance_id = select.text(0);
  return std::unique_ptr<Outbox>(new SqliteOutbox(path, std::move(connections),
                                                  std::move(instance_id), Mode::kReadOnly, false));
}

SqliteOutbox::SqliteOutbox(std::string path, std::unique_ptr<Connections> connections,
                           std::string instance_id, Mode mode, bool full_sync)
    : path_(std::move(path)),
      db_(std::move(connections)),
      mode_(mode),
      full_sync_(full_sync),
      lease_owner_(instance_id + "/" + random_id(8)) {
  instance_id_ = std::move(instance_id);
}

SqliteOutbox::~SqliteOutbox() = default;

// One transaction's moves in one step: counts() never sees a row leave one state before it
// reaches the next (a planning round's rows in neither pending nor batched, or in both).
void SqliteOutbox::add_counts(std::initializer_list<std::pair<EventState, std::int64_t>> moves) {
  std::lock_guard lock(counts_mutex_);
  for (const auto& [state, delta] : moves) counts_[stored(state)] += delta;
}

std::int64_t SqliteOutbox::count_of(EventState state) {
  std::lock_guard lock(counts_mutex_);
  return counts_[stored(state)];
}

Expected<OutboxCounts> SqliteOutbox::count_by_query() {
  Statement select(db_->engine, "SELECT state, COUNT(*) FROM events GROUP BY state");
  if (!select.ok()) return storage_error(db_->engine, "cannot count the outbox");
  OutboxCounts counts;
  int rc;
  while ((rc = select.step()) == SQLITE_ROW) {
    counts.set(select.integer(0), select.integer(1));
  }
  if (rc != SQLITE_DONE) return storage_error(db_->engine, "cannot count the outbox");
  return counts;
}

Expected<void> SqliteOutbox::load_counts() {
  std::lock_guard lock(db_->engine_mutex);
  auto counts = count_by_query();
  if (!counts) return counts.error();
  std::lock_guard counts_lock(counts_mutex_);
  counts_[stored(EventState::kPending)] = counts->pending;
  counts_[stored(EventState::kBatched)] = counts->batched;
  counts_[stored(EventState::kDelivered)] = counts->delivered;
  counts_[stored(EventState::kParked)] = counts->parked;
  counts_[stored(EventState::kDead)] = counts->dead;
  return {};
}

Expected<InsertResult> SqliteOutbox::insert(const std::vector<NewEvent>& events,
                                            const CarryRule& carry_rule) {
  std::lock_guard lock(*db_->writer_mutex);
  // However it ends, the insert is finished in the step that adds its rows to the counts, so
  // counts() reports the rows and the insert's number together (OutboxCounts::inserts).
  struct Finish {
    SqliteOutbox& outbox;
    const std::uint64_t number;
    std::int64_t added[5] = {0, 0, 0, 0, 0};  // by EventState, once committed
    ~Finish() {
      std::lock_guard counts_lock(outbox.counts_mutex_);
      for (int state = 0; state < 5; ++state) outbox.counts_[state] += added[state];
      outbox.inserts_finished_ = number;
    }
  } finish{*this, begin_insert()};
  sqlite3* db = db_->writer;
  if (db_->insert_event == nullptr && !db_->prepare_writer()) {
    db_->finalize_writer();
    return storage_error(db, "cannot prepare the outbox write");
  }
  Transaction transaction(db, &db_->writer_transaction);
  if (!transaction.began()) return storage_error(db, "cannot begin an outbox write");
  Statement statement(db_->insert_event);
  InsertResult result;
  std::int64_t added[5] = {0, 0, 0, 0, 0};
  std::map<std::string, std::int64_t> carried;  // remainders this transaction moves
  for (const NewEvent& original : events) {
    if (!std::isfinite(original.cost)) {
      return Error{ErrorCode::kStorage, "outbox write refused: a row's cost is not finite",
                   std::nullopt};
    }
    std::optional<NewEvent> rounded_row;
    std::string key;
    std::int64_t remainder = 0;
    if (original.amount_micros) {
      key = carry_key(original);
      auto it = carried.find(key);
      auto before = it != carried.end() ? Expected<std::int64_t>(it->second) : carry(key);
      if (!before) return std::move(before).error();
      rounded_row = original;
      remainder = carry_rule(*rounded_row, *before);
    }
    const NewEvent& event = rounded_row ? *rounded_row : original;
    const std::int64_t quantity = event.quantity;
    const EventState state = event.state;
    const std::string* reason = &event.reason;
    statement.bind(1, event.call_id)
        .bind(2, event.dimension)
        .bind(3, static_cast<int>(event.sink))
        .bind(4, event.customer_key)
        .bind(5, quantity)
        .bind(6, event.event_time)
        .bind(7, event.accepted_at_ms)
        .bind(8, event.model)
        .bind(9, event.cost)
        .bind(10, event.prompt_tokens)
        .bind(11, event.completion_tokens)
        .bind(12, stored(state))
        .bind(13, *reason)
        .bind(14, event.next_attempt_ms)
        .bind(15, event.accepted_at_ms);
    if (!statement.run()) return storage_error(db, "outbox write failed");
    if (sqlite3_changes(db) == 1) {
      ++result.inserted;
      ++added[stored(state)];
      if (event.amount_micros) carried[key] = remainder;
    } else {
      ++result.duplicates;
    }
  }
  if (!carried.empty()) {
    Statement save(db_->save_carry);
    for (const auto& [key, remainder] : carried) {
      if (!save.bind(1, key).bind(2, remainder).run()) {
        return storage_error(db, "cannot write the carry");
      }
    }
  }
  if (!transaction.commit()) return storage_error(db, "outbox commit failed");
  for (auto& [key, remainder] : carried) carries_[key] = remainder;
  std::copy(std::begin(added), std::end(added), std::begin(finish.added));
  return result;
}

void SqliteOutbox::interrupt_writes() { db_->writes_interrupted = true; }

Expected<void> SqliteOutbox::relax_writer_sync() {
  std::lock_guard lock(*db_->writer_mutex);
  if (!full_sync_ || db_->writer == db_->engine) return {};
  if (sqlite3_exec(db_->writer, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr) !=
      SQLITE_OK) {
    return storage_error(db_->writer, "cannot set the writer's sync mode");
  }
  writer_relaxed_ = true;
  return {};
}

Expected<void> SqliteOutbox::sync_writes() {
  std::lock_guard lock(*db_->writer_mutex);
  if (!writer_relaxed_) return {};
  // Committed rows are in the WAL (synced here) or, checkpointed, in the database, which the
  // checkpoint synced before the WAL could be reused. The WAL carries no lock of SQLite's, so a
  // descriptor of our own may be opened and closed on it.
  const std::string wal = path_ + "-wal";
  const int fd = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return {};
    return Error{ErrorCode::kStorage, "cannot open the outbox's WAL to sync it", std::nullopt};
  }
  const bool synced = ::fdatasync(fd) == 0;
  ::close(fd);
  if (!synced) return Error{ErrorCode::kStorage, "cannot sync the outbox's WAL", std::nullopt};
  return {};
}

Expected<std::int64_t> SqliteOutbox::carry(const std::string& key) {
  if (auto it = carries_.find(key); it != carries_.end()) return it->second;
  Statement select(db_->read_carry);
  select.bind(1, key);
  const int rc = select.step();
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return storage_error(db_->writer, "cannot read the carry");
  const std::int64_t remainder = rc == SQLITE_ROW ? select.integer(0) : 0;
  carries_[key] = remainder;
  return remainder;
}

Expected<std::vector<StoredEvent>> SqliteOutbox::due_events(std::int64_t now_ms, int limit) {
  std::lock_guard lock(db_->engine_mutex);
  sqlite3* db = db_->engine;
  if (count_of(EventState::kParked) > 0 || mode_ != Mode::kEngine) {
    Statement wake(db,
                   "UPDATE events SET state=?, updated_ms=? WHERE state=? AND "
                   "next_attempt_ms IS NOT NULL AND next_attempt_ms<=?");
    if (!wake.ok() || !wake.bind(1, stored(EventState::kPending))
                           .bind(2, now_ms)
                           .bind(3, stored(EventState::kParked))
                           .bind(4, now_ms)
                           .run()) {
      return storage_error(db, "cannot wake parked events");
    }
    const std::int64_t woken = sqlite3_changes(db);
    add_counts({{EventState::kParked, -woken}, {EventState::kPending, woken}});
  }
  Statement select(db, "SELECT " + std::string(kEventColumns) +
                           " FROM events WHERE state=? ORDER BY id LIMIT ?");
  if (!select.ok()) return storage_error(db, "cannot read pending events");
  select.bind(1, stored(EventState::kPending)).bind(2, limit);
  return collect_rows<StoredEvent>(db, select, "cannot read pending events", read_event);
}

Expected<std::vector<StoredEvent>> SqliteOutbox::new_events(std::int64_t after_id, int limit) {
  std::lock_guard lock(db_->engine_mutex);
  Statement select(db_->engine, "SELECT " + std::string(kEventColumns) +
                                    " FROM events WHERE state=? AND id>? ORDER BY id LIMIT ?");
  if (!select.ok()) return storage_error(db_->engine, "cannot read pending events");
  select.bind(1, stored(EventState::kPending)).bind(2, after_id).bind(3, limit);
  return collect_rows<StoredEvent>(db_->engine, select, "cannot read pending events", read_event);
}

Expected<std::vector<Batch>> SqliteOutbox::apply(PlanWrites writes, std::int64_t now_ms,
                                                 std::size_t lease) {
  std::lock_guard lock(db_->engine_mutex);
  sqlite3* db = db_->engine;
  Transaction transaction(db);
  if (!transaction.began()) return storage_error(db, "cannot begin a planning write");
  std::int64_t parked = 0, killed = 0, batched = 0;
  {
    Statement park(db,
                   "UPDATE events SET state=?, reason=?, next_attempt_ms=? "
                   "WHERE id=? AND state=?");
    Statement kill(db,
                   "UPDATE events SET state=?, reason=?, next_attempt_ms=NULL "
                   "WHERE id=? AND state=?");
    if (!park.ok() || !kill.ok()) return storage_error(db, "cannot park events");
    for (const RowChange& change : writes.parks) {
      for (std::int64_t id : change.event_ids) {
        if (!park.bind(1, stored(EventState::kParked))
                 .bind(2, change.reason)
                 .bind(3, change.next_attempt_ms)
                 .bind(4, id)
                 .bind(5, stored(EventState::kPending))
                 .run()) {
          return storage_error(db, "cannot park events");
        }
        parked += sqlite3_changes(db);
      }
    }
    for (const RowChange& change : writes.kills) {
      for (std::int64_t id : change.event_ids) {
        if (!kill.bind(1, stored(EventState::kDead))
                 .bind(2, change.reason)
                 .bind(3, id)
                 .bind(4, stored(EventState::kPending))
                 .run()) {
          return storage_error(db, "cannot mark events dead");
        }
        killed += sqlite3_changes(db);
      }
    }
  }
  Statement insert(db,
                   "INSERT INTO batches(idempotency_key, target, customer_id, customer_key, "
                   "quantity, timestamp, state, next_attempt_ms, created_ms, sink, kind, "
                   "event_count, lease_owner, lease_token) "
                   "VALUES('', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  Statement key(db, "UPDATE batches SET idempotency_key=? WHERE id=?");
  Statement claim(db,
                  "UPDATE events SET state=?, batch_id=?, customer_id=?, updated_ms=? "
                  "WHERE state=? AND id=?");
  if (!insert.ok() || !key.ok() || !claim.ok()) return storage_error(db, "cannot create a batch");
  std::vector<Batch> created;
  created.reserve(writes.batches.size());
  for (NewBatch& spec : writes.batches) {
    Batch& batch = spec.batch;
    const bool leased = created.size() < lease;
    batch.lease = leased ? 1 : 0;
    insert.bind(1, batch.target)
        .bind(2, batch.customer_id)
        .bind(3, batch.customer_key)
        .bind(4, batch.quantity)
        .bind(5, batch.timestamp)
        .bind(6, kBatchSending)
        .bind(7, now_ms)
        .bind(8, now_ms)
        .bind(9, static_cast<int>(batch.sink()))
        .bind(10, static_cast<int>(batch.kind))
        .bind(11, static_cast<std::int64_t>(spec.members.size()))
        .bind(13, batch.lease);
    if (leased) insert.bind(12, lease_owner_);
    if (!insert.run()) return storage_error(db, "cannot create a batch");
    batch.id = sqlite3_last_insert_rowid(db);
    // The instance id keeps keys unique even if the outbox file is ever recreated.
    batch.idempotency_key = "sb1-" + instance_id_ + "-b" + std::to_string(batch.id);
    if (!key.bind(1, batch.idempotency_key).bind(2, batch.id).run()) {
      return storage_error(db, "cannot create a batch");
    }
    for (const BatchMember& member : spec.members) {
      if (!claim.bind(1, stored(EventState::kBatched))
               .bind(2, batch.id)
               .bind(3, member.customer_id)
               .bind(4, now_ms)
               .bind(5, stored(EventState::kPending))
               .bind(6, member.event_id)
               .run()) {
        return storage_error(db, "cannot create a batch");
      }
      if (sqlite3_changes(db) != 1) {
        return Error{ErrorCode::kStorage, "rows of a batch were no longer pending", std::nullopt};
      }
    }
    batched += static_cast<std::int64_t>(spec.members.size());
    batch.created_ms = now_ms;
    batch.attempts = 0;
    batch.events = static_cast<std::int64_t>(spec.members.size());
    created.push_back(std::move(batch));
  }
  if (!transaction.commit()) return storage_error(db, "cannot commit a planning round");
  add_counts({{EventState::kPending, -(parked + killed + batched)},
              {EventState::kParked, parked},
              {EventState::kDead, killed},
              {EventState::kBatched, batched}});
  return created;
}

Expected<std::vector<ClaimedBatch>> SqliteOutbox::claim_due_batches(std::int64_t now_ms,
                                                                    int limit) {
  std::lock_guard lock(db_->engine_mutex);
  sqlite3* db = db_->engine;
  Transaction transaction(db);
  if (!transaction.began()) return storage_error(db, "cannot claim batches");
  Statement claim(db,
                  "UPDATE batches SET lease_owner=?, lease_token=lease_token+1 WHERE id IN "
                  "(SELECT id FROM batches WHERE state=? AND lease_owner IS NULL AND "
                  "next_attempt_ms<=? ORDER BY next_attempt_ms, id LIMIT ?) "
                  "RETURNING id, kind, idempotency_key, target, customer_id, customer_key, "
                  "quantity, timestamp, attempts, created_ms, event_count, lease_token, "
                  "next_attempt_ms");
  if (!claim.ok()) return storage_error(db, "cannot claim batches");
  claim.bind(1, lease_owner_).bind(2, kBatchSending).bind(3, now_ms).bind(4, limit);
  std::vector<std::pair<std::int64_t, ClaimedBatch>> claimed;
  int rc;
  while ((rc = claim.step()) == SQLITE_ROW) {
    ClaimedBatch entry;
    Batch& batch = entry.batch;
    batch.id = claim.integer(0);
    batch.kind = static_cast<BatchKind>(claim.integer(1));
    batch.idempotency_key = claim.text(2);
    batch.target = claim.text(3);
    batch.customer_id = claim.text(4);
    batch.customer_key = claim.text(5);
    batch.quantity = claim.integer(6);
    batch.timestamp = claim.integer(7);
    batch.attempts = static_cast<int>(claim.integer(8));
    batch.created_ms = claim.integer(9);
    batch.events = claim.integer(10);
    batch.lease = claim.integer(11);
    claimed.emplace_back(claim.integer(12), std::move(entry));
  }
  if (rc != SQLITE_DONE) return storage_error(db, "cannot claim batches");
  claim.reset();
  std::sort(claimed.begin(), claimed.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : a.second.batch.id < b.second.batch.id;
  });
  Statement rows(
      db, "SELECT " + std::string(kEventColumns) + " FROM events WHERE batch_id=? ORDER BY id");
  Statement models(db, "SELECT model, SUM(quantity) FROM events WHERE batch_id=? GROUP BY model");
  if (!rows.ok() || !models.ok()) return storage_error(db, "cannot read a batch's rows");
  std::vector<ClaimedBatch> out;
  out.reserve(claimed.size());
  for (auto& [due, entry] : claimed) {
    models.bind(1, entry.batch.id);
    while ((rc = models.step()) == SQLITE_ROW) {
      entry.batch.quantity_by_model.emplace_back(models.text(0), models.integer(1));
    }
    models.reset();
    if (rc != SQLITE_DONE) return storage_error(db, "cannot read a batch's rows");
    if (entry.batch.kind != BatchKind::kUsageRecord) {
      rows.bind(1, entry.batch.id);
      while ((rc = rows.step()) == SQLITE_ROW) entry.rows.push_back(read_event(rows));
      rows.reset();
      if (rc != SQLITE_DONE) return storage_error(db, "cannot read a batch's rows");
    }
    out.push_back(std::move(entry));
  }
  if (!transaction.commit()) return storage_error(db, "cannot claim batches");
  return out;
}

Expected<bool> SqliteOutbox::finish_batch(const Batch& batch, BatchState batch_state,
                                          EventState event_state, const std::string& reason,
                                          const std::string& request_id, std::int64_t now_ms,
                                          const char* what) {
  std::lock_guard lock(db_->engine_mutex);
  sqlite3* db = db_->engine;
  Transaction transaction(db);
  Statement update(db,
                   "UPDATE batches SET state=?, delivered_ms=?, request_id=?, last_error=?, "
                   "lease_owner=NULL WHERE id=? AND lease_token=? AND state=" +
                       std::to_string(kBatchSending));
  Statement events(db,
                   "UPDATE events SET state=?, updated_ms=?, reason=? "
                   "WHERE batch_id=? AND state=?");
  if (!transaction.began() || !update.ok() || !events.ok()) return storage_error(db, what);
  update.bind(1, batch_state);
  if (batch_state == kBatchDelivered) update.bind(2, now_ms);
  if (!update.bind(3, request_id).bind(4, reason).bind(5, batch.id).bind(6, batch.lease).run()) {
    return storage_error(db, what);
  }
  if (sqlite3_changes(db) == 0) return false;  // the lease is gone: not ours to record
  if (!events.bind(1, stored(event_state))
           .bind(2, now_ms)
           .bind(3, reason)
           .bind(4, batch.id)
           .bind(5, stored(EventState::kBatched))
           .run()) {
    return storage_error(db, what);
  }
  const std::int64_t moved = sqlite3_changes(db);
  if (!transaction.commit()) return storage_error(db, what);
  add_counts({{EventState::kBatched, -moved}, {event_state, moved}});
  return true;
}

Expected<bool> SqliteOutbox::batch_retry_later(const Batch& batch, int attempts,
                                               std::int64_t next_attempt_ms,
                                               const std::string& last_error) {
  std::lock_guard lock(db_->engine_mutex);
  Statement statement(db_->engine,
                      "UPDATE batches SET attempts=?, next_attempt_ms=?, "
                      "last_error=?, lease_owner=NULL WHERE id=? AND lease_token=? AND state=" +
                          std::to_string(kBatchSending));
  if (!statement.ok() || !statement.bind(1, attempts)
                              .bind(2, next_attempt_ms)
                              .bind(3, last_error)
                              .bind(4, batch.id)
                              .bind(5, batch.lease)
                              .run()) {
    return storage_error(db_->engine, "cannot schedule a retry");
  }
  return sqlite3_changes(db_->engine) == 1;
}

Expected<bool> SqliteOutbox::release(const Batch& batch) {
  std::lock_guard lock(db_->engine_mutex);
  Statement statement(
      db_->engine, "UPDATE batches SET lease_owner=NULL WHERE id=? AND lease_token=? AND state=" +
                       std::to_string(kBatchSending));
  if (!statement.ok() || !statement.bind(1, batch.id).bind(2, batch.lease).run()) {
    return storage_error(db_->engine, "cannot release a batch");
  }
  return sqlite3_changes(db_->engine) == 1;
}

Expected<bool> SqliteOutbox::dissolve_batch(const Batch& batch) {
  std::lock_guard lock(db_->engine_mutex);
  sqlite3* db = db_->engine;
  Transaction transaction(db);
  // Kept, not deleted: its id (and so its idempotency key) must never be handed out again.
  Statement update(
      db, "UPDATE batches SET state=?, lease_owner=NULL WHERE id=? AND lease_token=? AND state=" +
              std::to_string(kBatchSending));
  Statement events(db,
                   "UPDATE events SET state=?, batch_id=NULL, customer_id='' "
                   "WHERE batch_id=? AND state=?");
  if (!transaction.began() || !update.ok() || !events.ok() ||
      !update.bind(1, kBatchDissolved).bind(2, batch.id).bind(3, batch.lease).run()) {
    return storage_error(db, "cannot dissolve a batch");
  }
  if (sqlite3_changes(db) == 0) return false;
  if (!events.bind(1, stored(EventState::kPending))
           .bind(2, batch.id)
           .bind(3, stored(EventState::kBatched))
           .run()) {
    return storage_error(db, "cannot dissolve a batch");
  }
  const std::int64_t moved = sqlite3_changes(db);
  if (!transaction.commit()) return storage_error(db, "cannot dissolve a batch");
  add_counts({{EventState::kBatched, -moved}, {EventState::kPending, moved}});
  return true;
}

Expected<std::vector<std::string>> SqliteOutbox::open_targets() {
  std::lock_guard lock(db_->engine_mutex);
  Statement select(db_->engine, "SELECT DISTINCT target FROM batches WHERE state=? AND kind=?");
  if (!select.ok()) return storage_error(db_->engine, "cannot read batches");
  select.bind(1, kBatchSending).bind(2, static_cast<int>(BatchKind::kUsageRecord));
  return collect_rows<std::string>(db_->engine, select, "cannot read batches",
                                   [](Statement& row) { return row.text(0); });
}

Expected<PruneStep> SqliteOutbox::prune_delivered(std::int64_t older_than_ms, int max_rows) {
  std::lock_guard lock(db_->engine_mutex);
  sqlite3* db = db_->engine;
  Statement select(db,
                   "SELECT id, updated_ms, batch_id FROM events WHERE state=? AND id>? "
                   "ORDER BY id LIMIT ?");
  if (!select.ok()) return storage_error(db, "cannot prune the ledger");
  select.bind(1, stored(EventState::kDelivered)).bind(2, prune_cursor_).bind(3, max_rows);
  std::vector<std::int64_t> old_rows;
  std::set<std::int64_t> batches;
  int seen = 0;
  int rc;
  std::int64_t cursor = prune_cursor_;
  while ((rc = select.step()) == SQLITE_ROW) {
    ++seen;
    cursor = select.integer(0);
    if (select.integer(1) >= older_than_ms) continue;
    old_rows.push_back(select.integer(0));
    if (!select.null(2)) batches.insert(select.integer(2));
  }
  select.reset();
  if (rc != SQLITE_DONE) return storage_error(db, "cannot prune the ledger");
  // Only a step with rows to delete writes (and waits for the write lock).
  if (!old_rows.empty()) {
    Transaction transaction(db);
    Statement remove(db, "DELETE FROM events WHERE id=? AND state=?");
    Statement remove_batch(db,
                           "DELETE FROM batches WHERE id=? AND state=? AND NOT EXISTS "
                           "(SELECT 1 FROM events WHERE batch_id=?)");
    if (!transaction.began() || !remove.ok() || !remove_batch.ok()) {
      return storage_error(db, "cannot prune the ledger");
    }
    for (std::int64_t id : old_rows) {
      if (!remove.bind(1, id).bind(2, stored(EventState::kDelivered)).run()) {
        return storage_error(db, "cannot prune the ledger");
      }
    }
    for (std::int64_t id : batches) {
      if (!remove_batch.bind(1, id).bind(2, kBatchDelivered).bind(3, id).run()) {
        return storage_error(db, "cannot prune the ledger");
      }
    }
    if (!transaction.commit()) return storage_error(db, "cannot prune the ledger");
    add_counts({{EventState::kDelivered, -static_cast<std::int64_t>(old_rows.size())}});
  }
  prune_cursor_ = cursor;
  PruneStep step{static_cast<std::int64_t>(old_rows.size()), seen < max_rows};
  if (step.done) prune_cursor_ = 0;
  return step;
}

Expected<FileCheck> SqliteOutbox::check_file() {
  if (!db_->file_backed || mode_ == Mode::kReadOnly) return FileCheck::kSame;
  struct stat now {};
  if (::stat(path_.c_str(), &now) == 0 && same_file(now, db_->file)) return FileCheck::kSame;
  // Deleted or replaced: the open database still has everything committed. Copy it to the path,
  // then reopen both connections on the copy.
  std::lock_guard engine_lock(db_->engine_mutex);
  std::lock_guard writer_lock(*db_->writer_mutex);
  std::lock_guard checkpoint_lock(db_->checkpoint_mutex);
  std::lock_guard reader_lock(db_->reader_mutex);
  const std::string copy = path_ + ".recreate-" + std::to_string(::getpid());
  ::unlink(copy.c_str());
  char* sql = sqlite3_mprintf("VACUUM INTO %Q", copy.c_str());
  char* message = nullptr;
  const bool copied = sqlite3_exec(db_->engine, sql, nullptr, nullptr, &message) == SQLITE_OK;
  sqlite3_free(sql);
  sqlite3_free(message);
  message = nullptr;
  if (!copied) {
    ::unlink(copy.c_str());
    return FileCheck::kMissing;
  }
  ::chmod(copy.c_str(), 0600);
  db_->close_databases();
  // The old database's WAL and shared memory, if still there, would be read as the copy's own.
  ::unlink((path_ + "-wal").c_str());
  ::unlink((path_ + "-shm").c_str());
  // Should the rename fail (the directory went too), the copy is used where it is.
  const bool renamed = ::rename(copy.c_str(), path_.c_str()) == 0;
  const std::string& reopened = renamed ? path_ : copy;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  auto engine = connect(reopened, flags);
  if (!engine) return std::move(engine).error();
  db_->engine = *engine;
  sqlite3_busy_handler(db_->engine, busy_wait, &db_->writes_interrupted);
  auto writer = connect(reopened, flags);
  if (!writer) return std::move(writer).error();
  db_->writer = *writer;
  sqlite3_busy_handler(db_->writer, busy_wait, &db_->writes_interrupted);
  if (mode_ == Mode::kEngine) {
    auto reader = connect(reopened, flags);
    if (!reader) return std::move(reader).error();
    db_->reader = *reader;
    auto checkpointer = connect(reopened, flags);
    if (!checkpointer) return std::move(checkpointer).error();
    db_->checkpointer = *checkpointer;
  }
  if (!tune(db_->engine, full_sync_, true, kEngineCacheKib, &message) ||
      !tune(db_->writer, full_sync_ && !writer_relaxed_, mode_ != Mode::kEngine, kWriterCacheKib,
            &message) ||
      (db_->checkpointer != nullptr &&
       !tune(db_->checkpointer, full_sync_, true, kSmallCacheKib, &message)) ||
      (db_->reader != nullptr && !tune(db_->reader, full_sync_, true, kSmallCacheKib, &message))) {
    std::string text = message ? message : "unknown";
    sqlite3_free(message);
    return Error{ErrorCode::kStorage, "cannot prepare the recreated outbox: " + text, std::nullopt};
  }
  if (!renamed) {
    db_->file_backed = false;  // running on the copy from now on; nothing more to compare
    return FileCheck::kMissing;
  }
  ::stat(path_.c_str(), &db_->file);
  if (mode_ == Mode::kEngine) {
    struct stat lock_file {};
    if (::stat((path_ + ".lock").c_str(), &lock_file) != 0) {
      if (db_->lock_fd >= 0) ::close(db_->lock_fd);
      db_->lock_fd = take_lock(path_ + ".lock", false);
    }
  }
  return FileCheck::kRecreated;
}

Expected<void> SqliteOutbox::shift_schedule(std::int64_t delta_ms) {
  std::lock_guard lock(db_->engine_mutex);
  sqlite3* db = db_->engine;
  Transaction transaction(db);
  Statement batches(db, "UPDATE batches SET next_attempt_ms=next_attempt_ms+? WHERE state=?");
  Statement events(db,
                   "UPDATE events SET next_attempt_ms=next_attempt_ms+? WHERE state=? AND "
                   "next_attempt_ms IS NOT NULL");
  if (!transaction.began() || !batches.ok() || !events.ok() ||
      !batches.bind(1, delta_ms).bind(2, kBatchSending).run() ||
      !events.bind(1, delta_ms).bind(2, stored(EventState::kParked)).run() ||
      !transaction.commit()) {
    return storage_error(db, "cannot move the retry schedule");
  }
  return {};
}

Expected<std::int64_t> SqliteOutbox::reject_delivered(
    const std::vector<std::pair<std::string, std::string>>& call_dimensions,
    const std::string& reason, std::int64_t now_ms) {
  std::lock_guard lock(db_->engine_mutex);
  sqlite3* db = db_->engine;
  Transaction transaction(db);
  Statement kill(db,
                 "UPDATE events SET state=?, reason=?, updated_ms=? "
                 "WHERE call_id=? AND dimension=? AND sink=? AND state=?");
  if (!transaction.began() || !kill.ok()) return storage_error(db, "cannot mark rejected events");
  std::int64_t moved = 0;
  for (const auto& [call_id, dimension] : call_dimensions) {
    if (!kill.bind(1, stored(EventState::kDead))
             .bind(2, reason)
             .bind(3, now_ms)
             .bind(4, call_id)
             .bind(5, dimension)
             .bind(6, static_cast<int>(Sink::kMeterEvent))
             .bind(7, stored(EventState::kDelivered))
             .run()) {
      return storage_error(db, "cannot mark rejected events");
    }
    moved += sqlite3_changes(db);
  }
  if (!transaction.commit()) return storage_error(db, "cannot mark rejected events");
  add_counts({{EventState::kDelivered, -moved}, {EventState::kDead, moved}});
  return moved;
}

void SqliteOutbox::checkpoint() {
  std::lock_guard lock(db_->checkpoint_mutex);
  if (db_->checkpointer == nullptr) return;
  sqlite3_wal_checkpoint_v2(db_->checkpointer, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr,
                            nullptr);
}

Expected<OutboxCounts> SqliteOutbox::counts() {
  // The engine's own reader when there is one: a scrape never waits behind the engine. Which
  // connection it is is read under the reader's lock (check_file() reopens them under it).
  std::unique_lock reader_lock(db_->reader_mutex);
  std::unique_lock<std::mutex> engine_lock;
  sqlite3* db = db_->reader;
  if (db == nullptr) {
    // No reader (a read-only outbox): the engine's connection. Its lock comes before the
    // reader's everywhere else, so the reader's is given up first.
    reader_lock.unlock();
    engine_lock = std::unique_lock(db_->engine_mutex);
    db = db_->engine;
  }
  OutboxCounts counts;
  if (mode_ == Mode::kReadOnly) {
    auto queried = count_by_query();
    if (!queried) return queried;
    counts = *queried;
  } else {
    // All five and the inserts they include in one step (see add_counts(), insert()).
    std::lock_guard counts_lock(counts_mutex_);
    const auto read = [this](EventState state) {
      return std::max<std::int64_t>(0, counts_[stored(state)]);
    };
    counts.pending = read(EventState::kPending);
    counts.batched = read(EventState::kBatched);
    counts.delivered = read(EventState::kDelivered);
    counts.parked = read(EventState::kParked);
    counts.dead = read(EventState::kDead);
    counts.inserts = inserts_finished_;
  }
  // The oldest waiting row is the lowest id among pending and batched ones: the first entry of
  // each state's range in the index.
  Statement first(db, "SELECT id, accepted_at_ms FROM events WHERE state=? ORDER BY id LIMIT 1");
  if (!first.ok()) return storage_error(db, "cannot count the outbox");
  std::int64_t oldest_id = 0;
  for (EventState state : {EventState::kPending, EventState::kBatched}) {
    if (first.bind(1, stored(state)).step() == SQLITE_ROW &&
        (oldest_id == 0 || first.integer(0) < oldest_id)) {
      oldest_id = first.integer(0);
      counts.oldest_pending_ms = first.integer(1);
    }
    first.reset();
  }
  return counts;
}

Expected<bool> SqliteOutbox::has_outstanding() {
  std::lock_guard lock(db_->engine_mutex);
  Statement select(db_->engine,
                   "SELECT EXISTS(SELECT 1 FROM events WHERE state=?) OR "
                   "EXISTS(SELECT 1 FROM events WHERE state=?)");
  if (!select.ok()) return storage_error(db_->engine, "cannot read the outbox");
  select.bind(1, stored(EventState::kPending)).bind(2, stored(EventState::kBatched));
  if (select.step() != SQLITE_ROW) return storage_error(db_->engine, "cannot read the outbox");
  return select.integer(0) != 0;
}

Expected<std::int64_t> SqliteOutbox::move_requeued(const std::string& reason,
                                                   const std::string& customer_key) {
  sqlite3* db = db_->engine;
  Transaction transaction(db);
  Statement statement(db,
                      "UPDATE events SET state=?, reason='', next_attempt_ms=NULL, "
                      "batch_id=NULL WHERE state=? AND (?='' OR reason=?) AND "
                      "(?='' OR customer_key=?)");
  if (!transaction.began() || !statement.ok()) return storage_error(db, "cannot requeue events");
  std::int64_t moved[2] = {0, 0};
  const EventState from[2] = {EventState::kParked, EventState::kDead};
  for (int i = 0; i < 2; ++i) {
    if (!statement.bind(1, stored(EventState::kPending))
             .bind(2, stored(from[i]))
             .bind(3, reason)
             .bind(4, reason)
             .bind(5, customer_key)
             .bind(6, customer_key)
             .run()) {
      return storage_error(db, "cannot requeue events");
    }
    moved[i] = sqlite3_changes(db);
  }
  if (!transaction.commit()) return storage_error(db, "cannot requeue events");
  add_counts({{EventState::kParked, -moved[0]},
              {EventState::kDead, -moved[1]},
              {EventState::kPending, moved[0] + moved[1]}});
  return moved[0] + moved[1];
}

Expected<RequeueResult> SqliteOutbox::requeue(const std::string& reason,
                                              const std::string& customer_key,
                                              std::chrono::milliseconds wait) {
  if (mode_ == Mode::kReadOnly) {
    return Error{ErrorCode::kStorage, "the outbox is open read-only", std::nullopt};
  }
  if (mode_ == Mode::kEngine || !db_->file_backed) {
    std::lock_guard lock(db_->engine_mutex);
    auto moved = move_requeued(reason, customer_key);
    if (!moved) return moved.error();
    return RequeueResult{*moved, false, true};
  }
  const int lock_fd = take_lock(path_ + ".lock", false);
  if (lock_fd >= 0) {
    // No engine runs on the file: move them here, holding the lock so none starts meanwhile.
    std::lock_guard lock(db_->engine_mutex);
    auto moved = move_requeued(reason, customer_key);
    ::close(lock_fd);
    if (!moved) return moved.error();
    return RequeueResult{*moved, false, true};
  }
  std::int64_t request = 0;
  {
    std::lock_guard lock(db_->engine_mutex);
    Statement insert(db_->engine,
                     "INSERT INTO requeue_requests(reason, customer_key, "
                     "requested_ms) VALUES(?, ?, ?)");
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    if (!insert.ok() || !insert.bind(1, reason)
                             .bind(2, customer_key)
                             .bind(3, static_cast<std::int64_t>(now))
                             .run()) {
      return storage_error(db_->engine, "cannot hand the requeue to the running engine");
    }
    request = sqlite3_last_insert_rowid(db_->engine);
  }
  // The engine answers in the file at its next planning round (within a second or so).
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (true) {
    {
      std::lock_guard lock(db_->engine_mutex);
      Statement select(db_->engine, "SELECT done_ms, moved FROM requeue_requests WHERE id=?");
      if (select.ok() && select.bind(1, request).step() == SQLITE_ROW && !select.null(0)) {
        return RequeueResult{select.integer(1), true, true};
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) return RequeueResult{0, true, false};
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Expected<std::int64_t> SqliteOutbox::apply_requeue_requests(std::int64_t now_ms) {
  std::lock_guard lock(db_->engine_mutex);
  Statement select(db_->engine,
                   "SELECT id, reason, customer_key FROM requeue_requests WHERE done_ms IS NULL "
                   "ORDER BY id");
  Statement done(db_->engine, "UPDATE requeue_requests SET done_ms=?, moved=? WHERE id=?");
  if (!select.ok() || !done.ok()) return storage_error(db_->engine, "cannot read requeues");
  struct Request {
    std::int64_t id;
    std::string reason, customer_key;
  };
  auto requests =
      collect_rows<Request>(db_->engine, select, "cannot read requeues", [](Statement& row) {
        return Request{row.integer(0), row.text(1), row.text(2)};
      });
  if (!requests) return requests.error();
  std::int64_t total = 0;
  for (const Request& request : *requests) {
    auto moved = move_requeued(request.reason, request.customer_key);
    if (!moved) return moved.error();
    total += *moved;
    if (!done.bind(1, now_ms).bind(2, *moved).bind(3, request.id).run()) {
      return storage_error(db_->engine, "cannot answer a requeue");
    }
  }
  return total;
}

Expected<std::vector<LedgerTotal>> SqliteOutbox::ledger_totals(std::int64_t since,
                                                               std::int64_t until) {
  std::lock_guard lock(db_->engine_mutex);
  // Rows delivered without a batch (a cost below one unit, carried) have nothing at Stripe yet.
  Statement select(db_->engine,
                   "SELECT e.sink, e.customer_key, e.customer_id, e.dimension, "
                   "CASE WHEN e.sink=0 THEN b.target ELSE '' END, SUM(e.quantity), COUNT(*) "
                   "FROM events e JOIN batches b ON b.id = e.batch_id "
                   "WHERE e.state=? AND e.event_time>=? AND e.event_time<? "
                   "GROUP BY 1, 2, 3, 4, 5 ORDER BY 3, 1, 4, 5");
  if (!select.ok()) return storage_error(db_->engine, "cannot read the ledger");
  select.bind(1, stored(EventState::kDelivered)).bind(2, since).bind(3, until);
  return collect_rows<LedgerTotal>(db_->engine, select, "cannot read the ledger",
                                   [](Statement& row) {
                                     return LedgerTotal{static_cast<Sink>(row.integer(0)),
                                                        row.text(1),
                                                        row.text(2),
                                                        row.text(3),
                                                        row.text(4),
                                                        row.integer(5),
                                                        row.integer(6)};
                                   });
}

Expected<std::vector<ReasonCount>> SqliteOutbox::reason_counts() {
  std::lock_guard lock(db_->engine_mutex);
  Statement select(db_->engine,
                   "SELECT state, reason, COUNT(*) FROM events WHERE state IN (?, ?) "
                   "GROUP BY state, reason ORDER BY 3 DESC, 1, 2");
  if (!select.ok()) return storage_error(db_->engine, "cannot count reasons");
  select.bind(1, stored(EventState::kParked)).bind(2, stored(EventState::kDead));
  return collect_rows<ReasonCount>(db_->engine, select, "cannot count reasons", [](Statement& row) {
    return ReasonCount{static_cast<EventState>(row.integer(0)), row.text(1), row.integer(2)};
  });
}

Expected<std::optional<BatchFailure>> SqliteOutbox::latest_batch_failure() {
  std::lock_guard lock(db_->engine_mutex);
  Statement select(db_->engine,
                   "SELECT id, sink, state, attempts, last_error, request_id "
                   "FROM batches WHERE last_error<>'' AND state IN (?, ?) "
                   "ORDER BY next_attempt_ms DESC, id DESC LIMIT 1");
  if (!select.ok()) return storage_error(db_->engine, "cannot read batches");
  select.bind(1, kBatchSending).bind(2, kBatchDead);
  const int rc = select.step();
  if (rc == SQLITE_DONE) return std::optional<BatchFailure>();
  if (rc != SQLITE_ROW) return storage_error(db_->engine, "cannot read batches");
  BatchFailure failure;
  failure.batch_id = select.integer(0);
  failure.sink = static_cast<Sink>(select.integer(1));
  failure.dead = select.integer(2) == kBatchDead;
  failure.attempts = static_cast<int>(select.integer(3));
  failure.last_error = select.text(4);
  failure.request_id = select.text(5);
  return std::optional<BatchFailure>(std::move(failure));
}

Expected<std::vector<LedgerRow>> SqliteOutbox::ledger_rows(std::int64_t since, std::int64_t until) {
  std::lock_guard lock(db_->engine_mutex);
  Statement select(db_->engine,
                   "SELECT e.call_id, e.customer_key, e.customer_id, e.sink, e.dimension, "
                   "e.model, e.prompt_tokens, e.completion_tokens, e.cost, e.quantity, "
                   "e.event_time, COALESCE(b.request_id, ''), "
                   "COALESCE(b.delivered_ms, e.updated_ms) "
                   "FROM events e LEFT JOIN batches b ON b.id = e.batch_id "
                   "WHERE e.state=? AND e.event_time>=? AND e.event_time<? "
                   "ORDER BY e.event_time, e.id");
  if (!select.ok()) return storage_error(db_->engine, "cannot read the ledger");
  select.bind(1, stored(EventState::kDelivered)).bind(2, since).bind(3, until);
  return collect_rows<LedgerRow>(db_->engine, select, "cannot read the ledger", [](Statement& row) {
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
