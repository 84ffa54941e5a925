// PostgreSQL connection strings (libpq's URI and keyword forms), checked and shown without their
// password.
#pragma once

#include <string>
#include <vector>

namespace stripe_billing {

struct PgConninfoCheck {
  std::vector<std::string> problems;  // never contain the password
  std::string redacted;               // the string with its password as `…`
};

// Parses with libpq. A password in the string is allowed (it is shown as `…`, as an sslpassword
// is); a host that is not loopback or a local socket needs sslmode=verify-ca or verify-full, the
// host and sslmode libpq would take from PGHOST, PGHOSTADDR and PGSSLMODE included: TLS
// verification stays on. A dbname that is itself a connection string and a service are refused
// (neither could be checked nor shown safely).
PgConninfoCheck check_pg_conninfo(const std::string& conninfo);
// The values a message must never show: password and sslpassword.
std::vector<std::string> pg_conninfo_secrets(const std::string& conninfo);
// Only the redacted form ("" when it cannot be parsed).
std::string redact_pg_conninfo(const std::string& conninfo);

}  // namespace stripe_billing
