// What the emulator does with one Stripe API request, in Stripe's order:
//   authenticate (401) -> rate limit (429) -> injected fault (kStatus answers, kCloseConnection
//   drops) -> route by the spec (404) -> parse and validate parameters (400) -> a v1 meter event
//   locks its customer and meter until it is answered (429 while another holds them) ->
//   idempotency (replay, 400 other parameters, 409 in use) -> kHang holds -> the endpoint does the
//   work -> the answer is kept under the Idempotency-Key -> kCloseAfterCommit drops the
//   connection.
// Authentication takes a secret key or a restricted key (RestrictedKeys); a restricted key without
// the permission the operation needs gets 403 once the operation is known (after routing, before
// parameter validation). v2 requests (/v2/…, JSON) share the first steps: the meter event stream
// authenticates with a meter event session token instead of a key (and only the stream does), and
// refusals are in the v2 error shape. After the fault step they leave the v1 path: the
// permission check by path, no spec routing and no idempotency (Stripe's v2 keys are not
// emulated), then kHang holds, v2_endpoints does the work, kCloseAfterCommit drops.
// Thread-safe: any number of requests may run through it at once.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "credit_store.h"
#include "endpoints.h"
#include "event_log.h"
#include "exchange.h"
#include "fault_queue.h"
#include "hang_gate.h"
#include "idempotency_cache.h"
#include "meter_event_locks.h"
#include "meter_sessions.h"
#include "meter_store.h"
#include "permissions.h"
#include "rate_limiter.h"
#include "spec_catalog.h"
#include "store.h"

namespace stripe_emulator {

class ApiPipeline {
 public:
  ApiPipeline(std::vector<std::string> api_keys, Store& store, MeterStore& meters,
              const CreditStore& credits, const EventLog& events, MeterSessions& sessions,
              const SpecCatalog& catalog, FaultQueue& faults, HangGate& hangs,
              RateLimiter& rate_limiter, MeterEventLocks& meter_locks,
              const RestrictedKeys& restricted_keys);

  Outcome handle(const IncomingRequest& request);

 private:
  Expected<std::string> authenticate(const IncomingRequest& request) const;
  Outcome run(const IncomingRequest& request, const std::string& api_key,
              const std::optional<Fault>& fault);
  // The lock Stripe's one-request-at-a-time rule takes for a v1 meter event on its customer and
  // meter (none for other operations and events that name no customer), or the 429 refusal.
  Expected<std::optional<MeterEventLocks::Lock>> lock_meter_event(const std::string& operation_id,
                                                                  const nlohmann::json& params);
  Outcome run_v2(const IncomingRequest& request, const std::string& api_key,
                 const std::optional<Fault>& fault);

  std::vector<std::string> api_keys_;
  MeterStore& meters_;
  const EventLog& events_;
  MeterSessions& sessions_;
  const SpecCatalog& catalog_;
  FaultQueue& faults_;
  HangGate& hangs_;
  RateLimiter& rate_limiter_;
  MeterEventLocks& meter_locks_;
  const RestrictedKeys& restricted_keys_;
  IdempotencyCache idempotency_;
  std::map<std::string, Endpoint> endpoints_;
};

}  // namespace stripe_emulator
