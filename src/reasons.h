// Why a row was not billed (yet): every reason the library stores in the outbox or counts in
// `stats().rejected`, in one table. The names are part of the outbox file format and of the
// metrics: never rename one. Stripe's own refusals add `stripe_<code>` (stripe_reason()).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stripe_billing/error.h"

namespace stripe_billing {

enum class Reason {
  // Parked: kept, looked at again by the engine or an operator.
  kMissingCustomer,
  kRequestUserNotTrusted,
  kRequestUserIsCustomerId,
  kCustomerNotFound,
  kSubscriptionItemNotFound,
  kMeterTimestampTooOld,
  kUsageRecordsNotInMode,
  kMetersNotInMode,
  kDimensionNotConfigured,
  kUnmappedModel,
  kEventTimeInFuture,
  // Dead: Stripe would refuse them, or the host sent something that cannot be billed.
  kNegativeQuantity,
  kQuantityTooLarge,
  kMissingUsage,
  kInvalidCost,
  kInvalidCustomerKey,
  kMeterValueTooLarge,
  kMaxDeliveryAgeExceeded,
  kUnpricedModel,
  // Delivered without a request: a cost below one unit, carried into the next call.
  kBelowOneUnitCarried,
  // Counted only: the row was not kept, or the event was stored with a repair.
  kOutboxUnwritable,
  kShutdownDeadline,
  kGeneratedCallId,
  kDerivedCallId,
  kNonFiniteCost,
  kOutboxRecreated,
  kOutcomeUnrecorded,
  kSyncWaitTimeout,
  kOutboxUnreachable,
  kCacheHitNotBilled,
  kCallTypeNotBilled,
  kInconsistentTokenDetails,
  kUnknownProvider,
  kUnpricedFallback,
};

enum class ReasonKind { kParked, kDead, kDelivered, kCounted };

struct ReasonInfo {
  Reason reason;
  const char* name;  // as stored and as the metric label
  ReasonKind kind;
  const char* meaning;
};

const std::vector<ReasonInfo>& all_reasons();
const char* to_string(Reason reason) noexcept;
const char* to_string(ReasonKind kind) noexcept;
std::optional<Reason> reason_from_string(std::string_view name);

// `stripe_<code>`, or `stripe_<status>` when Stripe gave no code: why Stripe refused a batch.
std::string stripe_reason(const StripeError& error);

}  // namespace stripe_billing
