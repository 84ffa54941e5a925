// Errors as values. Every fallible call in stripe_billing returns Expected<T>; nothing throws
// across the library boundary. ErrorCode values are stable: they appear in logs, metrics and the
// outbox.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace stripe_billing {

enum class ErrorCode : int {
  kInvalidConfig = 1,
  kInvalidEvent = 2,
  kMissingCustomer = 3,
  kCustomerNotFound = 4,
  kSubscriptionItemNotFound = 5,
  kInvalidQuantity = 6,
  kNetwork = 10,
  kTimeout = 11,
  kAborted = 12,
  kStripe = 20,           // Stripe answered with an error; Error::stripe holds it unchanged.
  kInvalidResponse = 21,  // Stripe answered something that is not what its API documents.
  kQueueFull = 30,
  kShutdown = 31,
  kStorage = 40,
  kInternal = 99,
};

// Stable short name of a code, e.g. "network"; used as a metric label and in logs.
const char* to_string(ErrorCode code) noexcept;

// Stripe's error object (`{"error":{...}}`) plus the response headers that steer retries.
struct StripeError {
  int http_status = 0;
  std::string type;     // api_error, invalid_request_error, idempotency_error, ...
  std::string code;     // resource_missing, idempotency_key_in_use, ...
  std::string param;    // the offending parameter, when Stripe names one
  std::string message;  // Stripe's human-readable message
  std::string request_id;
  std::optional<bool> should_retry;  // Stripe-Should-Retry
  std::string rate_limited_reason;   // Stripe-Rate-Limited-Reason
  std::optional<int> retry_after_seconds;
};

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  std::optional<StripeError> stripe;

  // "network: connection refused" / "stripe: 400 invalid_request_error (param timestamp): ..."
  std::string to_string() const;
};

// A value or an Error, in the spirit of std::expected (C++23). [[nodiscard]]: a result dropped
// without a look is a compile error (-Werror), so no failure goes unhandled by accident.
template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : data_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Expected(Error error) : data_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool has_value() const noexcept { return data_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return std::get<0>(data_); }
  const T& value() const& { return std::get<0>(data_); }
  T&& value() && { return std::get<0>(std::move(data_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const& { return std::get<1>(data_); }
  Error&& error() && { return std::get<1>(std::move(data_)); }

 private:
  std::variant<T, Error> data_;
};

template <>
class [[nodiscard]] Expected<void> {
 public:
  Expected() = default;
  Expected(Error error) : error_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool has_value() const noexcept { return !error_.has_value(); }
  explicit operator bool() const noexcept { return has_value(); }
  const Error& error() const& { return *error_; }

 private:
  std::optional<Error> error_;
};

}  // namespace stripe_billing
