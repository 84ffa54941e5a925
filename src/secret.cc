#include "stripe_billing/secret.h"

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace stripe_billing {
namespace {

constexpr std::string_view kEllipsis = "\xE2\x80\xA6";  // U+2026 HORIZONTAL ELLIPSIS

constexpr std::array<std::string_view, 6> kKnownPrefixes = {"sk_test_", "sk_live_", "rk_test_",
                                                            "rk_live_", "pk_test_", "pk_live_"};

// Below this length a key is shown as `…` alone: two characters of a short string say too much.
constexpr std::size_t kMinLengthForAnyTail = 12;
// With a known prefix, the last four characters are shown only when at least this many characters
// follow the prefix, so the redacted form never spells out the whole key.
constexpr std::size_t kMinBodyForFourCharTail = 8;

std::string_view known_prefix(std::string_view key) {
  for (std::string_view prefix : kKnownPrefixes) {
    if (key.substr(0, prefix.size()) == prefix) return prefix;
  }
  return {};
}

// Tail characters go into logs and error messages: anything but a visible ASCII character (a
// newline pasted with the key, a control byte, part of a UTF-8 sequence) becomes '?'.
std::string printable_tail(std::string_view key, std::size_t count) {
  std::string tail(key.substr(key.size() - count));
  for (char& c : tail) {
    if (c <= ' ' || c > '~') c = '?';
  }
  return tail;
}

}  // namespace

std::string Secret::redact_key(std::string_view key) {
  const std::string_view prefix = known_prefix(key);
  if (!prefix.empty() && key.size() - prefix.size() >= kMinBodyForFourCharTail) {
    return std::string(prefix) + std::string(kEllipsis) + printable_tail(key, 4);
  }
  if (key.size() < kMinLengthForAnyTail) return std::string(kEllipsis);
  return std::string(kEllipsis) + printable_tail(key, 2);
}

}  // namespace stripe_billing
