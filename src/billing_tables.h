// The operator's tables the engine bills by: the model slug mapping (STRIPE_MODEL_MAP_FILE) and
// the price table (STRIPE_PRICE_TABLE). Loaded at start (a broken file is refused then, with the
// rest of the configuration), and reloaded without a restart when a file changes: a broken new
// version is refused with every problem named, and the last good one stays in force.
//
// Thread-safe: readers take a snapshot (a shared_ptr to an immutable table); a reload swaps it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "model_slug.h"
#include "price_table.h"
#include "stripe_billing/config.h"
#include "stripe_billing/error.h"

namespace stripe_billing {

class BillingTables {
 public:
  struct Reload {
    std::vector<std::string> loaded;   // files taken anew
    std::vector<std::string> refused;  // a file's problems (the last good table stays)
  };
  // Loads the configured files; an error names the file and every problem in it.
  static Expected<std::shared_ptr<BillingTables>> open(const FinalizedConfig& config);
  // The same, never failing: a refused file leaves its table empty (rules only, no prices) until
  // a reload takes it; `first` (when given) says what the first load did.
  static std::shared_ptr<BillingTables> load(const FinalizedConfig& config,
                                             Reload* first = nullptr);

  std::shared_ptr<const ModelSlugs> slugs() const;   // never null (rules only without a file)
  std::shared_ptr<const PriceTable> prices() const;  // null without STRIPE_PRICE_TABLE
  Decimal markup() const;                            // STRIPE_PRICE_MARKUP, the file's, or 1
  Decimal units_per_usd() const { return units_per_usd_; }  // STRIPE_COST_MULTIPLIER, exactly

  // Reads a file again when its modification time or size changed since it was last read.
  Reload reload();
  // reload(), at most once every STRIPE_TABLE_RELOAD_S (never when 0); an empty Reload otherwise.
  Reload reload_if_due(std::chrono::steady_clock::time_point now);
  std::uint64_t generation() const;  // grows with every table taken anew

 private:
  struct FileState {
    std::string path;
    std::int64_t mtime_ns = -1;
    std::int64_t size = -1;
  };

  BillingTables(const FinalizedConfig& config);
  static bool changed(FileState& file);

  std::string explicit_markup_;
  Decimal units_per_usd_;
  std::chrono::seconds interval_;

  mutable std::mutex mutex_;
  FileState slug_file_;
  FileState price_file_;
  std::shared_ptr<const ModelSlugs> slugs_;
  std::shared_ptr<const PriceTable> prices_;
  std::uint64_t generation_ = 0;
  std::chrono::steady_clock::time_point next_check_{};
};

}  // namespace stripe_billing
