// One libpq connection with its lock, its reconnects and its scrubbed messages, and the small
// helpers every PostgreSQL store of the library uses (the outbox, the admission store).
#pragma once

#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pg_conninfo.h"
#include "stripe_billing/error.h"
#include "stripe_billing/secret.h"
#include "usage_record.h"

namespace stripe_billing {

inline constexpr auto kPgReconnectEvery = std::chrono::seconds(1);

// A parameter in text form, or NULL.
using Param = std::optional<std::string>;
inline Param p(std::int64_t value) { return std::to_string(value); }
inline Param p(int value) { return std::to_string(value); }
// Text PostgreSQL can hold (no NUL, valid UTF-8): intake only hands over such text; what comes
// from elsewhere (Stripe's request ids and messages) is escaped rather than refused.
inline Param p(const std::string& value) {
  return is_storable_text(value) ? value : log_safe(value, value.size() * 4 + 16);
}
inline Param p(const std::optional<std::int64_t>& value) {
  return value ? Param(std::to_string(*value)) : std::nullopt;
}
inline Param p(double value) {
  char text[40];
  std::snprintf(text, sizeof text, "%.17g", value);
  return std::string(text);
}

class Result {
 public:
  explicit Result(PGresult* result = nullptr) : result_(result) {}
  Result(Result&& other) noexcept : result_(std::exchange(other.result_, nullptr)) {}
  Result& operator=(Result&& other) noexcept {
    std::swap(result_, other.result_);
    return *this;
  }
  ~Result() {
    if (result_ != nullptr) PQclear(result_);
  }
  PGresult* get() const { return result_; }
  int rows() const { return PQntuples(result_); }
  bool null(int row, int column) const { return PQgetisnull(result_, row, column) != 0; }
  std::string text(int row, int column) const {
    return std::string(PQgetvalue(result_, row, column),
                       static_cast<std::size_t>(PQgetlength(result_, row, column)));
  }
  std::int64_t integer(int row, int column) const {
    return null(row, column) ? 0 : std::strtoll(PQgetvalue(result_, row, column), nullptr, 10);
  }
  double real(int row, int column) const {
    return null(row, column) ? 0 : std::strtod(PQgetvalue(result_, row, column), nullptr);
  }
  std::int64_t affected() const {
    const char* count = PQcmdTuples(result_);
    return count && *count ? std::strtoll(count, nullptr, 10) : 0;
  }

 private:
  PGresult* result_;
};

// One libpq connection and its lock. Reconnects on demand; never shows the password (libpq's
// messages name the host and user, not the password).
class PgConnection {
 public:
  PgConnection(const Secret& conninfo, std::string redacted)
      : conninfo_(conninfo),
        redacted_(std::move(redacted)),
        secrets_(pg_conninfo_secrets(conninfo.reveal())) {}
  ~PgConnection() {
    if (conn_ != nullptr) PQfinish(conn_);
  }
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  std::mutex mutex;

  // Connected, or a kStorage error. Called with `mutex` held.
  Expected<void> ready(bool even_interrupted = false) {
    if (interrupted_->load() && !even_interrupted) {
      return error("writes are interrupted (shutdown)");
    }
    if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK &&
        PQtransactionStatus(conn_) != PQTRANS_UNKNOWN) {
      return {};
    }
    const auto now = std::chrono::steady_clock::now();
    if (conn_ != nullptr && now - last_attempt_ < kPgReconnectEvery) {
      return error("PostgreSQL is unreachable: " + last_error_);
    }
    last_attempt_ = now;
    if (conn_ != nullptr) PQfinish(conn_);
    prepared_.clear();
    // Our defaults first: whatever the connection string says overrides them.
    const char* keywords[] = {"connect_timeout", "application_name", "keepalives_idle", "dbname",
                              nullptr};
    const char* values[] = {"5", "stripe_billing", "30", conninfo_.reveal().c_str(), nullptr};
    conn_ = PQconnectdbParams(keywords, values, 1);
    if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
      last_error_ = conn_ ? scrubbed(trimmed(PQerrorMessage(conn_))) : "out of memory";
      return error("cannot connect to PostgreSQL " + redacted_ + ": " + last_error_);
    }
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
    // A hung statement fails instead of holding a thread for ever; a lock never waits long.
    Result set(PQexec(conn_, "SET statement_timeout = '30s'; SET lock_timeout = '10s'"));
    if (PQresultStatus(set.get()) != PGRES_COMMAND_OK) {
      last_error_ = scrubbed(trimmed(PQerrorMessage(conn_)));
      return error("cannot prepare the PostgreSQL session: " + last_error_);
    }
    return {};
  }

  Expected<Result> exec(const std::string& sql, const std::vector<Param>& params = {},
                        bool even_interrupted = false) {
    if (auto ok = ready(even_interrupted); !ok) return ok.error();
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const Param& param : params) values.push_back(param ? param->c_str() : nullptr);
    // Without parameters, one round trip may carry several statements (the schema).
    Result result(params.empty() ? PQexec(conn_, sql.c_str())
                                 : PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()),
                                                nullptr, values.data(), nullptr, nullptr, 0));
    return checked(std::move(result));
  }

  // The same through a statement prepared once per connection under `name`.
  Expected<Result> exec_prepared(const std::string& name, const std::string& sql,
                                 const std::vector<Param>& params, bool retried_prepare = false) {
    if (auto ok = ready(); !ok) return ok.error();
    if (prepared_.count(name) == 0) {
      Result made(
          PQprepare(conn_, name.c_str(), sql.c_str(), static_cast<int>(params.size()), nullptr));
      if (PQresultStatus(made.get()) != PGRES_COMMAND_OK) {
        last_error_ = scrubbed(trimmed(PQerrorMessage(conn_)));
        return error(last_error_);
      }
      prepared_.insert(name);
    }
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const Param& param : params) values.push_back(param ? param->c_str() : nullptr);
    Result result(PQexecPrepared(conn_, name.c_str(), static_cast<int>(values.size()),
                                 values.data(), nullptr, nullptr, 0));
    const char* state = PQresultErrorField(result.get(), PG_DIAG_SQLSTATE);
    if (state != nullptr && std::string_view(state) == "26000" && !retried_prepare) {
      // The server forgot it (a DEALLOCATE, a pooler's new session): prepared again, once.
      prepared_.erase(name);
      return exec_prepared(name, sql, params, true);
    }
    return checked(std::move(result));
  }

  // Runs `body` in one transaction: committed when it returns a value, rolled back otherwise.
  template <typename T, typename Body>
  Expected<T> transaction(Body body, const char* what) {
    if (auto begun = exec("BEGIN"); !begun) return prefixed(begun.error(), what);
    Expected<T> out = body();
    if (!out) {
      (void)exec("ROLLBACK");
      return prefixed(out.error(), what);
    }
    if (auto committed = exec("COMMIT"); !committed) {
      return prefixed(committed.error(), what);
    }
    return out;
  }

  void share_interrupt(std::shared_ptr<std::atomic<bool>> flag) { interrupted_ = std::move(flag); }

 private:
  static std::string trimmed(const char* message) {
    std::string text = message ? message : "";
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return text;
  }
  static Error error(std::string message) {
    return Error{ErrorCode::kStorage, std::move(message), std::nullopt};
  }
  // A statement's outcome. Errors of the data itself (SQLSTATE classes 22 and 23: the same rows
  // fail again however often they are tried) are kInvalidEvent; every other failure (the
  // connection, the server's resources, a lock, a restart) is kStorage, worth trying again.
  Expected<Result> checked(Result result) {
    const ExecStatusType status = PQresultStatus(result.get());
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
    last_error_ = scrubbed(trimmed(PQerrorMessage(conn_)));
    const char* state = PQresultErrorField(result.get(), PG_DIAG_SQLSTATE);
    const std::string_view code = state ? state : "";
    if (code.substr(0, 2) == "22" || code.substr(0, 2) == "23") {
      return Error{ErrorCode::kInvalidEvent, "PostgreSQL refused the data: " + last_error_,
                   std::nullopt};
    }
    return error(last_error_);
  }
  // libpq's messages name the host and the user, and may quote a database name that holds a
  // password (a URI given as dbname): any password of the connection string is cut out.
  std::string scrubbed(std::string text) const {
    for (const std::string& secret : secrets_) {
      if (secret.size() < 3) continue;
      for (std::size_t at = text.find(secret); at != std::string::npos;
           at = text.find(secret, at)) {
        text.replace(at, secret.size(), "…");
      }
    }
    return text;
  }
  static Error prefixed(const Error& error, const char* what) {
    return Error{ErrorCode::kStorage, std::string(what) + ": " + error.message, std::nullopt};
  }

  const Secret conninfo_;
  const std::string redacted_;
  const std::vector<std::string> secrets_;  // what scrubbed() cuts out
  PGconn* conn_ = nullptr;
  std::chrono::steady_clock::time_point last_attempt_{};
  std::string last_error_;
  std::set<std::string> prepared_;  // statements prepared on this connection
  std::shared_ptr<std::atomic<bool>> interrupted_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace stripe_billing
