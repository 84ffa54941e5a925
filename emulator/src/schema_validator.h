// Checks a parameter tree (see form_parser.h) against one request schema from Stripe's OpenAPI
// spec and answers the first violation the way Stripe words it:
//   Received unknown parameter: recurring[foo]      Invalid integer: abc
//   Missing required param: quantity.               Invalid action: must be one of increment or set
//   Invalid string: aaaa…; must be at most 22 characters
// Every message starts with "Received unknown parameter", "Invalid " or "Missing required param",
// and `param` names the offending parameter in bracket form; a missing one also has Stripe's code
// parameter_missing.
// Supported keywords: type (object, array, string, integer, number, boolean), properties,
// additionalProperties, required, items, enum, anyOf, maxLength, format (decimal, unix-time).
// A hash is closed unless additionalProperties gives a schema for its values: Stripe rejects
// unknown keys at every level even though its spec says additionalProperties=false only at the top.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>

#include "api_error.h"

namespace stripe_emulator {

std::optional<ApiError> validate_params(const nlohmann::json& params, const nlohmann::json& schema);

}  // namespace stripe_emulator
