// The SQLite helpers the stores share: a prepared statement that cleans up after itself, and
// BEGIN IMMEDIATE … COMMIT rolled back unless committed.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>

#include "stripe_billing/error.h"

namespace stripe_billing {

inline Error storage_error(sqlite3* db, const std::string& what) {
  return Error{ErrorCode::kStorage, what + ": " + (db ? sqlite3_errmsg(db) : "no database"),
               std::nullopt};
}

// A prepared statement that finalizes itself, or one borrowed from a connection's cache (reset,
// not finalized, when done).
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql) : Statement(db, sql.c_str()) {}
  Statement(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &statement_, nullptr) != SQLITE_OK) statement_ = nullptr;
  }
  explicit Statement(sqlite3_stmt* cached) : statement_(cached), owned_(false) {}
  ~Statement() {
    if (owned_) {
      sqlite3_finalize(statement_);
    } else if (statement_ != nullptr) {
      reset();
    }
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  bool ok() const { return statement_ != nullptr; }
  Statement& bind(int index, std::int64_t value) {
    sqlite3_bind_int64(statement_, index, value);
    return *this;
  }
  Statement& bind(int index, int value) { return bind(index, static_cast<std::int64_t>(value)); }
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
  Statement& bind(int index, const std::optional<std::int64_t>& value) {
    if (value) return bind(index, *value);
    sqlite3_bind_null(statement_, index);
    return *this;
  }
  int step() { return sqlite3_step(statement_); }
  sqlite3_stmt* handle() const { return statement_; }
  void reset() {
    sqlite3_reset(statement_);
    sqlite3_clear_bindings(statement_);
  }
  std::int64_t integer(int column) { return sqlite3_column_int64(statement_, column); }
  double real(int column) { return sqlite3_column_double(statement_, column); }
  bool null(int column) { return sqlite3_column_type(statement_, column) == SQLITE_NULL; }
  std::string text(int column) {
    const auto* data = reinterpret_cast<const char*>(sqlite3_column_text(statement_, column));
    return data ? std::string(data,
                              static_cast<std::size_t>(sqlite3_column_bytes(statement_, column)))
                : std::string();
  }
  // Runs a statement that returns no rows.
  bool run() {
    const int rc = step();
    reset();
    return rc == SQLITE_DONE;
  }

 private:
  sqlite3_stmt* statement_ = nullptr;
  bool owned_ = true;
};

// BEGIN IMMEDIATE … COMMIT, rolled back unless commit() succeeded. IMMEDIATE takes the write lock
// up front, so two connections never deadlock upgrading a read. With `cached` statements (the
// writer's), nothing is parsed per transaction.
struct TransactionStatements {
  sqlite3_stmt* begin = nullptr;
  sqlite3_stmt* commit = nullptr;
  sqlite3_stmt* rollback = nullptr;
};

class Transaction {
 public:
  explicit Transaction(sqlite3* db, const TransactionStatements* cached = nullptr)
      : db_(db), cached_(cached) {
    began_ = run(cached_ ? cached_->begin : nullptr, "BEGIN IMMEDIATE");
  }
  ~Transaction() {
    if (began_ && !committed_) run(cached_ ? cached_->rollback : nullptr, "ROLLBACK");
  }
  bool began() const { return began_; }
  bool commit() {
    committed_ = run(cached_ ? cached_->commit : nullptr, "COMMIT");
    return committed_;
  }

 private:
  bool run(sqlite3_stmt* cached, const char* sql) {
    if (cached == nullptr) return sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
    const int rc = sqlite3_step(cached);
    sqlite3_reset(cached);
    return rc == SQLITE_DONE;
  }

  sqlite3* db_;
  const TransactionStatements* cached_;
  bool began_ = false;
  bool committed_ = false;
};

}  // namespace stripe_billing
