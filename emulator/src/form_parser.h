// Parses application/x-www-form-urlencoded text (request bodies and query strings) into Stripe's
// parameter tree, following the bracket nesting Stripe's (Rack's) parser applies:
//   a[b][c]=v                 -> {"a":{"b":{"c":"v"}}}
//   items[0][price]=x         -> {"items":{"0":{"price":"x"}}}
//   expand[]=x&expand[]=y     -> {"expand":{"0":"x","1":"y"}}
// Interior nodes are JSON objects, leaves are strings; arrays stay objects keyed by index and the
// schema validator decides what is an array. Leaves hold the percent-decoded bytes, which need
// not be UTF-8. A repeated key keeps its last value; a key used both as a value and as a hash is
// an invalid_request_error naming it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "api_error.h"

namespace stripe_emulator {

Expected<nlohmann::json> parse_form(std::string_view text);

// '+' is a space and %XY a byte; a '%' not followed by two hex digits stays as it is.
std::string form_decode(std::string_view text);

}  // namespace stripe_emulator
