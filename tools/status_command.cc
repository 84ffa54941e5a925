// `status`: what the outbox holds — events by state, the age of the oldest one waiting, the
// latest failure recorded on a batch, and why events are parked or dead. Read-only.
#include <iostream>

#include "cli.h"
#include "cli_support.h"
#include "outbox.h"

namespace stripe_billing::cli {
namespace {

std::string age(std::int64_t milliseconds) {
  const std::int64_t seconds = milliseconds / 1000;
  if (seconds < 120) return std::to_string(seconds) + "s";
  if (seconds < 7200) return std::to_string(seconds / 60) + "m";
  return std::to_string(seconds / 3600) + "h" + std::to_string(seconds % 3600 / 60) + "m";
}

void print_counts(const OutboxCounts& counts) {
  std::cout << "events by state:\n";
  print_table(std::cout,
              {{"  pending", std::to_string(counts.pending)},
               {"  sending", std::to_string(counts.batched)},
               {"  delivered", std::to_string(counts.delivered)},
               {"  parked", std::to_string(counts.parked)},
               {"  dead", std::to_string(counts.dead)}},
              {1});
  std::cout << "oldest pending: "
            << (counts.oldest_pending_ms == 0 ? "none" : age(now_ms() - counts.oldest_pending_ms))
            << "\n";
}

void print_failure(const FinalizedConfig& config, const std::optional<BatchFailure>& failure) {
  if (!failure) {
    std::cout << "last error: none\n";
    return;
  }
  std::cout << "last error: batch " << failure->batch_id << " (" << to_string(failure->sink) << ", "
            << (failure->dead ? "dead" : "retrying") << ", " << failure->attempts << " attempts"
            << (failure->request_id.empty() ? "" : ", request " + failure->request_id)
            << "): " << redact(config, failure->last_error) << "\n";
}

void print_reasons(const std::vector<ReasonCount>& reasons) {
  if (reasons.empty()) {
    std::cout << "parked and dead by reason: none\n";
    return;
  }
  std::cout << "parked and dead by reason:\n";
  std::vector<std::vector<std::string>> rows;
  for (const ReasonCount& count : reasons) {
    rows.push_back({"  " + std::string(to_string(count.state)),
                    count.reason.empty() ? "(none)" : count.reason, std::to_string(count.events)});
  }
  print_table(std::cout, rows, {2});
}

}  // namespace

int run_status(const ConfigSource& source) {
  const auto config = load_config(source);
  if (!config) return kExitUsage;
  auto outbox = open_configured_outbox(*config, StoreMode::kReadOnly, false);
  if (!outbox) return report_error(*config, "outbox", outbox.error());
  auto counts = (*outbox)->counts();
  if (!counts) return report_error(*config, "outbox", counts.error());
  auto failure = (*outbox)->latest_batch_failure();
  if (!failure) return report_error(*config, "outbox", failure.error());
  auto reasons = (*outbox)->reason_counts();
  if (!reasons) return report_error(*config, "outbox", reasons.error());
  std::cout << "outbox: "
            << (config->uses_postgres()
                    ? config->outbox_url_redacted() + " (schema " + config->outbox_schema() + ")"
                    : config->outbox_path())
            << "\n";
  print_counts(*counts);
  print_failure(*config, *failure);
  print_reasons(*reasons);
  return kExitOk;
}

}  // namespace stripe_billing::cli
