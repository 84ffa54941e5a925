// A secret string (an API key) that cannot be printed by accident: it has no stream or fmt
// output, and redacted() shows only the prefix and the last four characters (`sk_test_…wxyz`).
#pragma once

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

 private:
  std::string value_;
};

}  // namespace stripe_billing
