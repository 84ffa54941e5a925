// stripe-billing: check, set up, inspect and repair the billing of an LLM gateway that links
// stripe_billing. See docs/cli.md for every command and exit status.
#include <CLI/CLI.hpp>
#include <exception>
#include <iostream>

#include "cli.h"
#include "stripe_billing/version.h"

namespace {

using namespace stripe_billing::cli;

constexpr const char* kDescription =
    "Checks, sets up, inspects and repairs Stripe billing through the stripe_billing outbox.\n"
    "The configuration comes from --config FILE.yaml (a LiteLLM config with a stripe_billing\n"
    "section) or from the STRIPE_* environment variables. Exit status: 0 ok, 1 the check failed,\n"
    "2 usage or configuration error, 3 Stripe or the outbox unreachable.";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{kDescription, "stripe-billing"};
  app.set_version_flag("--version", STRIPE_BILLING_VERSION);
  app.require_subcommand(1);
  app.fallthrough();

  ConfigSource source;
  app.add_option("--config", source.yaml_path,
                 "LiteLLM YAML config file (default: the STRIPE_* environment)")
      ->check(CLI::ExistingFile);

  int status = kExitOk;

  CheckOptions check;
  auto* check_command = app.add_subcommand(
      "check", "Validate the configuration; print the mode, the redacted key and the summary");
  check_command->add_flag("--online", check.online,
                          "Also ask Stripe: the key works, each price or meter exists");
  check_command->callback([&] { status = run_check(source, check); });

  SetupTestOptions setup;
  auto* setup_command = app.add_subcommand(
      "setup-test", "Create (once) a test product, price or meter, customers and subscriptions");
  setup_command->add_option("--customers", setup.customers, "Test customers to create")
      ->check(CLI::Range(0, 100))
      ->default_val(3);
  setup_command->callback([&] { status = run_setup_test(source, setup); });

  auto* status_command = app.add_subcommand(
      "status", "Outbox counts by state, oldest pending age, last error, parked and dead reasons");
  status_command->callback([&] { status = run_status(source); });

  RetryOptions retry;
  auto* retry_command = app.add_subcommand("retry", "Move parked or dead events back to pending");
  retry_command->add_option("--reason", retry.reason, "Only events parked or dead for this reason");
  retry_command->add_option("--customer", retry.customer, "Only events of this customer key");
  retry_command->add_flag("--force", retry.force,
                          "Also requeue max_delivery_age_exceeded (may bill twice: check Stripe)");
  retry_command->callback([&] { status = run_retry(source, retry); });

  ReplayOptions replay;
  auto* replay_command =
      app.add_subcommand("replay", "Bill a JSONL file of LiteLLM StandardLoggingPayload lines");
  replay_command->add_option("file", replay.file, "The JSONL file")
      ->required()
      ->check(CLI::ExistingFile);
  replay_command->add_option("--timeout-s", replay.timeout_s, "Seconds to deliver before exiting")
      ->check(CLI::Range(0, 86400))
      ->default_val(60);
  replay_command->callback([&] { status = run_replay(source, replay); });

  ReconcileOptions reconcile;
  auto* reconcile_command = app.add_subcommand(
      "reconcile", "Compare the delivered ledger with what Stripe reports for a time range");
  reconcile_command->add_option("--since", reconcile.since, "Unix seconds or RFC 3339")->required();
  reconcile_command->add_option("--until", reconcile.until, "Unix seconds or RFC 3339")->required();
  reconcile_command
      ->add_option("--tolerance", reconcile.tolerance, "Largest |difference| that still matches")
      ->check(CLI::NonNegativeNumber)
      ->default_val(0);
  reconcile_command->callback([&] { status = run_reconcile(source, reconcile); });

  ExportOptions export_options;
  auto* export_command = app.add_subcommand("export", "Write the delivered ledger to stdout");
  export_command->add_option("--format", export_options.format, "csv or jsonl")
      ->required()
      ->check(CLI::IsMember({"csv", "jsonl"}));
  export_command->add_option("--since", export_options.since, "Unix seconds or RFC 3339");
  export_command->add_option("--until", export_options.until, "Unix seconds or RFC 3339");
  export_command->callback([&] { status = run_export(source, export_options); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);  // prints help, the version or the error
    return code == 0 ? kExitOk : kExitUsage;
  } catch (const std::exception& error) {  // an answer of an unexpected shape
    std::cerr << "stripe-billing: " << error.what() << "\n";
    return kExitUnreachable;
  }
  return status;
}
