#include "stripe_billing/stripe_client.h"

#include <gtest/gtest.h>

#include "stripe_billing/version.h"

namespace stripe_billing {
namespace {

// Records the request and answers with a canned response: the transport is our own seam.
class CannedTransport : public HttpTransport {
 public:
  explicit CannedTransport(HttpResponse response) : response_(std::move(response)) {}
  Expected<HttpResponse> send(const HttpRequest& request) override {
    last = request;
    return response_;
  }
  void abort_in_flight() override {}
  std::string header(const std::string& name) const {
    for (const auto& [key, value] : last.headers) {
      if (key == name) return value;
    }
    return "";
  }
  HttpRequest last;

 private:
  HttpResponse response_;
};

StripeClientOptions options() {
  return {"https://api.stripe.com", Secret("sk_test_abcdefghij_klmnopwxyz"), "2025-02-24.acacia",
          std::chrono::milliseconds(1234)};
}

TEST(EncodeForm, PercentEncodesEverythingButUnreservedBytes) {
  EXPECT_EQ(encode_form({{"a", "b c"}, {"payload[value]", "1"}}), "a=b%20c&payload%5Bvalue%5D=1");
  EXPECT_EQ(percent_encode("a&b=c/../%"), "a%26b%3Dc%2F..%2F%25");
  EXPECT_EQ(percent_encode(std::string_view("\xff\x00z", 3)), "%FF%00z");
}

TEST(EncodeForm, HostileValuesCannotAddOrSplitFields) {
  const std::string body = encode_form({{"query", "x&quantity=999999&y=[z]"}, {"limit", "2"}});
  EXPECT_EQ(body, "query=x%26quantity%3D999999%26y%3D%5Bz%5D&limit=2");
  EXPECT_EQ(std::count(body.begin(), body.end(), '&'), 1);
}

TEST(EncodePathSegment, EncodesDotsAndSlashes) {
  EXPECT_EQ(encode_path_segment("../si_1"), "%2E%2E%2Fsi_1");
  EXPECT_EQ(encode_path_segment("si_AZ09_"), "si_AZ09_");
}

TEST(StripeClient, PostSendsAuthVersionIdempotencyAndUserAgent) {
  CannedTransport transport({200, {{"request-id", "req_1"}}, R"({"id":"mbur_1"})"});
  StripeClient client(transport, options());
  auto response = client.post_form("/v1/x", {{"quantity", "5"}}, "key-1");
  ASSERT_TRUE(response) << response.error().to_string();
  EXPECT_EQ(response->request_id, "req_1");
  EXPECT_EQ(response->body["id"], "mbur_1");
  EXPECT_EQ(transport.last.method, "POST");
  EXPECT_EQ(transport.last.url, "https://api.stripe.com/v1/x");
  EXPECT_EQ(transport.last.body, "quantity=5");
  EXPECT_EQ(transport.last.timeout.count(), 1234);
  EXPECT_EQ(transport.header("Authorization"), "Bearer sk_test_abcdefghij_klmnopwxyz");
  EXPECT_EQ(transport.header("Stripe-Version"), "2025-02-24.acacia");
  EXPECT_EQ(transport.header("Idempotency-Key"), "key-1");
  EXPECT_EQ(transport.header("Content-Type"), "application/x-www-form-urlencoded");
  EXPECT_EQ(transport.header("User-Agent"), kUserAgent);
}

TEST(StripeClient, GetEncodesTheQueryAndSendsNoIdempotencyKey) {
  CannedTransport transport({200, {}, R"({"data":[]})"});
  StripeClient client(transport, options());
  ASSERT_TRUE(client.get("/v1/customers/search", {{"query", "metadata['k']:'a b'"}}));
  EXPECT_EQ(transport.last.method, "GET");
  EXPECT_EQ(transport.last.url,
            "https://api.stripe.com/v1/customers/search?query=metadata%5B%27k%27%5D%3A%27a%20b%27");
  EXPECT_EQ(transport.header("Idempotency-Key"), "");
}

TEST(StripeClient, ParsesStripesErrorIntoATypedError) {
  CannedTransport transport({400,
                             {{"request-id", "req_9"}, {"stripe-should-retry", "false"}},
                             R"({"error":{"type":"invalid_request_error","code":"parameter_unknown",
           "param":"metadata","message":"Received unknown parameter: metadata"}})"});
  StripeClient client(transport, options());
  auto response = client.post_form("/v1/x", {}, "k");
  ASSERT_FALSE(response);
  const Error& error = response.error();
  EXPECT_EQ(error.code, ErrorCode::kStripe);
  ASSERT_TRUE(error.stripe);
  EXPECT_EQ(error.stripe->http_status, 400);
  EXPECT_EQ(error.stripe->type, "invalid_request_error");
  EXPECT_EQ(error.stripe->code, "parameter_unknown");
  EXPECT_EQ(error.stripe->param, "metadata");
  EXPECT_EQ(error.stripe->request_id, "req_9");
  EXPECT_EQ(error.stripe->should_retry, false);
  EXPECT_NE(error.to_string().find("param metadata"), std::string::npos);
}

TEST(StripeClient, ReadsRateLimitHeaders) {
  CannedTransport transport({429,
                             {{"stripe-rate-limited-reason", "global-rate"}, {"retry-after", "2"}},
                             R"({"error":{"type":"invalid_request_error","code":"rate_limit"}})"});
  StripeClient client(transport, options());
  auto response = client.get("/v1/x");
  ASSERT_FALSE(response);
  EXPECT_EQ(response.error().stripe->rate_limited_reason, "global-rate");
  EXPECT_EQ(response.error().stripe->retry_after_seconds, 2);
}

TEST(StripeClient, ToleratesANonJsonErrorBody) {
  CannedTransport transport({502, {}, "<html>bad gateway</html>"});
  StripeClient client(transport, options());
  auto response = client.get("/v1/x");
  ASSERT_FALSE(response);
  EXPECT_EQ(response.error().stripe->http_status, 502);
  EXPECT_TRUE(response.error().stripe->type.empty());
}

TEST(StripeClient, ASuccessWithANonJsonBodyIsAnInvalidResponse) {
  CannedTransport transport({200, {}, "ok"});
  StripeClient client(transport, options());
  auto response = client.get("/v1/x");
  ASSERT_FALSE(response);
  EXPECT_EQ(response.error().code, ErrorCode::kInvalidResponse);
}

TEST(StripeClient, ErrorsNeverCarryTheKey) {
  CannedTransport transport(
      {401,
       {},
       R"({"error":{"message":"Invalid API Key provided: sk_test_****wxyz","type":"invalid_request_error"}})"});
  StripeClient client(transport, options());
  auto response = client.get("/v1/x");
  ASSERT_FALSE(response);
  EXPECT_EQ(response.error().to_string().find("sk_test_abcdefghij_klmnopwxyz"), std::string::npos);
}

TEST(StripeClient, ARedirectWithAJsonBodyIsNotASuccess) {
  for (int status : {301, 302, 304, 100, 0}) {
    CannedTransport transport(
        {status, {{"location", "https://elsewhere.example"}}, "{\"id\":\"x\"}"});
    StripeClient client(transport, options());
    auto response = client.post_form("/v1/subscription_items/si_1/usage_records", {}, "key");
    ASSERT_FALSE(response) << status;
    EXPECT_EQ(response.error().code, ErrorCode::kInvalidResponse) << status;
  }
}

TEST(StripeClient, NamesTheEndpointOfEveryRequestItSends) {
  CannedTransport transport({200, {}, "{}"});
  StripeClient client(transport, options());
  ASSERT_TRUE(client.post_form("/v1/subscription_items/si_1/usage_records", {}, "key"));
  EXPECT_EQ(transport.last.endpoint, Endpoint::kUsageRecords);
  ASSERT_TRUE(client.get("/v1/customers/search", {{"query", "x"}}));
  EXPECT_EQ(transport.last.endpoint, Endpoint::kCustomerSearch);
  ASSERT_TRUE(client.post_json("/v2/billing/meter_event_session", nlohmann::json::object()));
  EXPECT_EQ(transport.last.endpoint, Endpoint::kMeterEventSession);
}

}  // namespace
}  // namespace stripe_billing
