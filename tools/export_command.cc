// `export --format csv|jsonl`: the delivered ledger of a time range on stdout, one row per
// delivered outbox row. CSV is RFC 4180 (every field that needs it quoted, CRLF line ends).
#include <iostream>
#include <limits>

#include "cli.h"
#include "cli_support.h"
#include "outbox.h"

namespace stripe_billing::cli {

namespace {

const std::vector<std::string> kColumns = {
    "call_id",    "customer_key",  "customer_id",       "sink", "dimension",
    "model",      "prompt_tokens", "completion_tokens", "cost", "quantity",
    "event_time", "request_id",    "delivered_at"};

std::vector<std::string> cells(const LedgerRow& row) {
  return {row.call_id,
          row.customer_key,
          row.customer_id,
          to_string(row.sink),
          row.dimension,
          row.model,
          std::to_string(row.prompt_tokens),
          std::to_string(row.completion_tokens),
          format_quantity(row.cost),
          std::to_string(row.quantity),
          format_time(row.event_time),
          row.request_id,
          format_time(row.delivered_ms / 1000)};
}

// RFC 4180: a field holding a comma, a quote, CR or LF is quoted, its quotes doubled.
std::string csv_field(const std::string& value) {
  if (value.find_first_of(",\"\r\n") == std::string::npos) return value;
  std::string quoted = "\"";
  for (char c : value) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + '"';
}

void write_csv_line(const std::vector<std::string>& fields) {
  std::string line;
  for (std::size_t i = 0; i < fields.size(); ++i) line += (i ? "," : "") + csv_field(fields[i]);
  std::cout << line << "\r\n";
}

void write_jsonl_line(const LedgerRow& row) {
  const nlohmann::json object = {{"call_id", row.call_id},
                                 {"customer_key", row.customer_key},
                                 {"customer_id", row.customer_id},
                                 {"sink", to_string(row.sink)},
                                 {"dimension", row.dimension},
                                 {"model", row.model},
                                 {"prompt_tokens", row.prompt_tokens},
                                 {"completion_tokens", row.completion_tokens},
                                 {"cost", row.cost},
                                 {"quantity", row.quantity},
                                 {"event_time", format_time(row.event_time)},
                                 {"request_id", row.request_id},
                                 {"delivered_at", format_time(row.delivered_ms / 1000)}};
  // Invalid UTF-8 from the host is replaced, not a reason to stop the export.
  std::cout << object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

}  // namespace

int run_export(const ConfigSource& source, const ExportOptions& options) {
  std::optional<std::int64_t> since = std::numeric_limits<std::int64_t>::min();
  std::optional<std::int64_t> until = std::numeric_limits<std::int64_t>::max();
  if (!options.since.empty()) since = parse_time_option("--since", options.since);
  if (!options.until.empty()) until = parse_time_option("--until", options.until);
  if (!since || !until) return kExitUsage;
  const auto config = load_config(source);
  if (!config) return kExitUsage;
  auto outbox = open_configured_outbox(*config, StoreMode::kReadOnly, false);
  if (!outbox) return report_error(*config, "outbox", outbox.error());
  auto rows = (*outbox)->ledger_rows(*since, *until);
  if (!rows) return report_error(*config, "outbox", rows.error());
  const bool csv = options.format == "csv";
  if (csv) write_csv_line(kColumns);
  for (const LedgerRow& row : *rows) {
    if (csv) {
      write_csv_line(cells(row));
    } else {
      write_jsonl_line(row);
    }
  }
  std::cout.flush();
  return std::cout ? kExitOk : kExitUnreachable;
}

}  // namespace stripe_billing::cli
