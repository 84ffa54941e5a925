// Stripe's cursor pagination of a list endpoint: `limit` objects after `starting_after`, or the
// `limit` objects just before `ending_before`, answered in Stripe's list envelope.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace stripe_emulator {

// `newest_first` is the whole list in Stripe's order; cursors are the objects' "id".
nlohmann::json page(const std::vector<nlohmann::json>& newest_first, const nlohmann::json& params,
                    const std::string& url);

}  // namespace stripe_emulator
