#include "cli_support.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "meter_event.h"
#include "stripe_billing/version.h"

namespace stripe_billing::cli {

std::optional<FinalizedConfig> load_config(const ConfigSource& source,
                                           const std::function<void(Config&)>& adjust,
                                           Config* raw) {
  Config config;
  if (source.yaml_path.empty()) {
    config = config_from_env();
  } else {
    auto settings = config_from_yaml_file(source.yaml_path);
    if (!settings) {
      std::cerr << settings.error().message << "\n";
      return std::nullopt;
    }
    config = std::move(settings->config);
  }
  if (adjust) adjust(config);
  if (raw != nullptr) *raw = config;
  auto finalized = finalize_config(config);
  if (!finalized) {
    std::cerr << finalized.error().message << "\n";
    return std::nullopt;
  }
  return std::move(finalized.value());
}

int exit_code_for(const Error& error) {
  switch (error.code) {
    case ErrorCode::kInvalidConfig:
      return kExitUsage;
    case ErrorCode::kStripe: {
      const int status = error.stripe ? error.stripe->http_status : 0;
      return status >= 500 || status == 429 ? kExitUnreachable : kExitCheckFailed;
    }
    default:
      return kExitUnreachable;
  }
}

std::string redact(const FinalizedConfig& config, std::string text) {
  const std::string& key = config.api_key().reveal();
  if (key.empty()) return text;
  const std::string shown = config.api_key().redacted();
  for (auto at = text.find(key); at != std::string::npos; at = text.find(key, at + shown.size())) {
    text.replace(at, key.size(), shown);
  }
  return text;
}

int report_error(const FinalizedConfig& config, const std::string& what, const Error& error) {
  std::cerr << "stripe-billing: " << what << ": " << redact(config, error.to_string()) << "\n";
  return exit_code_for(error);
}

std::optional<std::int64_t> parse_time(std::string_view text) {
  std::int64_t seconds = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (ec == std::errc() && end == text.data() + text.size() && !text.empty()) return seconds;
  return parse_rfc3339(text);
}

std::optional<std::int64_t> parse_time_option(const std::string& name, const std::string& text) {
  auto parsed = parse_time(text);
  if (!parsed) {
    std::cerr << "stripe-billing: " << name << " must be unix seconds or RFC 3339 "
              << "(2026-01-01T00:00:00Z); got \"" << text << "\"\n";
  }
  return parsed;
}

std::string format_time(std::int64_t unix_seconds) { return to_rfc3339(unix_seconds); }

std::string format_quantity(double value) {
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 9.0e15) {
    return std::to_string(static_cast<std::int64_t>(value));
  }
  char text[64];
  std::snprintf(text, sizeof text, "%.6f", value);
  std::string out = text;
  while (!out.empty() && out.back() == '0') out.pop_back();
  if (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

StripeApi::StripeApi(const FinalizedConfig& config)
    : transport_(make_curl_transport({config.connect_timeout(), kUserAgent})),
      client_(*transport_, StripeClientOptions{config.api_base(), config.api_key(),
                                               config.api_version(), config.timeout()}) {}

Expected<std::vector<nlohmann::json>> list_all(const StripeClient& client, const std::string& path,
                                               FormFields query) {
  std::vector<nlohmann::json> objects;
  query.emplace_back("limit", "100");
  for (;;) {
    auto page = client.get(path, query);
    if (!page) return std::move(page).error();
    const auto& data = page->body.value("data", nlohmann::json::array());
    for (const auto& object : data) objects.push_back(object);
    if (!page->body.value("has_more", false) || data.empty()) return objects;
    const std::string last = data.back().value("id", "");
    if (query.back().first == "starting_after") query.pop_back();
    query.emplace_back("starting_after", last);
  }
}

bool is_missing(const Error& error) {
  return error.stripe && error.stripe->http_status == 404 &&
         error.stripe->code == "resource_missing";
}

void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows,
                 const std::vector<std::size_t>& right_aligned) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      const std::string padding(widths[i] - row[i].size(), ' ');
      const bool right =
          std::find(right_aligned.begin(), right_aligned.end(), i) != right_aligned.end();
      if (i > 0) line += "  ";
      line += right ? padding + row[i] : row[i] + (i + 1 < row.size() ? padding : "");
    }
    out << line << "\n";
  }
}

}  // namespace stripe_billing::cli
