#include "ids.h"

#include <random>
#include <string_view>

namespace stripe_emulator {

std::string new_id(const std::string& prefix, std::size_t suffix_length) {
  static constexpr std::string_view kAlphabet =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  thread_local std::mt19937_64 generator{std::random_device{}()};
  std::uniform_int_distribution<std::size_t> pick(0, kAlphabet.size() - 1);
  std::string id = prefix;
  for (std::size_t i = 0; i < suffix_length; ++i) id += kAlphabet[pick(generator)];
  return id;
}

std::string new_request_id() { return new_id("req_", 14); }

}  // namespace stripe_emulator
