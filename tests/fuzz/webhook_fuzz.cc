// Stripe's webhooks on arbitrary bytes: verify_stripe_signature(), split_meter_identifier() and
// StripeLogger::handle_stripe_webhook() (a memory outbox, a webhook secret, Stripe out of reach).
// The input: one byte picking how the header is made, then the Stripe-Signature header up to the
// first '\n', then the body.
//   mode 0: the header as given;
//   mode 1: the body signed correctly now (the body's JSON paths: invalid, received, duplicate,
//           processed in the background whatever its type);
//   mode 2: a correct "t=…,v1=…" followed by ',' and the header as given.
// Invariants: nothing throws or crashes; a verdict of valid needs the header to carry the v1
// computed here with OpenSSL (never a forgery); a correct signature is valid unless the rest of
// the header adds a second t (malformed) or makes it longer than 4096 bytes; the route answers
// 200, 400, 413 or 503 with a JSON object body, 200 only for a correctly signed event with a
// string id and type; an identifier split in two joins back to itself at its last ':'.

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "hmac_reference.h"
#include "stripe_billing/config.h"
#include "stripe_billing/secret.h"
#include "stripe_billing/stripe_logger.h"
#include "webhooks.h"

namespace stripe_billing::fuzz {
namespace {

using nlohmann::json;

constexpr char kSecret[] = "whsec_fuzz_0000aaaa1111bbbb2222cccc";
constexpr std::int64_t kNow = 1'700'000'000;
constexpr std::int64_t kTolerance = 300;

std::string hmac_hex(std::string_view message) {
  return stripe_billing::testing::reference_hmac_sha256_hex(kSecret, message);
}

std::string signature_for(std::int64_t t, std::string_view body) {
  std::string message = std::to_string(t) + ".";
  message.append(body);
  return "t=" + std::to_string(t) + ",v1=" + hmac_hex(message);
}

// True when a comma-separated item of `header` is "t=…" (the verifier's key "t").
bool has_t_item(std::string_view header) {
  while (true) {
    const std::size_t comma = header.find(',');
    const std::string_view item = header.substr(0, comma);
    const std::size_t equals = item.find('=');
    if (equals != std::string_view::npos && item.substr(0, equals) == "t") return true;
    if (comma == std::string_view::npos) return false;
    header.remove_prefix(comma + 1);
  }
}

StripeLogger& logger() {
  // One logger for every input, as a host has: de-duplication state accumulates across inputs.
  static StripeLogger* made = [] {
    Config config;
    config.api_key = std::string(kFuzzApiKey);
    config.api_base = "http://127.0.0.1:9";  // nothing listens: every fetch fails at once
    config.billing_mode = "meter_events";
    config.meter_event_name = "llm_tokens";
    config.quantity = "cost";
    config.admission = "credits";  // credit events reach the admission engine
    config.outbox_path = ":memory:";
    config.webhook_secret = kSecret;
    config.timeout_ms = "200";
    config.connect_timeout_ms = "100";
    auto finalized = finalize_config(config);
    if (!finalized) fail("finalize_config", __FILE__, __LINE__, finalized.error().to_string());
    return new StripeLogger(std::move(finalized.value()));  // never destroyed: lives as the host
  }();
  return *made;
}

void check_split(std::string_view id) {
  const auto split = split_meter_identifier(id);
  if (!split) return;
  FUZZ_CHECK(id.rfind("sbh-", 0) != 0, id);
  FUZZ_CHECK(!split->first.empty() && !split->second.empty(), id);
  FUZZ_CHECK(split->second.find(':') == std::string::npos, id);
  FUZZ_CHECK(split->first + ":" + split->second == id, id);
}

void check_verdict(std::string_view body, std::string_view header, SignatureCheck check,
                   std::int64_t now) {
  if (check != SignatureCheck::kValid) return;
  // Valid: the header must carry a t within the tolerance whose HMAC it also carries.
  bool carried = false;
  for (std::int64_t t = now - kTolerance; t <= now + kTolerance && !carried; ++t) {
    std::string message = std::to_string(t) + ".";
    message.append(body);
    const std::string v1 = "v1=" + hmac_hex(message);
    carried = header.find("t=" + std::to_string(t)) != std::string_view::npos &&
              header.find(v1) != std::string_view::npos;
  }
  FUZZ_CHECK(carried, std::string(header));
}

}  // namespace
}  // namespace stripe_billing::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace stripe_billing;
  using namespace stripe_billing::fuzz;
  if (size == 0) return 0;
  const int mode = data[0] % 3;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::size_t newline = rest.find('\n');
  const std::string_view given = rest.substr(0, newline);
  const std::string_view body =
      newline == std::string_view::npos ? std::string_view() : rest.substr(newline + 1);
  const Secret secret{kSecret};

  must_not_throw("verify_stripe_signature", [&] {
    std::string header(given);
    if (mode == 1) header = signature_for(kNow, body);
    if (mode == 2) header = signature_for(kNow, body) + "," + std::string(given);
    const SignatureCheck check = verify_stripe_signature(body, header, secret, kNow, kTolerance);
    if (mode == 0) check_verdict(body, header, check, kNow);
    if (mode == 1) FUZZ_CHECK(check == SignatureCheck::kValid, header);
    if (mode == 2) {
      const bool expect_malformed = has_t_item(given) || header.size() > 4096;
      FUZZ_CHECK(check == (expect_malformed ? SignatureCheck::kMalformed : SignatureCheck::kValid),
                 header);
    }
    // Other secrets, empty or not: never valid for a header signed with this one.
    if (mode != 0) {
      FUZZ_CHECK(verify_stripe_signature(body, header, Secret("whsec_other_secret_0000"), kNow,
                                         kTolerance) != SignatureCheck::kValid,
                 header);
      FUZZ_CHECK(verify_stripe_signature(body, header, Secret(), kNow, kTolerance) ==
                     SignatureCheck::kMalformed,
                 header);
    }
  });

  must_not_throw("split_meter_identifier", [&] {
    check_split(given);
    check_split(body);
  });

  must_not_throw("handle_stripe_webhook", [&] {
    const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    std::string header(given);
    if (mode == 1) header = signature_for(now, body);
    if (mode == 2) header = signature_for(now, body) + "," + std::string(given);
    const WebhookResponse answer = logger().handle_stripe_webhook(body, header);
    FUZZ_CHECK(answer.status == 200 || answer.status == 400 || answer.status == 413 ||
                   answer.status == 503,
               std::to_string(answer.status) + " " + answer.body);
    const json parsed = json::parse(answer.body, nullptr, false);
    FUZZ_CHECK(parsed.is_object(), answer.body);
    FUZZ_CHECK(answer.body.find(kSecret) == std::string::npos, answer.body);
    if (answer.status == 200) {
      FUZZ_CHECK(parsed == json({{"received", true}}), answer.body);
      const json event = json::parse(body, nullptr, false);
      FUZZ_CHECK(event.is_object(), std::string(body));
      FUZZ_CHECK(event.contains("id") && event["id"].is_string() && event.contains("type") &&
                     event["type"].is_string(),
                 std::string(body));
      if (mode == 0) check_verdict(body, header, SignatureCheck::kValid, now);
    }
    if (mode == 1 && answer.status == 400) {
      FUZZ_CHECK(parsed.value("error", "") == "not a Stripe event (no id or type)", answer.body);
    }
  });
  return 0;
}
