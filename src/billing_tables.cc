#include "billing_tables.h"

#include <sys/stat.h>

namespace stripe_billing {

BillingTables::BillingTables(const FinalizedConfig& config)
    : explicit_markup_(config.price_markup()),
      units_per_usd_(Decimal::parse(config.cost_multiplier_text()).value_or(Decimal{})),
      interval_(config.table_reload()) {
  slug_file_.path = config.model_map_file();
  price_file_.path = config.price_table();
  slugs_ = std::make_shared<const ModelSlugs>();
}

std::shared_ptr<BillingTables> BillingTables::load(const FinalizedConfig& config, Reload* first) {
  std::shared_ptr<BillingTables> tables(new BillingTables(config));
  Reload loaded = tables->reload();
  if (first != nullptr) *first = std::move(loaded);
  return tables;
}

Expected<std::shared_ptr<BillingTables>> BillingTables::open(const FinalizedConfig& config) {
  Reload first;
  std::shared_ptr<BillingTables> tables = load(config, &first);
  if (!first.refused.empty()) {
    std::string message;
    for (const std::string& problem : first.refused) {
      message += (message.empty() ? "" : "; ") + problem;
    }
    return Error{ErrorCode::kInvalidConfig, message, std::nullopt};
  }
  return tables;
}

bool BillingTables::changed(FileState& file) {
  if (file.path.empty()) return false;
  struct stat info {};
  std::int64_t mtime = -2;
  std::int64_t size = -2;
  if (::stat(file.path.c_str(), &info) == 0) {
    mtime = static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1'000'000'000 + info.st_mtim.tv_nsec;
    size = static_cast<std::int64_t>(info.st_size);
  }
  if (mtime == file.mtime_ns && size == file.size) return false;
  file.mtime_ns = mtime;
  file.size = size;
  return true;
}

BillingTables::Reload BillingTables::reload() {
  Reload result;
  std::lock_guard lock(mutex_);
  if (changed(slug_file_)) {
    auto loaded = ModelSlugs::from_file(slug_file_.path);
    if (loaded) {
      slugs_ = std::make_shared<const ModelSlugs>(std::move(*loaded));
      result.loaded.push_back(slug_file_.path);
      ++generation_;
    } else {
      result.refused.push_back("STRIPE_MODEL_MAP_FILE: " + loaded.error().message);
    }
  }
  if (changed(price_file_)) {
    auto loaded = PriceTable::from_file(price_file_.path);
    if (loaded) {
      prices_ = std::make_shared<const PriceTable>(std::move(*loaded));
      result.loaded.push_back(price_file_.path);
      ++generation_;
    } else {
      result.refused.push_back("STRIPE_PRICE_TABLE: " + loaded.error().message);
    }
  }
  return result;
}

BillingTables::Reload BillingTables::reload_if_due(std::chrono::steady_clock::time_point now) {
  {
    std::lock_guard lock(mutex_);
    if (interval_.count() == 0 || now < next_check_) return {};
    next_check_ = now + interval_;
  }
  return reload();
}

std::shared_ptr<const ModelSlugs> BillingTables::slugs() const {
  std::lock_guard lock(mutex_);
  return slugs_;
}

std::shared_ptr<const PriceTable> BillingTables::prices() const {
  std::lock_guard lock(mutex_);
  return prices_;
}

Decimal BillingTables::markup() const {
  if (auto given = Decimal::parse(explicit_markup_)) return *given;
  std::lock_guard lock(mutex_);
  if (prices_ && prices_->markup()) return *prices_->markup();
  return Decimal{1'000'000'000};
}

std::uint64_t BillingTables::generation() const {
  std::lock_guard lock(mutex_);
  return generation_;
}

}  // namespace stripe_billing
