#include "stripe_billing/secret.h"

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace stripe_billing {
namespace {

constexpr std::string_view kEllipsis = "\xE2\x80\xA6";  // U+2026 HORIZONTAL ELLIPSIS

constexpr std::array<std::string_view, 6> kKnownPrefixes = {"sk_test_", "sk_live_", "rk_test_",
                                                            "rk_live_", "pk_test_", "pk_live_"};

// What find_secret_in() looks for. Publishable keys (pk_) are not secrets.
constexpr std::array<std::string_view, 5> kSecretPrefixes = {"sk_live_", "sk_test_", "rk_live_",
                                                             "rk_test_", "whsec_"};

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool is_word(char c) { return is_alnum(c) || c == '_'; }

// Inside a word, a prefix counts only when this much follows it: a key's length, not a word's
// ("risk_test_events").
constexpr std::size_t kMinBodyInsideAWord = 16;

// The first secret at or after `from`; with `inside_words`, also one right after a letter or
// digit that has a key's length.
std::optional<Secret::Span> find_secret(std::string_view text, std::size_t from,
                                        bool inside_words) {
  for (std::size_t at = from; at < text.size(); ++at) {
    const bool in_a_word = at > 0 && is_alnum(text[at - 1]);
    if (in_a_word && !inside_words) continue;
    for (std::string_view prefix : kSecretPrefixes) {
      const std::size_t body = at + prefix.size();
      if (text.substr(at, prefix.size()) != prefix || body >= text.size() ||
          !is_alnum(text[body])) {
        continue;
      }
      std::size_t end = body;
      while (end < text.size() && is_word(text[end])) ++end;
      if (in_a_word && end - body < kMinBodyInsideAWord) continue;
      return Secret::Span{at, end - at};
    }
  }
  return std::nullopt;
}

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

std::optional<Secret::Span> Secret::find_secret_in(std::string_view text, std::size_t from) {
  return find_secret(text, from, /*inside_words=*/false);
}

std::string Secret::redact_secrets_in(std::string_view text) {
  std::string out;
  std::size_t copied = 0;
  for (auto span = find_secret(text, 0, true); span; span = find_secret(text, copied, true)) {
    out.append(text.substr(copied, span->position - copied));
    out += redact_key(text.substr(span->position, span->length));
    copied = span->position + span->length;
  }
  out.append(text.substr(copied));
  return out;
}

}  // namespace stripe_billing
