#include "pagination.h"

#include <algorithm>
#include <cstddef>

#include "form_values.h"
#include "resources.h"

namespace stripe_emulator {

using nlohmann::json;

json page(const std::vector<json>& newest_first, const json& params, const std::string& url) {
  const auto size = static_cast<std::ptrdiff_t>(newest_first.size());
  const auto count = static_cast<std::ptrdiff_t>(limit(params));
  const auto position_of = [&](const json& id) {
    const auto found = std::find_if(newest_first.begin(), newest_first.end(),
                                    [&](const json& object) { return object["id"] == id; });
    return found - newest_first.begin();
  };
  std::ptrdiff_t first = 0;
  std::ptrdiff_t last = std::min(count, size);
  bool has_more = last < size;
  if (params.contains("starting_after")) {
    first = std::min(position_of(params["starting_after"]) + 1, size);
    last = std::min(first + count, size);
    has_more = last < size;
  } else if (params.contains("ending_before")) {
    last = position_of(params["ending_before"]);
    first = std::max<std::ptrdiff_t>(0, last - count);
    has_more = first > 0;
  }
  return list_object(
      json(std::vector<json>(newest_first.begin() + first, newest_first.begin() + last)), has_more,
      url);
}

}  // namespace stripe_emulator
