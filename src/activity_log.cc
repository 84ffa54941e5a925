#include "activity_log.h"

namespace stripe_billing {

std::string activity_line(LogFormat format, const ActivityFields& fields) {
  if (format == LogFormat::kJson) {
    nlohmann::json line = nlohmann::json::object();
    line["logger"] = "stripe_billing";
    for (const auto& [key, value] : fields) line[key] = value;
    return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string line = "stripe_billing";
  for (const auto& [key, value] : fields) {
    line += ' ';
    line += key;
    line += '=';
    line += value.is_string() ? value.get<std::string>() : value.dump();
  }
  return line;
}

}  // namespace stripe_billing
