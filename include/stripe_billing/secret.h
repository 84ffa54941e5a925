// A secret string (an API key) that cannot be printed by accident: it has no stream or fmt
// output, and redacted() shows only the prefix and the last four characters (`sk_test_…wxyz`).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace stripe_billing {

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}

  bool empty() const noexcept { return value_.empty(); }
  // The only way to read the secret. Call it where the value goes on the wire, nowhere else.
  const std::string& reveal() const noexcept { return value_; }
  std::string redacted() const { return redact_key(value_); }

  // `sk_test_…wxyz`: the known prefix (sk_/rk_/pk_ + test_/live_) and the last four characters;
  // anything shorter than 12 characters or of unknown shape becomes `…` plus at most 2 characters.
  static std::string redact_key(std::string_view key);

  // A secret inside other text (a key pasted into the wrong setting): a Stripe secret or
  // restricted key (sk_live_, sk_test_, rk_live_, rk_test_) or a webhook signing secret (whsec_)
  // whose prefix is followed by a letter or digit, and which starts the text or follows a
  // character that is not a letter or digit ("price_sk_test_…" counts, "mask_test_…" does not).
  // It runs over the letters, digits and '_' after the prefix.
  struct Span {
    std::size_t position = 0;
    std::size_t length = 0;
  };
  static std::optional<Span> find_secret_in(std::string_view text, std::size_t from = 0);
  // `text` with every secret replaced by its redact_key() form: what find_secret_in() finds, and
  // also a prefix inside a word followed by at least 16 characters, a key's length
  // ("xsk_test_51Nz…"; not "risk_test_events").
  static std::string redact_secrets_in(std::string_view text);

 private:
  std::string value_;
};

}  // namespace stripe_billing
