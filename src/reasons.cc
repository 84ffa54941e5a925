#include "reasons.h"

namespace stripe_billing {

const std::vector<ReasonInfo>& all_reasons() {
  using K = ReasonKind;
  static const std::vector<ReasonInfo> reasons = {
      {Reason::kMissingCustomer, "missing_customer", K::kParked,
       "the event has no value for STRIPE_CHARGE_BY"},
      {Reason::kRequestUserNotTrusted, "request_user_not_trusted", K::kParked,
       "the key has no end user and the request's `user` is not used "
       "(STRIPE_TRUST_REQUEST_USER=off)"},
      {Reason::kRequestUserIsCustomerId, "request_user_is_customer_id", K::kParked,
       "the request's `user` is a cus_ id, which a caller may not choose "
       "(STRIPE_TRUST_REQUEST_USER=lookup)"},
      {Reason::kCustomerNotFound, "customer_not_found", K::kParked,
       "no Stripe customer has the customer key (retried every STRIPE_PARK_RETRY_S)"},
      {Reason::kSubscriptionItemNotFound, "subscription_item_not_found", K::kParked,
       "the customer has no active subscription item on the price (retried every "
       "STRIPE_PARK_RETRY_S)"},
      {Reason::kMeterTimestampTooOld, "meter_timestamp_too_old", K::kParked,
       "a meter row older than the 35 days Stripe accepts"},
      {Reason::kUsageRecordsNotInMode, "usage_records_not_in_mode", K::kParked,
       "a usage-record row stored under a mode that sent them; this mode does not"},
      {Reason::kMetersNotInMode, "meters_not_in_mode", K::kParked,
       "a meter row stored under a mode that sent them; this mode does not"},
      {Reason::kDimensionNotConfigured, "dimension_not_configured", K::kParked,
       "a row of a quantity (STRIPE_QUANTITY) this configuration does not bill"},
      {Reason::kUnmappedModel, "unmapped_model", K::kParked,
       "token billing: the model maps to no provider/model slug (add it to "
       "STRIPE_MODEL_MAP_FILE; retried every STRIPE_PARK_RETRY_S)"},
      {Reason::kEventTimeInFuture, "event_time_in_future", K::kParked,
       "a meter event whose end time is more than 5 minutes ahead of the clock (Stripe refuses "
       "it): kept for an operator"},
      {Reason::kNegativeQuantity, "negative_quantity", K::kDead,
       "the host reported a negative count"},
      {Reason::kQuantityTooLarge, "quantity_too_large", K::kDead,
       "more than STRIPE_MAX_QUANTITY in one call"},
      {Reason::kMissingUsage, "missing_usage", K::kDead,
       "the call has no token count (or no cost, when billing cost)"},
      {Reason::kInvalidCost, "invalid_cost", K::kDead,
       "cost billing, and the call's cost is not a finite number"},
      {Reason::kInvalidCustomerKey, "invalid_customer_key", K::kDead,
       "a customer key no Stripe metadata value can equal (over 500 bytes or not UTF-8)"},
      {Reason::kMeterValueTooLarge, "meter_value_too_large", K::kDead,
       "a meter value of more than 15 significant digits"},
      {Reason::kMaxDeliveryAgeExceeded, "max_delivery_age_exceeded", K::kDead,
       "not delivered within STRIPE_MAX_DELIVERY_AGE_S: Stripe may have forgotten the "
       "idempotency key, so it is not sent again by itself (it may be billed already)"},
      {Reason::kUnpricedModel, "unpriced_model", K::kDead,
       "priced calls with STRIPE_UNPRICED_MODEL=reject: the model (or one of its token types) "
       "has no price in STRIPE_PRICE_TABLE"},
      {Reason::kBelowOneUnitCarried, "below_one_unit_carried", K::kDelivered,
       "cost billing: the call's amount is carried into the next call's rounding"},
      {Reason::kOutboxUnwritable, "outbox_unwritable", K::kCounted,
       "LOST: the outbox could not be written"},
      {Reason::kShutdownDeadline, "shutdown_deadline", K::kCounted,
       "LOST: still in memory when the shutdown deadline passed with the outbox not writable"},
      {Reason::kGeneratedCallId, "generated_call_id", K::kCounted,
       "the event had no call id and no end time: it got a random one, so a second report of "
       "the same call is billed again"},
      {Reason::kDerivedCallId, "derived_call_id", K::kCounted,
       "the event had no call id: one was derived from its content (customer, model, times, "
       "counts), so a second report of the same call is still billed once"},
      {Reason::kNonFiniteCost, "non_finite_cost", K::kCounted,
       "the host gave a cost that is NaN or infinite: stored as no cost"},
      {Reason::kOutboxRecreated, "outbox_recreated", K::kCounted,
       "the outbox file was deleted or replaced while running: recreated from the open database"},
      {Reason::kSyncWaitTimeout, "sync_wait_timeout", K::kCounted,
       "sync: the call returned after STRIPE_SYNC_TIMEOUT_MS without its commit; the event stays "
       "in memory and is stored once the outbox answers (lost only if the process dies first)"},
      {Reason::kOutboxUnreachable, "outbox_unreachable", K::kCounted,
       "PostgreSQL did not take a commit: its rows are held in memory and stored again"},
      {Reason::kCacheHitNotBilled, "cache_hit_not_billed", K::kCounted,
       "a call served from the gateway's cache, with STRIPE_CACHE_HIT=skip: nothing billed"},
      {Reason::kCallTypeNotBilled, "call_type_not_billed", K::kCounted,
       "a call type in STRIPE_SKIP_CALL_TYPES (a retrieval, not a generation): nothing billed"},
      {Reason::kInconsistentTokenDetails, "inconsistent_token_details", K::kCounted,
       "token details that do not fit inside the counts (cached > prompt): billed as plain "
       "input and output"},
      {Reason::kUnknownProvider, "unknown_provider", K::kCounted,
       "token types of a provider no rule knows: derived by the OpenAI rule"},
      {Reason::kUnpricedFallback, "unpriced_fallback", K::kCounted,
       "priced calls: the model (or one of its token types) has no price; billed by token type "
       "(STRIPE_UNPRICED_MODEL=token_types)"},
      {Reason::kOutcomeUnrecorded, "outcome_unrecorded", K::kCounted,
       "Stripe's answer could not be written to the outbox; kept in memory and written again, "
       "the batch is not sent again"},
  };
  return reasons;
}

const char* to_string(Reason reason) noexcept {
  for (const ReasonInfo& info : all_reasons()) {
    if (info.reason == reason) return info.name;
  }
  return "unknown";
}

const char* to_string(ReasonKind kind) noexcept {
  switch (kind) {
    case ReasonKind::kParked:
      return "parked";
    case ReasonKind::kDead:
      return "dead";
    case ReasonKind::kDelivered:
      return "delivered";
    case ReasonKind::kCounted:
      return "counted";
  }
  return "unknown";
}

std::optional<Reason> reason_from_string(std::string_view name) {
  for (const ReasonInfo& info : all_reasons()) {
    if (name == info.name) return info.reason;
  }
  return std::nullopt;
}

std::string stripe_reason(const StripeError& error) {
  return "stripe_" + (error.code.empty() ? std::to_string(error.http_status) : error.code);
}

}  // namespace stripe_billing
