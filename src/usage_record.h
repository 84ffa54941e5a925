// The legacy usage record: which quantity an event bills, and the exact Stripe request for it.
// Stripe accepts only quantity, timestamp, action and expand here (no metadata): the call's
// details go to the log and, later, the ledger.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "stripe_billing/config.h"
#include "stripe_billing/stripe_client.h"
#include "stripe_billing/usage_event.h"

namespace stripe_billing {

struct NewEvent;

struct QuantityCheck {
  enum class Verdict { kBill, kZero, kMissingUsage, kNegative, kTooLarge };
  Verdict verdict = Verdict::kMissingUsage;
  std::int64_t value = 0;

  // "missing_usage", "negative_quantity", "quantity_too_large"; "" for kBill and kZero.
  const char* reason() const noexcept;
};

struct TokenCounts {
  std::optional<std::int64_t> prompt;
  std::optional<std::int64_t> completion;
  std::optional<std::int64_t> total;
};

// total_tokens falls back to prompt + completion when the host gave only those.
QuantityCheck billable_quantity(const TokenCounts& tokens, QuantitySource source,
                                std::int64_t max_quantity);
inline QuantityCheck billable_quantity(const UsageEvent& event, QuantitySource source,
                                       std::int64_t max_quantity) {
  return billable_quantity(
      TokenCounts{event.prompt_tokens, event.completion_tokens, event.total_tokens}, source,
      max_quantity);
}

// Cost billing counts in millionths of a billed unit, so that rounding each call to whole units
// can carry the remainder to the next call instead of losing it.
inline constexpr std::int64_t kMicrosPerUnit = 1'000'000;

// response_cost × multiplier (units per 1.0 of cost: 100 for cents) as a check whose value is in
// micro-units. Missing or NaN: kMissingUsage; negative: kNegative; over max_quantity units:
// kTooLarge; less than one micro-unit: kZero.
QuantityCheck cost_amount(std::optional<double> cost, double multiplier, std::int64_t max_quantity);

struct RoundedAmount {
  std::int64_t quantity = 0;  // whole units to bill now
  std::int64_t carry = 0;     // micro-units carried to the next amount, in [-half, half)
};
// Rounds `micros` plus the carried remainder half-up to whole units. Over any sequence of calls
// the billed units differ from the exact sum by at most half a unit.
RoundedAmount round_with_carry(std::int64_t micros, std::int64_t carry);
// Intake's CarryRule (outbox.h) for a cost row: rounds its amount with the carried remainder into
// its quantity; a pending row with nothing to bill yet is stored as delivered (reason
// below_one_unit_carried: the amount lives on in the carry). Returns the remainder to carry.
std::int64_t carry_cost_row(NewEvent& row, std::int64_t carried);

// `/v1/subscription_items/<encoded si>/usage_records`
std::string usage_record_path(std::string_view subscription_item_id);

FormFields usage_record_fields(std::int64_t quantity, std::int64_t timestamp);

// A stable 128-bit hash of `text` as "h" + 32 hex digits: an id for ids unfit to use as they are.
std::string hashed_id(std::string_view text);

// Text safe to put in a log line: control bytes and non-ASCII escaped, at most `max` bytes.
std::string log_safe(std::string_view text, std::size_t max = 200);

bool is_valid_utf8(std::string_view text);

// An operator's table file (a model mapping, a price table) read whole: kInvalidConfig naming
// `what` and the path when it cannot be read or is larger than 16 MiB.
Expected<std::string> read_table_file(const std::string& path, const std::string& what);
// Valid UTF-8 without a NUL byte: text every store keeps as it is (PostgreSQL's text cannot hold
// NUL) and that Stripe takes as a metadata value.
bool is_storable_text(std::string_view text);

}  // namespace stripe_billing
