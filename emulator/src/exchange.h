// One HTTP exchange as the emulator's handlers see it, independent of the HTTP library: the
// request as received and what to do with it (answer, or drop the connection without a byte).
#pragma once

#include <map>
#include <string>

#include "api_error.h"

namespace stripe_emulator {

struct IncomingRequest {
  std::string method;
  std::string path;                            // decoded
  std::string raw_target;                      // path and query exactly as received
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  std::string remote_addr;
  std::string request_id;  // the Request-Id this request is answered with

  std::string query() const {
    const auto mark = raw_target.find('?');
    return mark == std::string::npos ? "" : raw_target.substr(mark + 1);
  }
  std::string header(const std::string& lowercase_name) const {
    const auto found = headers.find(lowercase_name);
    return found == headers.end() ? "" : found->second;
  }
};

struct Outcome {
  Answer answer;
  bool drop_connection = false;
};

}  // namespace stripe_emulator
