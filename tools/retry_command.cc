// `retry`: parked and dead events back to pending, for the gateway to send at its next planning
// round. With a gateway running on the outbox the request is handed to it (through the file) and
// waited for, so the gateway's own counts stay right. `max_delivery_age_exceeded` is left alone
// unless forced: Stripe may already have billed that usage under an idempotency key it has since
// forgotten, so sending it again can bill twice.
#include <iostream>
#include <set>

#include "cli.h"
#include "cli_support.h"
#include "outbox.h"

namespace stripe_billing::cli {
namespace {

constexpr const char* kMaxAge = "max_delivery_age_exceeded";

}  // namespace

int run_retry(const ConfigSource& source, const RetryOptions& options) {
  const auto config = load_config(source);
  if (!config) return kExitUsage;
  if (options.reason == kMaxAge && !options.force) {
    std::cerr << "stripe-billing: refusing to requeue " << kMaxAge
              << ": that usage may already be billed (Stripe may have forgotten its idempotency "
                 "key); check Stripe first, then add --force\n";
    return kExitUsage;
  }
  // Only an existing, current outbox: never create one here.
  if (auto existing = open_configured_outbox(*config, StoreMode::kReadOnly, false); !existing) {
    return report_error(*config, "outbox", existing.error());
  }
  auto outbox = open_configured_outbox(*config, StoreMode::kMaintenance,
                                       config->durability() == Durability::kSync);
  if (!outbox) return report_error(*config, "outbox", outbox.error());
  auto reasons = (*outbox)->reason_counts();
  if (!reasons) return report_error(*config, "outbox", reasons.error());

  std::int64_t requeued = 0;
  std::int64_t left_old = 0;
  bool handed = false;
  bool answered = true;
  std::set<std::string> requeued_reasons;
  for (const ReasonCount& count : *reasons) {
    if (!options.reason.empty() && count.reason != options.reason) continue;
    if (count.reason == kMaxAge && !options.force) {
      left_old += count.events;
      continue;
    }
    // An empty reason would requeue every reason at once, max_delivery_age_exceeded included.
    if (count.reason.empty() || !requeued_reasons.insert(count.reason).second) continue;
    auto moved = (*outbox)->requeue(count.reason, options.customer);
    if (!moved) return report_error(*config, "outbox", moved.error());
    requeued += moved->moved;
    handed = handed || moved->handed_to_engine;
    answered = answered && moved->engine_done;
  }
  if (!answered) {
    std::cout << "handed the requeue to the running gateway, which has not answered yet; its "
                 "next planning round moves the events\n";
    return kExitOk;
  }
  std::cout << "requeued " << requeued << " events" << (handed ? " (by the running gateway)" : "")
            << "\n";
  if (left_old > 0) {
    std::cout << "left " << left_old << " events dead with " << kMaxAge
              << " (of any customer): that usage may already be billed; check Stripe, then run "
                 "retry --reason "
              << kMaxAge << " --force\n";
  }
  return kExitOk;
}

}  // namespace stripe_billing::cli
