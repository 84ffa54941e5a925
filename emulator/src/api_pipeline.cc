#include "api_pipeline.h"

#include <algorithm>
#include <cctype>

#include "credit_endpoints.h"
#include "form_parser.h"
#include "form_values.h"
#include "meter_endpoints.h"
#include "schema_validator.h"
#include "v2_endpoints.h"

namespace stripe_emulator {
namespace {

Outcome answer(const ApiError& error) { return Outcome{to_answer(error), false}; }

bool is_v2(const std::string& path) { return path.rfind(kV2Prefix, 0) == 0; }

Outcome refusal(const IncomingRequest& request, const ApiError& error) {
  return Outcome{is_v2(request.path) ? to_v2_answer(error) : to_answer(error), false};
}

std::map<std::string, Endpoint> v1_endpoints(Store& store, MeterStore& meters,
                                             const CreditStore& credits) {
  auto endpoints = make_endpoints(store);
  endpoints.merge(make_meter_endpoints(meters, store));
  endpoints.merge(make_credit_endpoints(credits, store));
  return endpoints;
}

// Stripe keeps what the work produced, not the refusals that happen before it.
bool worth_keeping(int status) { return status != 400 && status != 401 && status != 429; }

std::string fingerprint(const IncomingRequest& request, const nlohmann::json& params) {
  const auto encoded = nlohmann::json::to_cbor(params);
  return request.method + ' ' + request.path + '\n' + std::string(encoded.begin(), encoded.end());
}

Answer replayed(const IdempotencyCache::Stored& stored) {
  auto replay = stored.answer;
  replay.headers.emplace_back("Idempotent-Replayed", "true");
  replay.headers.emplace_back("Original-Request", stored.request_id);
  return replay;
}

}  // namespace

ApiPipeline::ApiPipeline(std::vector<std::string> api_keys, Store& store, MeterStore& meters,
                         const CreditStore& credits, const EventLog& events,
                         MeterSessions& sessions, const SpecCatalog& catalog, FaultQueue& faults,
                         HangGate& hangs, RateLimiter& rate_limiter, MeterEventLocks& meter_locks,
                         const RestrictedKeys& restricted_keys)
    : api_keys_(std::move(api_keys)),
      meters_(meters),
      events_(events),
      sessions_(sessions),
      catalog_(catalog),
      faults_(faults),
      hangs_(hangs),
      rate_limiter_(rate_limiter),
      meter_locks_(meter_locks),
      restricted_keys_(restricted_keys),
      endpoints_(v1_endpoints(store, meters, credits)) {}

Outcome ApiPipeline::handle(const IncomingRequest& request) {
  const auto api_key = authenticate(request);
  if (const auto* error = std::get_if<ApiError>(&api_key)) return refusal(request, *error);
  if (const auto limited = rate_limiter_.over_limit()) {
    return refusal(request, errors::with_retry_after(errors::rate_limited(), limited->retry_after));
  }
  const auto fault = faults_.take(request.path);
  if (fault && fault->kind == FaultKind::kStatus) return refusal(request, errors::injected(*fault));
  if (fault && fault->kind == FaultKind::kCloseConnection) return Outcome{{}, true};
  if (is_v2(request.path)) return run_v2(request, std::get<std::string>(api_key), fault);
  return run(request, std::get<std::string>(api_key), fault);
}

Expected<std::string> ApiPipeline::authenticate(const IncomingRequest& request) const {
  const auto authorization = request.header("authorization");
  const std::string bearer = "Bearer ";
  if (authorization.size() <= bearer.size() ||
      !std::equal(bearer.begin(), bearer.end(), authorization.begin(),
                  [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
    return errors::missing_api_key();
  }
  const auto key = authorization.substr(bearer.size());
  if (request.path == kMeterEventStreamPath) {
    if (auto error = sessions_.authenticate(key)) return *error;
    return key;
  }
  if (key.rfind("pk_", 0) == 0) return errors::publishable_api_key();
  if (std::find(api_keys_.begin(), api_keys_.end(), key) == api_keys_.end() &&
      !restricted_keys_.contains(key)) {
    auto error = errors::invalid_api_key(key);
    if (is_v2(request.path)) error.code = "invalid_api_key";  // v2 errors always carry a code
    return error;
  }
  return key;
}

Outcome ApiPipeline::run(const IncomingRequest& request, const std::string& api_key,
                         const std::optional<Fault>& fault) {
  const auto route = catalog_.match(request.method, request.path);
  const auto endpoint = route ? endpoints_.find(route->operation->operation_id) : endpoints_.end();
  if (endpoint == endpoints_.end()) {
    return answer(errors::unrecognized_url(request.method, request.path));
  }
  const auto permission = required_permission_for_operation(route->operation->operation_id);
  if (!restricted_keys_.allows(api_key, permission)) {
    return answer(errors::missing_permission(api_key, permission));
  }
  const auto params = parse_form(request.query() + '&' + request.body);
  if (const auto* error = std::get_if<ApiError>(&params)) return answer(*error);
  const auto& tree = std::get<nlohmann::json>(params);
  if (auto error = validate_params(tree, route->operation->params_schema)) return answer(*error);
  const auto meter_lock = lock_meter_event(route->operation->operation_id, tree);
  if (const auto* error = std::get_if<ApiError>(&meter_lock)) return answer(*error);

  std::optional<IdempotencyCache::Claim> claim;
  const auto idempotency_key = request.header("idempotency-key");
  if (request.method == "POST" && !idempotency_key.empty()) {
    if (idempotency_key.size() > 255) return answer(errors::idempotency_key_too_long());
    auto lookup = idempotency_.claim(api_key, idempotency_key, fingerprint(request, tree));
    switch (lookup.verdict) {
      case IdempotencyCache::Verdict::kInUse:
        return answer(errors::idempotency_key_in_use(idempotency_key));
      case IdempotencyCache::Verdict::kOtherParameters:
        return answer(errors::idempotency_key_reused(idempotency_key));
      case IdempotencyCache::Verdict::kReplay:
        return Outcome{replayed(*lookup.stored), false};
      case IdempotencyCache::Verdict::kProceed:
        claim.emplace(std::move(*lookup.claim));
        break;
    }
  }

  if (fault && fault->kind == FaultKind::kHang) hangs_.hold(fault->hang);
  auto result = endpoint->second(ApiCall{route->path_params, tree});
  if (claim && worth_keeping(result.status)) claim->keep(result, request.request_id);
  return Outcome{std::move(result), fault && fault->kind == FaultKind::kCloseAfterCommit};
}

Expected<std::optional<MeterEventLocks::Lock>> ApiPipeline::lock_meter_event(
    const std::string& operation_id, const nlohmann::json& params) {
  if (operation_id != "PostBillingMeterEvents") return std::nullopt;
  const auto event_name = text(params, "event_name");
  const auto payload = string_hash(params, "payload");
  const auto customer = payload.find(meters_.customer_key(event_name));
  if (customer == payload.end()) return std::nullopt;
  auto lock = meter_locks_.try_lock(event_name, customer->second);
  if (!lock) return errors::concurrent_meter_event();
  return lock;
}

Outcome ApiPipeline::run_v2(const IncomingRequest& request, const std::string& api_key,
                            const std::optional<Fault>& fault) {
  const auto permission = required_permission_for_v2_path(request.method, request.path);
  if (request.path != kMeterEventStreamPath && !restricted_keys_.allows(api_key, permission)) {
    return refusal(request, errors::missing_permission(api_key, permission));
  }
  if (fault && fault->kind == FaultKind::kHang) hangs_.hold(fault->hang);
  auto result = serve_v2(request, meters_, sessions_, events_);
  return Outcome{std::move(result), fault && fault->kind == FaultKind::kCloseAfterCommit};
}

}  // namespace stripe_emulator
