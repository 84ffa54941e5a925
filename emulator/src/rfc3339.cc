#include "rfc3339.h"

#include <cctype>
#include <cstdio>
#include <ctime>

namespace stripe_emulator {
namespace {

// The number in text[at, at + width), or -1 when those are not all digits.
int digits(const std::string& text, std::size_t at, std::size_t width) {
  if (at + width > text.size()) return -1;
  int value = 0;
  for (std::size_t i = at; i < at + width; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return -1;
    value = value * 10 + (text[i] - '0');
  }
  return value;
}

bool is(const std::string& text, std::size_t at, char wanted) {
  return at < text.size() && std::toupper(static_cast<unsigned char>(text[at])) == wanted;
}

}  // namespace

std::string to_rfc3339(std::int64_t unix_seconds) {
  const auto seconds = static_cast<std::time_t>(unix_seconds);
  std::tm calendar{};
  gmtime_r(&seconds, &calendar);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S.000Z", &calendar);
  return text;
}

std::optional<std::int64_t> from_rfc3339(const std::string& text) {
  const int year = digits(text, 0, 4);
  const int month = digits(text, 5, 2);
  const int day = digits(text, 8, 2);
  const int hour = digits(text, 11, 2);
  const int minute = digits(text, 14, 2);
  const int second = digits(text, 17, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 ||
      minute < 0 || minute > 59 || second < 0 || second > 60 || !is(text, 4, '-') ||
      !is(text, 7, '-') || !is(text, 10, 'T') || !is(text, 13, ':') || !is(text, 16, ':')) {
    return std::nullopt;
  }
  std::size_t at = 19;
  if (is(text, at, '.')) {
    const auto fraction = ++at;
    while (at < text.size() && std::isdigit(static_cast<unsigned char>(text[at]))) ++at;
    if (at == fraction) return std::nullopt;
  }
  std::int64_t offset = 0;
  if (is(text, at, 'Z')) {
    ++at;
  } else if (is(text, at, '+') || is(text, at, '-')) {
    const int offset_hours = digits(text, at + 1, 2);
    const int offset_minutes = digits(text, at + 4, 2);
    if (offset_hours < 0 || offset_hours > 23 || offset_minutes < 0 || offset_minutes > 59 ||
        !is(text, at + 3, ':')) {
      return std::nullopt;
    }
    offset = (text[at] == '-' ? -1 : 1) * (offset_hours * 3600 + offset_minutes * 60);
    at += 6;
  } else {
    return std::nullopt;
  }
  if (at != text.size()) return std::nullopt;
  std::tm calendar{};
  calendar.tm_year = year - 1900;
  calendar.tm_mon = month - 1;
  calendar.tm_mday = day;
  calendar.tm_hour = hour;
  calendar.tm_min = minute;
  calendar.tm_sec = second;
  return static_cast<std::int64_t>(timegm(&calendar)) - offset;
}

}  // namespace stripe_emulator
