// What the emulator does with one Stripe API request, in Stripe's order:
//   authenticate (401) -> rate limit (429) -> injected fault (kStatus answers, kCloseConnection
//   drops) -> route by the spec (404) -> parse and validate parameters (400) -> idempotency
//   (replay, 400 other parameters, 409 in use) -> kHang holds -> the endpoint does the work -> the
//   answer is kept under the Idempotency-Key -> kCloseAfterCommit drops the connection.
// Thread-safe: any number of requests may run through it at once.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "endpoints.h"
#include "exchange.h"
#include "fault_queue.h"
#include "hang_gate.h"
#include "idempotency_cache.h"
#include "rate_limiter.h"
#include "spec_catalog.h"
#include "store.h"

namespace stripe_emulator {

class ApiPipeline {
 public:
  ApiPipeline(std::vector<std::string> api_keys, Store& store, const SpecCatalog& catalog,
              FaultQueue& faults, HangGate& hangs, RateLimiter& rate_limiter);

  Outcome handle(const IncomingRequest& request);

 private:
  Expected<std::string> authenticate(const IncomingRequest& request) const;
  Outcome run(const IncomingRequest& request, const std::string& api_key,
              const std::optional<Fault>& fault);

  std::vector<std::string> api_keys_;
  const SpecCatalog& catalog_;
  FaultQueue& faults_;
  HangGate& hangs_;
  RateLimiter& rate_limiter_;
  IdempotencyCache idempotency_;
  std::map<std::string, Endpoint> endpoints_;
};

}  // namespace stripe_emulator
