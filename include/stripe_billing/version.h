#pragma once

#define STRIPE_BILLING_VERSION_MAJOR 0
#define STRIPE_BILLING_VERSION_MINOR 1
#define STRIPE_BILLING_VERSION_PATCH 0
#define STRIPE_BILLING_VERSION "0.1.0"

namespace stripe_billing {
// "stripe_billing/0.1.0": the User-Agent product token sent to Stripe.
inline constexpr const char* kUserAgent = "stripe_billing-cpp/" STRIPE_BILLING_VERSION;
}  // namespace stripe_billing
