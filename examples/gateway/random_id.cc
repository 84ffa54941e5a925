#include "gateway/random_id.h"

#include <cstdint>
#include <cstdio>
#include <random>

namespace gateway {

std::string random_id(const std::string& prefix) {
  thread_local std::mt19937_64 engine{std::random_device{}()};
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(engine()),
                static_cast<unsigned long long>(engine()));
  return prefix + hex;
}

}  // namespace gateway
