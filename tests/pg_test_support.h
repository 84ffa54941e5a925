// PostgreSQL for the tests: the server named by STRIPE_TEST_PG_URL (unset: PostgreSQL tests skip,
// visibly), and a schema of a test's own, unique across parallel test processes and dropped with
// everything in it when the test ends.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#if __has_include(<libpq-fe.h>)
#include <libpq-fe.h>
#else
#include <postgresql/libpq-fe.h>
#endif

#include <atomic>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace stripe_billing::testing {

inline constexpr const char* kNoPgMessage =
    "STRIPE_TEST_PG_URL is not set: PostgreSQL tests skipped (scripts/pg-cluster.sh starts a "
    "throwaway server)";

// The test server's connection string, or nullopt when the tests run without PostgreSQL.
inline std::optional<std::string> test_pg_url() {
  const char* url = std::getenv("STRIPE_TEST_PG_URL");
  if (url == nullptr || *url == '\0') return std::nullopt;
  return std::string(url);
}

// In a test body or SetUp(): skips (shown as SKIPPED, never passed) without a test server.
#define STRIPE_SKIP_WITHOUT_PG()                               \
  do {                                                         \
    if (!::stripe_billing::testing::test_pg_url()) {           \
      GTEST_SKIP() << ::stripe_billing::testing::kNoPgMessage; \
    }                                                          \
  } while (false)

// The rows of one statement as text ("" for NULL), or the server's error.
struct PgRows {
  bool ok = false;
  std::string error;
  std::vector<std::vector<std::string>> rows;
};

// Runs `sql` on a connection of its own (the test's view of the database, not the store's).
inline PgRows pg_query(const std::string& url, const std::string& sql) {
  PgRows out;
  PGconn* conn = PQconnectdb(url.c_str());
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
    out.error = conn ? PQerrorMessage(conn) : "out of memory";
    if (conn != nullptr) PQfinish(conn);
    return out;
  }
  PQsetNoticeProcessor(
      conn, [](void*, const char*) {}, nullptr);
  PGresult* result = PQexec(conn, sql.c_str());
  const ExecStatusType status = PQresultStatus(result);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
    out.ok = true;
    for (int row = 0; row < PQntuples(result); ++row) {
      std::vector<std::string> values;
      for (int column = 0; column < PQnfields(result); ++column) {
        values.emplace_back(PQgetisnull(result, row, column) ? ""
                                                             : PQgetvalue(result, row, column));
      }
      out.rows.push_back(std::move(values));
    }
  } else {
    out.error = PQerrorMessage(conn);
  }
  PQclear(result);
  PQfinish(conn);
  return out;
}

// A schema name no other test (in this process or another) uses: sbt_<pid>_<counter>_<random>.
inline std::string unique_schema_name() {
  static std::atomic<int> counter{0};
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device device;
  std::uniform_int_distribution<int> pick(0, 35);
  std::string name = "sbt_" + std::to_string(::getpid()) + "_" + std::to_string(++counter) + "_";
  for (int i = 0; i < 10; ++i) name.push_back(kAlphabet[pick(device)]);
  return name;  // lowercase, at most 4 + 10 + 1 + 10 + 1 + 10 = 36 characters
}

// A fresh schema name on the test server; the schema (whatever the test created in it) is dropped
// when this goes out of scope. The store creates the schema itself when it opens.
class PgTestSchema {
 public:
  explicit PgTestSchema(std::string url) : url_(std::move(url)), name_(unique_schema_name()) {}
  ~PgTestSchema() {
    const PgRows dropped = pg_query(url_, "DROP SCHEMA IF EXISTS " + name_ + " CASCADE");
    if (!dropped.ok) ADD_FAILURE() << "cannot drop test schema " << name_ << ": " << dropped.error;
  }
  PgTestSchema(const PgTestSchema&) = delete;
  PgTestSchema& operator=(const PgTestSchema&) = delete;

  const std::string& name() const noexcept { return name_; }
  const std::string& url() const noexcept { return url_; }
  // Runs `sql` ("{s}" is not replaced: name tables as name() + ".events"); a failure fails the
  // test.
  PgRows query(const std::string& sql) const {
    PgRows rows = pg_query(url_, sql);
    EXPECT_TRUE(rows.ok) << sql << ": " << rows.error;
    return rows;
  }
  // Whether the schema exists on the server.
  bool exists() const {
    const PgRows rows = query("SELECT COUNT(*) FROM pg_namespace WHERE nspname = '" + name_ + "'");
    return rows.ok && !rows.rows.empty() && rows.rows[0][0] == "1";
  }

 private:
  const std::string url_;
  const std::string name_;
};

}  // namespace stripe_billing::testing
