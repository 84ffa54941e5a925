// The stripe-billing command-line tool: one function per command, each returning the process
// exit status. Every command reads the configuration the way the library does (a LiteLLM YAML
// file or the environment, then finalize_config) and never prints the API key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "stripe_billing/config.h"

namespace stripe_billing::cli {

// The exit statuses, documented in docs/cli.md.
enum ExitCode : int {
  kExitOk = 0,
  kExitCheckFailed = 1,  // the command's own check failed: a difference, rejected lines, ...
  kExitUsage = 2,        // bad arguments or configuration
  kExitUnreachable = 3,  // Stripe or the outbox could not be reached
};

// What every command starts from: where the configuration comes from.
struct ConfigSource {
  std::string yaml_path;  // --config; empty: the environment
};

struct CheckOptions {
  bool online = false;
};
struct SetupTestOptions {
  int customers = 3;
};
struct RetryOptions {
  std::string reason;
  std::string customer;
  bool force = false;
};
struct ReplayOptions {
  std::string file;
  int timeout_s = 60;
};
struct ReconcileOptions {
  std::string since;
  std::string until;
  double tolerance = 0;
};
struct ExportOptions {
  std::string format;  // csv | jsonl
  std::string since;   // empty: from the start
  std::string until;   // empty: to the end
};

int run_check(const ConfigSource& source, const CheckOptions& options);
int run_setup_test(const ConfigSource& source, const SetupTestOptions& options);
int run_status(const ConfigSource& source);
int run_retry(const ConfigSource& source, const RetryOptions& options);
int run_replay(const ConfigSource& source, const ReplayOptions& options);
int run_reconcile(const ConfigSource& source, const ReconcileOptions& options);
int run_export(const ConfigSource& source, const ExportOptions& options);

}  // namespace stripe_billing::cli
