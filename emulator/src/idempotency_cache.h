// Stripe's idempotency for POST requests, scoped per API key: the first answer under an
// Idempotency-Key is kept and replayed to later requests with the same parameters; a request with
// other parameters is refused, and so is one that arrives while the first is still running.
// What is kept is up to the caller (the pipeline keeps no 400, 401 or 429). Thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "api_error.h"

namespace stripe_emulator {

class IdempotencyCache {
 public:
  struct Stored {
    Answer answer;
    std::string request_id;
  };

  // Holds a key for one request; forgets it when destroyed unless keep() was called.
  class Claim {
   public:
    Claim(IdempotencyCache& cache, std::string scope) : cache_(&cache), scope_(std::move(scope)) {}
    Claim(Claim&& other) noexcept
        : cache_(std::exchange(other.cache_, nullptr)), scope_(other.scope_) {}
    Claim(const Claim&) = delete;
    Claim& operator=(const Claim&) = delete;
    Claim& operator=(Claim&&) = delete;
    ~Claim();
    void keep(const Answer& answer, const std::string& request_id);

   private:
    IdempotencyCache* cache_;
    std::string scope_;
  };

  enum class Verdict { kProceed, kReplay, kOtherParameters, kInUse };
  struct Lookup {
    Verdict verdict = Verdict::kProceed;
    std::optional<Claim> claim;    // kProceed
    std::optional<Stored> stored;  // kReplay
  };

  Lookup claim(const std::string& api_key, const std::string& key, const std::string& fingerprint);

 private:
  struct Entry {
    std::string fingerprint;
    std::optional<Stored> stored;  // empty while the first request runs
  };

  std::mutex mutex_;
  std::map<std::string, Entry> entries_;  // by api key + '\n' + idempotency key
};

}  // namespace stripe_emulator
