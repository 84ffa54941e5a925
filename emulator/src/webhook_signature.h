// Stripe's webhook signature: the header `Stripe-Signature: t=<unix seconds>,v1=<signature>`,
// where the signature is the lowercase hex HMAC-SHA256, keyed with the endpoint's secret
// (whsec_…, used as it is, prefix included), of "<t>.<raw body>". A receiver recomputes it from
// the raw body and compares, and refuses a t too far from its own clock (replays).
#pragma once

#include <cstdint>
#include <string>

namespace stripe_emulator {

std::string hmac_sha256_hex(const std::string& key, const std::string& message);
std::string stripe_signature_header(std::int64_t timestamp, const std::string& payload,
                                    const std::string& secret);

}  // namespace stripe_emulator
