#include "usage_record.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "batch.h"
#include "reasons.h"

namespace stripe_billing {
namespace {

std::uint64_t fnv1a(std::string_view text, std::uint64_t seed) {
  std::uint64_t hash = seed;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}

std::string hex(std::uint64_t value) {
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(value));
  return buffer;
}

}  // namespace

const char* QuantityCheck::reason() const noexcept {
  switch (verdict) {
    case Verdict::kMissingUsage:
      return to_string(Reason::kMissingUsage);
    case Verdict::kNegative:
      return to_string(Reason::kNegativeQuantity);
    case Verdict::kTooLarge:
      return to_string(Reason::kQuantityTooLarge);
    case Verdict::kBill:
    case Verdict::kZero:
      return "";
  }
  return "";
}

QuantityCheck billable_quantity(const TokenCounts& tokens, QuantitySource source,
                                std::int64_t max_quantity) {
  std::optional<std::int64_t> value;
  switch (source) {
    case QuantitySource::kTotalTokens:
      value = tokens.total;
      if (!value && tokens.prompt && tokens.completion && *tokens.prompt >= 0 &&
          *tokens.completion >= 0 && *tokens.prompt <= max_quantity &&
          *tokens.completion <= max_quantity) {
        value = *tokens.prompt + *tokens.completion;
      }
      break;
    case QuantitySource::kPromptTokens:
      value = tokens.prompt;
      break;
    case QuantitySource::kCompletionTokens:
      value = tokens.completion;
      break;
    case QuantitySource::kSplit:
    case QuantitySource::kCost:
    case QuantitySource::kTokenTypes:
    case QuantitySource::kPriced:
      break;  // not one token count: see BilledDimension, cost_amount, token_types.h
  }
  using Verdict = QuantityCheck::Verdict;
  if (!value) return {Verdict::kMissingUsage, 0};
  if (*value < 0) return {Verdict::kNegative, *value};
  if (*value == 0) return {Verdict::kZero, 0};
  if (*value > max_quantity) return {Verdict::kTooLarge, *value};
  return {Verdict::kBill, *value};
}

QuantityCheck cost_amount(std::optional<double> cost, double multiplier,
                          std::int64_t max_quantity) {
  using Verdict = QuantityCheck::Verdict;
  if (!cost || std::isnan(*cost)) return {Verdict::kMissingUsage, 0};
  if (*cost < 0) return {Verdict::kNegative, 0};
  const double units = *cost * multiplier;
  // Micro-units must fit an int64 too (9.2e12 units), whatever STRIPE_MAX_QUANTITY allows.
  constexpr double kMaxUnits = 9e12;
  if (!(units <= static_cast<double>(max_quantity)) || !(units <= kMaxUnits)) {
    return {Verdict::kTooLarge, 0};
  }
  const auto micros = static_cast<std::int64_t>(std::llround(units * kMicrosPerUnit));
  if (micros == 0) return {Verdict::kZero, 0};
  return {Verdict::kBill, micros};
}

RoundedAmount round_with_carry(std::int64_t micros, std::int64_t carry) {
  const std::int64_t total = micros + carry;
  // Half-up: floor((total + half) / unit), written for totals of either sign.
  const std::int64_t shifted = total + kMicrosPerUnit / 2;
  std::int64_t quantity = shifted / kMicrosPerUnit;
  if (shifted % kMicrosPerUnit < 0) --quantity;
  return {quantity, total - quantity * kMicrosPerUnit};
}

std::int64_t carry_cost_row(NewEvent& row, std::int64_t carried) {
  if (!row.amount_micros) return carried;
  const RoundedAmount rounded = round_with_carry(*row.amount_micros, carried);
  row.quantity = rounded.quantity;
  if (row.quantity == 0 && row.state == EventState::kPending) {
    row.state = EventState::kDelivered;
    row.reason = to_string(Reason::kBelowOneUnitCarried);
  }
  return rounded.carry;
}

std::string usage_record_path(std::string_view subscription_item_id) {
  return "/v1/subscription_items/" + encode_path_segment(subscription_item_id) + "/usage_records";
}

FormFields usage_record_fields(std::int64_t quantity, std::int64_t timestamp) {
  return {{"quantity", std::to_string(quantity)},
          {"timestamp", std::to_string(timestamp)},
          {"action", "increment"}};
}

std::string hashed_id(std::string_view text) {
  return "h" + hex(fnv1a(text, 14695981039346656037ULL)) + hex(fnv1a(text, 1469598103934665603ULL));
}

std::string log_safe(std::string_view text, std::size_t max) {
  std::string out;
  for (unsigned char c : text) {
    if (out.size() >= max) {
      out += "…(" + std::to_string(text.size()) + " bytes)";
      break;
    }
    if (c >= 0x20 && c < 0x7F && c != '\\' && c != '"') {
      out.push_back(static_cast<char>(c));
    } else {
      char buffer[5];
      std::snprintf(buffer, sizeof buffer, "\\x%02x", c);
      out += buffer;
    }
  }
  return out;
}

bool is_storable_text(std::string_view text) {
  return text.find('\0') == std::string_view::npos && is_valid_utf8(text);
}

bool is_valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t length = c < 0x80           ? 1
                         : (c >> 5) == 0x6  ? 2
                         : (c >> 4) == 0xE  ? 3
                         : (c >> 3) == 0x1E ? 4
                                            : 0;
    if (length == 0 || i + length > text.size()) return false;
    std::uint32_t code = length == 1 ? c : c & (0xFF >> (length + 1));
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next >> 6) != 0x2) return false;
      code = (code << 6) | (next & 0x3F);
    }
    const bool overlong = (length == 2 && code < 0x80) || (length == 3 && code < 0x800) ||
                          (length == 4 && code < 0x10000);
    if (overlong || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

Expected<std::string> read_table_file(const std::string& path, const std::string& what) {
  constexpr std::size_t kMaxTableFileBytes = 16 * 1024 * 1024;
  std::ifstream file(path, std::ios::binary);
  if (!file) return Error{ErrorCode::kInvalidConfig, what + " " + path + ": cannot be read", {}};
  std::ostringstream buffer;
  buffer << file.rdbuf();
  std::string text = buffer.str();
  if (text.size() > kMaxTableFileBytes) {
    return Error{ErrorCode::kInvalidConfig, what + " " + path + ": larger than 16 MiB", {}};
  }
  return text;
}

}  // namespace stripe_billing
