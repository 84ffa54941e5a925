// RFC 3339 timestamps, as the v2 API writes and reads them: "2024-06-01T12:00:00.000Z".
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace stripe_emulator {

// UTC with milliseconds, as Stripe answers.
std::string to_rfc3339(std::int64_t unix_seconds);
// Any RFC 3339 date-time (fractional seconds and a numeric offset allowed), in whole unix seconds;
// nothing when the text is not one.
std::optional<std::int64_t> from_rfc3339(const std::string& text);

}  // namespace stripe_emulator
