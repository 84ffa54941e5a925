// Shared by the configuration tests: sample keys and an injected environment.
#pragma once

#include <cctype>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "stripe_billing/config.h"

namespace stripe_billing::testing {

inline constexpr const char* kTestKey = "sk_test_51NzQvRkLmYb_De7Fh3Jx9PaTuWc_GsHiKoAbCdEfGhwxyz";

using Env = std::map<std::string, std::string>;

// Secret-shaped test values of every kind the library redacts. Their bodies hold '_', which real
// keys never do.
inline constexpr const char* kOtherLiveKey =
    "sk_live_51OtHeRkEy_Zq8Lm3Np_Vx2Rt7Ws4Yb9Kc1Df6Gh0Jlive";
inline constexpr const char* kRestrictedKey =
    "rk_test_51ReStRiCtEd_Ab3Cd5Ef7Gh9_Jk2Lm4Np6Qr8Strict";
inline constexpr const char* kWebhookSecret = "whsec_We8Bh0Ok_Si9Gn1Ing2_Se3Cr4Et5Ab6Cd7Ef8Gh9hook";

// The first piece of one of `secrets` that `text` shows in clear: the secret itself, eight
// characters in a row of what follows its prefix (a redacted form shows four at most), or a secret
// prefix followed by a letter or digit (a redacted form has '…' there). "" when there is none.
inline std::string leaked_secret(const std::string& text, const std::vector<std::string>& secrets) {
  for (const std::string& secret : secrets) {
    if (text.find(secret) != std::string::npos) return secret;
    const std::size_t prefix = secret.rfind("whsec_", 0) == 0 ? 6 : 8;
    for (std::size_t i = prefix; i + 8 <= secret.size(); ++i) {
      if (text.find(secret.substr(i, 8)) != std::string::npos) return secret.substr(i, 8);
    }
  }
  for (const std::string prefix : {"sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"}) {
    for (std::size_t at = text.find(prefix); at != std::string::npos;
         at = text.find(prefix, at + 1)) {
      const std::size_t next = at + prefix.size();
      if (next < text.size() && std::isalnum(static_cast<unsigned char>(text[next]))) {
        return text.substr(at, prefix.size() + 1);
      }
    }
  }
  return "";
}

inline EnvLookup lookup_in(Env env) {
  return [env = std::move(env)](const std::string& name) -> std::optional<std::string> {
    const auto found = env.find(name);
    if (found == env.end()) return std::nullopt;
    return found->second;
  };
}

}  // namespace stripe_billing::testing
