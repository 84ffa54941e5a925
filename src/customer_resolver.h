// Turns a customer key (an end-user, user or team id from the gateway) into the Stripe customer
// and the subscription item that bills it. Order: the static map from the configuration, then a
// value that is itself a `cus_…` id, then Stripe's customer search on a metadata key followed by
// the customer's active subscriptions on the configured price. Answers, found or not, are cached
// (misses for a shorter time); network failures are not cached.
//
// Thread-safe. Lookups run on the caller's thread (the lookup worker), never under the lock.
// Stripe's answers are read without assuming their shape: an answer of the wrong shape is
// kInvalidResponse (retried), never an exception.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "stripe_billing/config.h"
#include "stripe_billing/error.h"
#include "stripe_billing/stripe_client.h"
#include "stripe_billing/stripe_logger.h"

namespace stripe_billing {

struct BillingTarget {
  std::string customer_id;  // may be empty when the static map names an item directly
  std::string subscription_item_id;
  // The item's current billing period (unix seconds); 0 when unknown (static map).
  std::int64_t period_start = 0;
  std::int64_t period_end = 0;
};

class CustomerResolver {
 public:
  CustomerResolver(const StripeClient& client, const FinalizedConfig& config,
                   std::shared_ptr<Clock> clock);

  // The customer and its subscription item on `price_id`; with an empty price id only the
  // customer (meters need nothing else). Errors: kCustomerNotFound, kSubscriptionItemNotFound,
  // kMissingCustomer (a key that no Stripe metadata value can equal: over 500 bytes or not
  // UTF-8), or the Stripe/network error.
  Expected<BillingTarget> resolve(const std::string& customer_key, const std::string& price_id);
  // What resolve() would answer without a request (the static map, a `cus_` key, a refused key,
  // the cache), and when Stripe gave a cached answer; nullopt when only Stripe knows.
  struct Known {
    Expected<BillingTarget> answer;
    TimePoint fetched;
  };
  std::optional<Known> known(const std::string& customer_key, const std::string& price_id);
  // Forget what is cached for the key and price (after Stripe said the item is gone).
  void invalidate(const std::string& customer_key, const std::string& price_id);

  std::uint64_t hits() const noexcept { return hits_; }
  std::uint64_t misses() const noexcept { return misses_; }
  std::uint64_t requests() const noexcept { return requests_; }  // HTTP requests made
  // Resolutions that failed for another reason than "not found" (network, Stripe errors).
  std::uint64_t failures() const noexcept { return failures_; }

 private:
  struct Entry {
    std::optional<BillingTarget> target;  // nullopt: a cached "not found"
    ErrorCode not_found_code = ErrorCode::kCustomerNotFound;
    TimePoint expires;
    TimePoint fetched;
  };

  static std::string cache_key(const std::string& customer_key, const std::string& price_id);
  std::optional<Known> cached_entry(const std::string& key, bool count_hit);
  std::optional<Known> without_request(const std::string& customer_key);
  Expected<BillingTarget> look_up_customer(const std::string& customer_key);
  Expected<BillingTarget> look_up_item(const std::string& customer_key,
                                       const std::string& customer_id, const std::string& price_id);
  Expected<std::string> search_customer(const std::string& customer_key);
  Expected<BillingTarget> find_subscription_item(const std::string& customer_id,
                                                 const std::string& price_id);
  void remember(const std::string& key, Entry entry);

  const StripeClient& client_;
  const FinalizedConfig& config_;
  std::shared_ptr<Clock> clock_;
  std::mutex mutex_;
  std::unordered_map<std::string, Entry> cache_;
  std::atomic<std::uint64_t> hits_{0};
  std::atomic<std::uint64_t> misses_{0};
  std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::uint64_t> failures_{0};
};

// Stripe search syntax: `metadata['key']:'value'` with `'` and `\` escaped in the value.
std::string customer_search_query(const std::string& metadata_key, const std::string& value);

// True for `cus_` followed by one or more [A-Za-z0-9_].
bool is_customer_id(const std::string& value);

}  // namespace stripe_billing
