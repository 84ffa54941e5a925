#pragma once

#include <string>

namespace gateway {

// `prefix` followed by 32 random hex digits (128 bits): unique across calls and restarts, which
// matters because stripe_billing derives its idempotency keys from the call id.
std::string random_id(const std::string& prefix);

}  // namespace gateway
