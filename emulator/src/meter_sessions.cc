#include "meter_sessions.h"

#include <algorithm>

#include "ids.h"

namespace stripe_emulator {
namespace {

constexpr std::int64_t kLifetime = 15 * 60;

}  // namespace

MeterSessions::MeterSessions(Clock clock) : clock_(std::move(clock)) {}

MeterSession MeterSessions::create() {
  const auto now = clock_();
  MeterSession session{new_id("mes_", 24), new_id("", 64), now, now + kLifetime};
  std::lock_guard lock(mutex_);
  ++created_;
  return by_token_[session.authentication_token] = session;
}

std::optional<ApiError> MeterSessions::authenticate(const std::string& token) const {
  const auto now = clock_();
  std::lock_guard lock(mutex_);
  const auto found = by_token_.find(token);
  if (found == by_token_.end()) {
    auto error = errors::invalid_api_key(token);
    error.code = "invalid_api_key";
    return error;
  }
  if (now >= found->second.expires_at) {
    return ApiError{401,
                    "temporary_session_expired",
                    "The meter event session has expired. Create a new session with POST "
                    "/v2/billing/meter_event_session.",
                    "",
                    "billing_meter_event_session_expired",
                    {}};
  }
  return std::nullopt;
}

void MeterSessions::expire_all() {
  const auto now = clock_();
  std::lock_guard lock(mutex_);
  for (auto& [token, session] : by_token_) session.expires_at = std::min(session.expires_at, now);
}

std::size_t MeterSessions::created() const {
  std::lock_guard lock(mutex_);
  return created_;
}

}  // namespace stripe_emulator
