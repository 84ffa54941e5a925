#include "idempotency_cache.h"

namespace stripe_emulator {

IdempotencyCache::Lookup IdempotencyCache::claim(const std::string& api_key, const std::string& key,
                                                 const std::string& fingerprint) {
  const auto scope = api_key + '\n' + key;
  std::lock_guard lock(mutex_);
  const auto [entry, inserted] = entries_.try_emplace(scope, Entry{fingerprint, std::nullopt});
  if (inserted) return Lookup{Verdict::kProceed, Claim(*this, scope), std::nullopt};
  if (!entry->second.stored) return Lookup{Verdict::kInUse, std::nullopt, std::nullopt};
  if (entry->second.fingerprint != fingerprint) {
    return Lookup{Verdict::kOtherParameters, std::nullopt, std::nullopt};
  }
  return Lookup{Verdict::kReplay, std::nullopt, entry->second.stored};
}

IdempotencyCache::Claim::~Claim() {
  if (cache_ == nullptr) return;
  std::lock_guard lock(cache_->mutex_);
  cache_->entries_.erase(scope_);
}

void IdempotencyCache::Claim::keep(const Answer& answer, const std::string& request_id) {
  if (cache_ == nullptr) return;
  {
    std::lock_guard lock(cache_->mutex_);
    cache_->entries_.at(scope_).stored = Stored{answer, request_id};
  }
  cache_ = nullptr;
}

}  // namespace stripe_emulator
