#include "pg_conninfo.h"

#include <libpq-fe.h>

#include <cctype>
#include <cstdlib>
#include <map>
#include <memory>
#include <string_view>

namespace stripe_billing {
namespace {

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

bool is_uri(std::string_view text) {
  return starts_with(text, "postgresql://") || starts_with(text, "postgres://");
}

bool loopback(std::string_view host) {
  if (host.empty() || host.front() == '/' || host.front() == '@') return true;  // local sockets
  return host == "localhost" || host == "::1" || host == "[::1]" || starts_with(host, "127.");
}

std::vector<std::string> split_hosts(const std::string& value) {
  std::vector<std::string> hosts;
  std::size_t start = 0;
  while (start <= value.size()) {
    const std::size_t comma = value.find(',', start);
    hosts.push_back(
        value.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return hosts;
}

using Options = std::map<std::string, std::string>;

bool secret_option(const std::string& key) { return key == "password" || key == "sslpassword"; }

bool parse(const std::string& conninfo, Options& options) {
  char* error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &error);
  // libpq's message may quote the string, password and all: never shown.
  if (error != nullptr) PQfreemem(error);
  if (parsed == nullptr) return false;
  for (PQconninfoOption* option = parsed; option->keyword != nullptr; ++option) {
    if (option->val != nullptr) options[option->keyword] = option->val;
  }
  PQconninfoFree(parsed);
  return true;
}

// The string rebuilt from its options, password shown as `…`, as a URI when given as one.
std::string rebuild(const Options& options, bool uri) {
  const auto get = [&](const char* key) {
    auto it = options.find(key);
    return it == options.end() ? std::string() : it->second;
  };
  std::string out;
  if (uri) {
    out = "postgresql://";
    const std::string user = get("user");
    if (!user.empty() || options.count("password")) {
      out += user;
      if (options.count("password")) out += ":…";
      out += "@";
    }
    const std::string host = get("host").empty() ? get("hostaddr") : get("host");
    out += host.find('/') != std::string::npos ? "" : host;
    if (!get("port").empty()) out += ":" + get("port");
    out += "/" + get("dbname");
    char separator = '?';
    for (const auto& [key, value] : options) {
      if (key == "user" || key == "password" || key == "host" || key == "hostaddr" ||
          key == "port" || key == "dbname") {
        continue;
      }
      out += separator + key + "=" + (secret_option(key) ? std::string("…") : value);
      separator = '&';
    }
    if (host.find('/') != std::string::npos) out += std::string(1, separator) + "host=" + host;
    return out;
  }
  for (const auto& [key, value] : options) {
    if (!out.empty()) out += ' ';
    out += key + "=" + (secret_option(key) ? std::string("…") : value);
  }
  return out;
}

}  // namespace

PgConninfoCheck check_pg_conninfo(const std::string& conninfo) {
  PgConninfoCheck check;
  const bool uri = is_uri(conninfo);
  if (!uri && conninfo.find('=') == std::string::npos) {
    check.problems.push_back(
        "must be a PostgreSQL connection string: postgresql://user@host:5432/dbname?sslmode=… "
        "or keywords such as host=… dbname=…");
    return check;
  }
  Options options;
  if (!parse(conninfo, options)) {
    check.problems.push_back(
        "cannot be parsed as a PostgreSQL connection string (libpq's URI or keyword form); "
        "characters such as @ : / ? & in a password must be percent-encoded in a URI");
    return check;
  }
  const std::string dbname = options.count("dbname") ? options["dbname"] : "";
  if (dbname.find('=') != std::string::npos || is_uri(dbname)) {
    check.problems.push_back(
        "has a dbname that is itself a connection string; give the URI or the keywords directly");
    return check;
  }
  if (options.count("service") != 0) {
    check.problems.push_back(
        "names a service (pg_service.conf): give the host, port, dbname and sslmode here, so "
        "they can be checked");
    return check;
  }
  check.redacted = rebuild(options, uri);
  // libpq falls back to PGHOST / PGHOSTADDR / PGSSLMODE: what it would use is what is checked.
  for (const char* key : {"host", "hostaddr", "sslmode"}) {
    std::string variable = std::string("PG") + key;
    for (char& c : variable) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    const char* value = std::getenv(variable.c_str());
    if (options.count(key) == 0 && value != nullptr && *value != '\0') options[key] = value;
  }
  const std::string sslmode = options.count("sslmode") ? options["sslmode"] : "";
  const bool verified = sslmode == "verify-ca" || sslmode == "verify-full";
  std::vector<std::string> hosts = split_hosts(options.count("host") ? options["host"] : "");
  if (options.count("hostaddr")) {
    for (const std::string& host : split_hosts(options["hostaddr"])) hosts.push_back(host);
  }
  for (const std::string& host : hosts) {
    if (!loopback(host) && !verified) {
      check.problems.push_back("names the remote host " + host +
                               " without sslmode=verify-full (or verify-ca): usage data and the "
                               "password would cross the network without a verified server");
      break;
    }
  }
  return check;
}

std::vector<std::string> pg_conninfo_secrets(const std::string& conninfo) {
  std::vector<std::string> secrets;
  Options options;
  if (!parse(conninfo, options)) return secrets;
  for (const auto& [key, value] : options) {
    if (secret_option(key) && !value.empty()) secrets.push_back(value);
  }
  return secrets;
}

std::string redact_pg_conninfo(const std::string& conninfo) {
  Options options;
  if (!parse(conninfo, options)) return "";
  return rebuild(options, is_uri(conninfo));
}

}  // namespace stripe_billing
