// Stripe-like object ids: a prefix and a random alphanumeric suffix (cus_4Nd9…, req_Qx1…).
// Thread-safe.
#pragma once

#include <string>

namespace stripe_emulator {

std::string new_id(const std::string& prefix, std::size_t suffix_length = 24);
std::string new_request_id();

}  // namespace stripe_emulator
