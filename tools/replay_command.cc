// `replay FILE.jsonl`: bills a file of LiteLLM StandardLoggingPayload lines through a StripeLogger
// made from the configuration, exactly as the gateway would have (a call id already in the outbox
// is billed once), then shuts it down with a deadline and reports what is still undelivered.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <vector>

#include "cli.h"
#include "cli_support.h"
#include "stripe_billing/stripe_logger.h"
#include "stripe_billing/usage_event.h"

namespace stripe_billing::cli {
namespace {

// Progress on stderr: a bar redrawn in place on a terminal, otherwise a line every 10 %.
class Progress {
 public:
  Progress(std::uintmax_t total_bytes, bool terminal) : total_(total_bytes), terminal_(terminal) {}

  void update(std::uintmax_t bytes, std::int64_t lines) {
    const int percent =
        total_ == 0 ? 100
                    : static_cast<int>(std::min<std::uintmax_t>(bytes, total_) * 100 / total_);
    if (terminal_ && percent != percent_) {
      const int filled = percent * kWidth / 100;
      std::cerr << "\r[" << std::string(filled, '#') << std::string(kWidth - filled, ' ') << "] "
                << percent << "% " << lines << " lines" << std::flush;
    } else if (!terminal_ && percent / 10 > percent_ / 10 && percent >= 10) {
      std::cerr << "replay: " << percent / 10 * 10 << "% (" << lines << " lines)\n";
    }
    percent_ = percent;
  }
  void finish(std::int64_t lines) {
    update(total_, lines);
    if (terminal_) std::cerr << "\n";
  }

 private:
  static constexpr int kWidth = 40;
  std::uintmax_t total_;
  bool terminal_;
  int percent_ = 0;
};

struct RejectedLine {
  std::int64_t line = 0;
  std::string reason;
};

struct FedLines {
  std::int64_t read = 0;
  std::int64_t accepted = 0;
  std::vector<RejectedLine> rejected;
};

bool is_blank(const std::string& line) {
  return line.find_first_not_of(" \t\r") == std::string::npos;
}

FedLines feed(std::istream& in, std::uintmax_t size, StripeLogger& logger) {
  FedLines fed;
  Progress progress(size, ::isatty(STDERR_FILENO) == 1);
  std::uintmax_t bytes = 0;
  std::int64_t number = 0;
  std::string line;
  while (std::getline(in, line)) {
    ++number;
    bytes += line.size() + 1;
    if (is_blank(line)) continue;
    ++fed.read;
    auto event = parse_standard_logging_payload(line);
    if (!event) {
      fed.rejected.push_back({number, event.error().message});
    } else if (event->call_id.empty()) {
      fed.rejected.push_back({number, "no litellm_call_id or id: the call cannot be billed once"});
    } else {
      logger.log_success_event(*event);
      ++fed.accepted;
    }
    progress.update(bytes, fed.read);
  }
  progress.finish(fed.read);
  return fed;
}

// Outbox rows per call: one per billed dimension and sink.
std::uint64_t rows_per_call(const FinalizedConfig& config) {
  return config.dimensions().size() * (config.billing_mode() == BillingMode::kDual ? 2 : 1);
}

void print_summary(const FinalizedConfig& config, const FedLines& fed,
                   const StripeLoggerStats& stats, bool drained, int timeout_s) {
  std::cout << "lines read: " << fed.read << ", accepted: " << fed.accepted
            << " (duplicates: " << stats.deduplicated / rows_per_call(config)
            << "), rejected: " << fed.rejected.size() << "\n";
  for (const RejectedLine& rejected : fed.rejected) {
    std::cout << "line " << rejected.line << ": rejected: " << rejected.reason << "\n";
  }
  std::cout << "outbox rows stored: " << stats.accepted << ", delivered: " << stats.delivered
            << ", still pending: " << stats.pending << ", parked: " << stats.parked
            << ", dead: " << stats.dead << "\n";
  for (const auto& [reason, count] : stats.rejected) {
    std::cout << "not billed (yet): " << reason << ": " << count << "\n";
  }
  if (!drained) {
    std::cout << "still pending after " << timeout_s << " s: " << stats.pending
              << " events stay in the outbox and are sent by the next process that opens it\n";
  }
}

}  // namespace

int run_replay(const ConfigSource& source, const ReplayOptions& options) {
  Config raw;
  const auto config = load_config(source, {}, &raw);
  if (!config) return kExitUsage;
  std::ifstream in(options.file, std::ios::binary);
  std::error_code size_error;
  const std::uintmax_t size = std::filesystem::file_size(options.file, size_error);
  if (!in || size_error) {
    std::cerr << "stripe-billing: cannot read " << options.file << "\n";
    return kExitUsage;
  }
  auto logger = make_stripe_logger(raw);
  if (!logger) return report_error(*config, "starting the billing pipeline", logger.error());
  const FedLines fed = feed(in, size, **logger);
  const bool drained = (*logger)->shutdown(std::chrono::steady_clock::now() +
                                           std::chrono::seconds(options.timeout_s));
  print_summary(*config, fed, (*logger)->stats(), drained, options.timeout_s);
  return fed.rejected.empty() ? kExitOk : kExitCheckFailed;
}

}  // namespace stripe_billing::cli
