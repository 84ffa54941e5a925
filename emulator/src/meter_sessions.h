// The v2 meter event sessions: short-lived bearer tokens for the meter event stream, minted with
// a secret key. A token lives 15 minutes by the emulator clock, or until expire_all().
// Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "api_error.h"

namespace stripe_emulator {

struct MeterSession {
  std::string id;
  std::string authentication_token;
  std::int64_t created = 0;
  std::int64_t expires_at = 0;
};

class MeterSessions {
 public:
  using Clock = std::function<std::int64_t()>;
  explicit MeterSessions(Clock clock);

  MeterSession create();
  // Nothing for a live token; a 401 for an unknown or expired one.
  std::optional<ApiError> authenticate(const std::string& token) const;
  void expire_all();
  std::size_t created() const;

 private:
  Clock clock_;
  mutable std::mutex mutex_;
  std::map<std::string, MeterSession> by_token_;
  std::size_t created_ = 0;
};

}  // namespace stripe_emulator
