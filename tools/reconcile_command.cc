// `reconcile --since T --until T`: the delivered ledger against what Stripe reports, as a table;
// fails (exit 1) when a row differs by more than the tolerance.
#include <iostream>

#include "cli.h"
#include "cli_support.h"
#include "stripe_billing/reconciliation.h"

namespace stripe_billing::cli {

namespace {

void print_report(const ReconciliationReport& report) {
  std::vector<std::vector<std::string>> rows{{"KIND", "CUSTOMER KEY", "CUSTOMER ID", "TARGET",
                                              "DIMENSION", "RANGE", "LOCAL", "STRIPE",
                                              "DIFFERENCE"}};
  for (const ReconciliationRow& row : report.rows) {
    rows.push_back({row.kind, row.customer_key, row.customer_id, row.target,
                    row.dimension.empty() ? "(all)" : row.dimension,
                    format_time(row.start) + ".." + format_time(row.end),
                    format_quantity(row.local), format_quantity(row.stripe),
                    format_quantity(row.difference())});
  }
  print_table(std::cout, rows, {6, 7, 8});
}

}  // namespace

int run_reconcile(const ConfigSource& source, const ReconcileOptions& options) {
  const auto since = parse_time_option("--since", options.since);
  const auto until = parse_time_option("--until", options.until);
  if (!since || !until) return kExitUsage;
  if (*since >= *until) {
    std::cerr << "stripe-billing: --since must be before --until\n";
    return kExitUsage;
  }
  const auto config = load_config(source);
  if (!config) return kExitUsage;
  auto report = reconcile(*config, *since, *until);
  if (!report) return report_error(*config, "reconcile", report.error());
  print_report(*report);
  const bool matches = report->matches(options.tolerance);
  std::size_t differing = 0;
  for (const auto& row : report->rows) differing += std::abs(row.difference()) > options.tolerance;
  if (matches) {
    std::cout << "matches: " << report->rows.size() << " rows, tolerance "
              << format_quantity(options.tolerance) << "\n";
  } else {
    std::cout << "differs: " << differing << " of " << report->rows.size() << " rows by more than "
              << format_quantity(options.tolerance) << "\n";
  }
  return matches ? kExitOk : kExitCheckFailed;
}

}  // namespace stripe_billing::cli
