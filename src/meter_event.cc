#include "meter_event.h"

#include <ctime>

#include "usage_record.h"

namespace stripe_billing {
namespace {

constexpr std::size_t kMaxIdentifier = 100;

bool is_identifier_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-';
}

// Days since 1970-01-01 of a civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

std::optional<int> digits(std::string_view text, std::size_t at, std::size_t count) {
  if (at + count > text.size()) return std::nullopt;
  int value = 0;
  for (std::size_t i = at; i < at + count; ++i) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
    value = value * 10 + (text[i] - '0');
  }
  return value;
}

}  // namespace

std::string meter_event_identifier(std::string_view call_id, std::string_view dimension) {
  std::string plain = std::string(call_id) + ":" + std::string(dimension);
  bool usable = plain.size() <= kMaxIdentifier;
  for (char c : plain) usable = usable && is_identifier_char(c);
  if (usable) return plain;
  return "sbh-" + hashed_id(std::string(call_id) + '\n' + std::string(dimension));
}

FormFields meter_event_form(const MeterEvent& event, const FinalizedConfig& config) {
  FormFields fields = {
      {"event_name", event.event_name},
      {"identifier", event.identifier},
      {"timestamp", std::to_string(event.timestamp)},
      {"payload[" + config.meter_customer_key() + "]", event.customer_id},
      {"payload[" + config.meter_value_key() + "]", std::to_string(event.value)},
  };
  if (!event.token_type.empty()) {
    fields.emplace_back("payload[" + config.meter_token_type_key() + "]", event.token_type);
  }
  if (!config.meter_model_key().empty() && !event.model.empty()) {
    fields.emplace_back("payload[" + config.meter_model_key() + "]", event.model);
  }
  return fields;
}

nlohmann::json meter_stream_event(const MeterEvent& event, const FinalizedConfig& config) {
  nlohmann::json payload = {
      {config.meter_customer_key(), event.customer_id},
      {config.meter_value_key(), std::to_string(event.value)},
  };
  if (!event.token_type.empty()) payload[config.meter_token_type_key()] = event.token_type;
  if (!config.meter_model_key().empty() && !event.model.empty()) {
    payload[config.meter_model_key()] = event.model;
  }
  return {{"event_name", event.event_name},
          {"identifier", event.identifier},
          {"payload", std::move(payload)},
          {"timestamp", to_rfc3339(event.timestamp)}};
}

bool is_already_recorded(const Error& error) {
  return error.stripe && error.stripe->http_status == 400 &&
         error.stripe->message.find("An event already exists with identifier") != std::string::npos;
}

std::string to_rfc3339(std::int64_t unix_seconds) {
  const auto seconds = static_cast<std::time_t>(unix_seconds);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buffer;
}

std::optional<std::int64_t> parse_rfc3339(std::string_view text) {
  const auto year = digits(text, 0, 4), month = digits(text, 5, 2), day = digits(text, 8, 2);
  const auto hour = digits(text, 11, 2), minute = digits(text, 14, 2), second = digits(text, 17, 2);
  if (!year || !month || !day || !hour || !minute || !second || text[4] != '-' || text[7] != '-' ||
      (text[10] != 'T' && text[10] != 't') || text[13] != ':' || text[16] != ':' || *month < 1 ||
      *month > 12 || *day < 1 || *day > 31 || *hour > 23 || *minute > 59 || *second > 60) {
    return std::nullopt;
  }
  std::size_t at = 19;
  if (at < text.size() && text[at] == '.') {
    ++at;
    const std::size_t first = at;
    while (at < text.size() && text[at] >= '0' && text[at] <= '9') ++at;
    if (at == first) return std::nullopt;
  }
  std::int64_t offset = 0;
  if (at < text.size() && (text[at] == 'Z' || text[at] == 'z')) {
    ++at;
  } else if (at < text.size() && (text[at] == '+' || text[at] == '-')) {
    const auto offset_hours = digits(text, at + 1, 2), offset_minutes = digits(text, at + 4, 2);
    if (!offset_hours || !offset_minutes || text[at + 3] != ':') return std::nullopt;
    offset = (*offset_hours * 60 + *offset_minutes) * 60 * (text[at] == '+' ? 1 : -1);
    at += 6;
  } else {
    return std::nullopt;
  }
  if (at != text.size()) return std::nullopt;
  return days_from_civil(*year, static_cast<unsigned>(*month), static_cast<unsigned>(*day)) *
             86400 +
         *hour * 3600 + *minute * 60 + *second - offset;
}

}  // namespace stripe_billing
