// What every fuzz target shares: an invariant check that aborts with a readable reason (libFuzzer
// then saves the input), a UTF-8 validator written independently of the library's, the fake API
// key the configuration targets plant, and the `NAME=VALUE` environment format.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace stripe_billing::fuzz {

// Shaped like a test key but, like the repository's other test keys, never like a real one.
inline constexpr std::string_view kFuzzApiKey = "sk_test_fuzz_key_0000_0000_0000_0000";

// Bytes for a report: printable ASCII as is, everything else as \xHH, at most 2000 bytes. Not
// log_safe(): the targets check log_safe itself, so their reports must not depend on it.
inline std::string printable(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (out.size() >= 2000) return out + "...(" + std::to_string(text.size()) + " bytes)";
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buffer[5];
      std::snprintf(buffer, sizeof buffer, "\\x%02x", c);
      out += buffer;
    }
  }
  return out;
}

[[noreturn]] inline void fail(const char* condition, const char* file, int line,
                              std::string_view detail) {
  std::fprintf(stderr, "\n==fuzz== invariant violated at %s:%d: %s\n==fuzz== detail: %s\n", file,
               line, condition, printable(detail).c_str());
  std::abort();
}

#define FUZZ_CHECK(condition, detail)                                                       \
  do {                                                                                      \
    if (!(condition)) ::stripe_billing::fuzz::fail(#condition, __FILE__, __LINE__, detail); \
  } while (false)

// Runs `body`; an exception escaping it is a finding (the library promises none).
template <typename Body>
void must_not_throw(const char* what, Body&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    fail(what, __FILE__, __LINE__, std::string("threw: ") + e.what());
  } catch (...) {
    fail(what, __FILE__, __LINE__, "threw a non-std exception");
  }
}

// RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF.
inline bool valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b0 = static_cast<unsigned char>(text[i]);
    std::size_t length = 0;
    unsigned char low = 0x80, high = 0xBF;  // the allowed range of the second byte
    if (b0 < 0x80) {
      ++i;
      continue;
    } else if (b0 >= 0xC2 && b0 <= 0xDF) {
      length = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      length = 3;
      if (b0 == 0xE0) low = 0xA0;
      if (b0 == 0xED) high = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      length = 4;
      if (b0 == 0xF0) low = 0x90;
      if (b0 == 0xF4) high = 0x8F;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto b = static_cast<unsigned char>(text[i + k]);
      if (b < (k == 1 ? low : 0x80) || b > (k == 1 ? high : 0xBF)) return false;
    }
    i += length;
  }
  return true;
}

inline bool contains(std::string_view haystack, std::string_view needle) {
  return !needle.empty() && haystack.find(needle) != std::string_view::npos;
}

// One variable per line, `NAME=VALUE`; in VALUE `\n` is a newline and `\\` a backslash, so a
// value can hold any byte. A line without '=' is ignored; a later line wins.
inline std::map<std::string, std::string> decode_environment(std::string_view text) {
  std::map<std::string, std::string> env;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    const std::size_t equals = line.find('=');
    if (equals == std::string_view::npos) continue;
    std::string value;
    for (std::size_t i = equals + 1; i < line.size(); ++i) {
      if (line[i] == '\\' && i + 1 < line.size() && (line[i + 1] == 'n' || line[i + 1] == '\\')) {
        value.push_back(line[i + 1] == 'n' ? '\n' : '\\');
        ++i;
      } else {
        value.push_back(line[i]);
      }
    }
    env[std::string(line.substr(0, equals))] = std::move(value);
  }
  return env;
}

// A value the library must treat as the API key: a secret or restricted key prefix and a body
// long enough that redact_key() shows only its last four characters.
inline bool looks_like_api_key(std::string_view value) {
  for (std::string_view prefix : {"sk_test_", "sk_live_", "rk_test_", "rk_live_"}) {
    if (value.substr(0, prefix.size()) == prefix && value.size() >= prefix.size() + 12) {
      return true;
    }
  }
  return false;
}

}  // namespace stripe_billing::fuzz
