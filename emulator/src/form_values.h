// Typed reads from a parameter tree that already passed its operation's schema (see
// form_parser.h and schema_validator.h): leaves are strings, hashes and arrays are objects.
// The schema has checked every shape, so these only convert.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace stripe_emulator {

std::string text(const nlohmann::json& params, const char* name, const std::string& fallback = "");
std::optional<std::int64_t> integer(const nlohmann::json& params, const char* name);
bool boolean(const nlohmann::json& params, const char* name, bool fallback);
// A hash of strings (metadata, payload), or "" to mean none.
std::map<std::string, std::string> string_hash(const nlohmann::json& params, const char* name);
// Form arrays arrive as hashes keyed by index; in index order.
std::vector<nlohmann::json> array(const nlohmann::json& params, const char* name);
// Stripe's `limit`: 10 unless given, clamped to 1..100.
std::size_t limit(const nlohmann::json& params);

}  // namespace stripe_emulator
