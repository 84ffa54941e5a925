// Uses an installed stripe_billing from outside the project: its public headers compile on their
// own, finalize_config rejects a bad key, and a StripeLogger starts and stops. Exits 0 when all
// of that holds.
#include <stripe_billing/config.h>
#include <stripe_billing/stripe_logger.h>
#include <stripe_billing/version.h>

#include <chrono>
#include <iostream>
#include <string>

namespace {

int fail(const std::string& what) {
  std::cerr << "package consumer: " << what << "\n";
  return 1;
}

}  // namespace

int main() {
  stripe_billing::Config invalid;
  invalid.api_key = "pk_test_not_a_secret_key";
  invalid.price_id = "price_1PxyzMetered";
  const auto rejected = stripe_billing::finalize_config(invalid);
  if (rejected) return fail("finalize_config accepted a publishable key");
  if (rejected.error().message.find("STRIPE_API_KEY") == std::string::npos) {
    return fail("the error does not name STRIPE_API_KEY: " + rejected.error().message);
  }

  stripe_billing::Config config;
  config.api_key = "sk_test_51NzQvRkLmYb_De7Fh3Jx9PaTuWc_GsHiKoAbCdEfGhwxyz";
  config.price_id = "price_1PxyzMetered";
  config.outbox_path = ":memory:";
  config.api_base = "http://127.0.0.1:9";
  auto logger = stripe_billing::make_stripe_logger(config);
  if (!logger) return fail("make_stripe_logger failed: " + logger.error().to_string());
  if (!(*logger)->shutdown(std::chrono::steady_clock::now() + std::chrono::seconds(5))) {
    return fail("shutdown did not drain an idle logger");
  }
  std::cout << "package consumer: ok (stripe_billing " << STRIPE_BILLING_VERSION << ")\n";
  return 0;
}
