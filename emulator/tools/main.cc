// stripe-emulator: serves the Stripe emulator until SIGINT or SIGTERM.
//   stripe-emulator [--host 127.0.0.1] [--port 0] [--api-key KEY]...
//                   [--restricted-key rk_test_…=PERMISSION,PERMISSION…]... [--seed FILE.json]
//                   [--state-file PATH] [--webhook http://127.0.0.1:PORT/path=whsec_…]...
// Restricted key permissions are Stripe-style names (rak_customer_read,
// rak_billing_meter_event_write, …; the rak_ prefix may be left out): see
// emulator/src/permissions.h. Each --webhook endpoint receives every event the emulator emits,
// signed with its secret (the text after the last '=').
// Once listening it prints the state (see seed.h) as one JSON line on stdout and, with
// --state-file, writes the same JSON there atomically (temporary file, then rename).
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "seed.h"
#include "stripe_emulator/emulator.h"

namespace {

struct Arguments {
  std::string host = "127.0.0.1";
  int port = 0;
  std::vector<std::string> api_keys = {"sk_test_emulator_0000000000000000"};
  std::vector<std::string> restricted_keys;  // rk_test_…=perm,perm
  std::vector<std::string> webhooks;         // URL=SECRET
  std::string seed_file;
  std::string state_file;
};

nlohmann::json read_seed(const std::string& path) {
  if (path.empty()) return nlohmann::json::object();
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot read seed file " + path);
  return nlohmann::json::parse(file);
}

void write_atomically(const std::string& path, const std::string& text) {
  const auto temporary = path + ".tmp";
  {
    std::ofstream file(temporary, std::ios::trunc);
    file << text << '\n';
    if (!file.flush()) throw std::runtime_error("cannot write " + temporary);
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("cannot rename " + temporary + " to " + path);
  }
}

// Blocked in every thread (they inherit the mask), so only sigwait() below receives them.
sigset_t stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

// "rk_test_x=perm1,perm2" as a key and its permissions; throws std::invalid_argument without '='.
std::map<std::string, std::set<std::string>> restricted_keys(
    const std::vector<std::string>& specs) {
  std::map<std::string, std::set<std::string>> keys;
  for (const auto& spec : specs) {
    const auto equals = spec.find('=');
    if (equals == std::string::npos || equals == 0) {
      throw std::invalid_argument("--restricted-key takes KEY=PERMISSION[,PERMISSION…], not " +
                                  spec.substr(0, spec.find('=')));
    }
    auto& permissions = keys[spec.substr(0, equals)];
    std::stringstream list(spec.substr(equals + 1));
    std::string permission;
    while (std::getline(list, permission, ',')) {
      if (!permission.empty()) permissions.insert(permission);
    }
  }
  return keys;
}

// Adds each "URL=SECRET" as a webhook endpoint; throws std::invalid_argument without '='.
void add_webhooks(stripe_emulator::Emulator& emulator, const std::vector<std::string>& specs) {
  for (const auto& spec : specs) {
    const auto equals = spec.rfind('=');
    if (equals == std::string::npos || equals == 0) {
      throw std::invalid_argument("--webhook takes URL=SECRET, not " + spec);
    }
    emulator.add_webhook_endpoint(spec.substr(0, equals), spec.substr(equals + 1));
  }
}

int serve(const Arguments& arguments) {
  const auto signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const auto seed = read_seed(arguments.seed_file);
  stripe_emulator::EmulatorOptions options;
  options.host = arguments.host;
  options.port = arguments.port;
  options.api_keys = arguments.api_keys;
  options.restricted_keys = restricted_keys(arguments.restricted_keys);
  stripe_emulator::Emulator emulator(options);
  add_webhooks(emulator, arguments.webhooks);
  const auto state = stripe_emulator::apply_seed(emulator, seed).dump();
  if (!arguments.state_file.empty()) write_atomically(arguments.state_file, state);
  std::cout << state << std::endl;

  int received = 0;
  sigwait(&signals, &received);
  emulator.stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Arguments arguments;
  CLI::App app{"A local Stripe API emulator for tests and demos"};
  app.add_option("--host", arguments.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", arguments.port, "Port to listen on; 0 picks a free one")
      ->capture_default_str();
  app.add_option("--api-key", arguments.api_keys, "Secret key to accept (repeatable)")
      ->capture_default_str();
  app.add_option("--restricted-key", arguments.restricted_keys,
                 "Restricted key to accept, with its permissions: rk_test_...=rak_customer_read,"
                 "rak_billing_meter_event_write (repeatable)");
  app.add_option("--webhook", arguments.webhooks,
                 "Webhook endpoint and its signing secret: http://127.0.0.1:PORT/path=whsec_... "
                 "(repeatable)");
  app.add_option("--seed", arguments.seed_file, "Seed JSON: a metered price, customers and meters")
      ->check(CLI::ExistingFile);
  app.add_option("--state-file", arguments.state_file,
                 "Where to write the state JSON once listening");
  CLI11_PARSE(app, argc, argv);
  try {
    return serve(arguments);
  } catch (const std::exception& error) {
    std::cerr << "stripe-emulator: " << error.what() << '\n';
    return 1;
  }
}
