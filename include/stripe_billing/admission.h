// Admission: before the upstream call, may this customer spend? StripeLogger::admit() answers
// from memory (never on the network on the host's thread) and, when it allows, holds a
// reservation sized from the estimate until log_success_event settles it to the actual amount,
// log_failure_event releases it, or it expires (STRIPE_HOLD_TTL_S). docs/admission.md has the
// model and the bound it guarantees.
//
// And Stripe's webhooks: StripeLogger::handle_stripe_webhook() verifies, de-duplicates and queues
// an event for the background, and answers with what the host's route returns to Stripe.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace stripe_billing {

// What the gateway knows before the upstream call. The views need only live during admit().
struct AdmissionRequest {
  // The id log_success_event / log_failure_event will carry for this call (UsageEvent::call_id):
  // the hold is settled by it. Empty: nothing can settle the hold, so it is held until it expires
  // (STRIPE_HOLD_TTL_S), and the call's usage counts besides until then.
  std::string_view call_id;
  std::string_view model;
  // The same fields as UsageEvent's: the customer is picked by STRIPE_CHARGE_BY exactly as when
  // the call is billed.
  std::string_view end_user_id;
  std::string_view user_id;
  std::string_view team_id;
  std::string_view request_user;
  // Static budgets: the customer's plan, when the host knows it ("" none). A budget named by the
  // customer key wins over the plan's; `*` is every other customer's.
  std::string_view plan;
  std::int64_t input_tokens = -1;  // the prompt's tokens as the host counted them; < 0: unknown
  std::int64_t max_tokens = 0;     // the request's max_tokens (max_completion_tokens); 0: not given
};

enum class AdmissionVerdict {
  kAllow,             // within the budget; a hold is open
  kAllowUnavailable,  // the balance is unknown (source down, no state yet) and the policy is open
  kDeny,
};

struct AdmissionDecision {
  AdmissionVerdict verdict = AdmissionVerdict::kDeny;
  // Why, stable for logs and metrics: "" when allowed within the budget; else budget_exhausted,
  // credits_exhausted, budget_refilling, balance_unavailable, not_estimable, missing_customer,
  // no_budget, admission_off ("allowed, nothing checked"), fail_open (kAllowUnavailable).
  std::string_view reason;
  // Transient refusals: when trying again makes sense. Zero: not transient.
  std::chrono::seconds retry_after{0};
  std::int64_t reserved = 0;   // what the hold reserves, in the budget's units
  std::int64_t remaining = 0;  // what this process may still admit for the customer, after it
  // A refusal by a budget per token type (STRIPE_TOKEN_BUDGETS): the type ("output", ...); ""
  // when the refusal is the customer's budget of all billed units, or none.
  std::string_view token_type;

  bool allowed() const noexcept { return verdict != AdmissionVerdict::kDeny; }
  // What an OpenAI-compatible gateway answers a refusal with: 402 for a budget or credits that
  // are spent and for a customer with no budget, 429 for transient refusals, 400 for a request
  // that cannot be estimated, 403 for a request that names no customer. 200 when allowed.
  int http_status() const noexcept;
  // {"error":{"message":…,"type":…,"code":…,"param":null}} as OpenAI's API answers errors.
  std::string openai_error_body() const;
};

// What the host's webhook route answers Stripe: 200 once the event is verified and stored
// (processing follows in the background), 400 for a bad signature, a stale timestamp or a body
// that is not an event, 503 while it cannot be stored (Stripe retries).
struct WebhookResponse {
  int status = 400;
  std::string body;  // a small JSON object for logs: {"received":true} or {"error":"…"}
};

const char* to_string(AdmissionVerdict verdict) noexcept;

}  // namespace stripe_billing
