// Stripe's objects in memory: customers, products, prices, subscriptions with their items, and the
// usage recorded against each item. It enforces what Stripe enforces on these objects: referenced
// ids exist, a deleted item takes no usage, a usage timestamp lies in the item's current period and
// not in the future. `set` usage replaces an item's running total, `increment` adds to it.
// Thread-safe: one mutex, every method is atomic; answers are copies.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api_error.h"
#include "stripe_emulator/emulator.h"

namespace stripe_emulator {

using Metadata = std::map<std::string, std::string>;

struct Customer {
  std::string id;
  std::int64_t created = 0;
  std::string email;
  std::string name;
  std::string phone;
  Metadata metadata;
};

struct Product {
  std::string id;  // chosen by the caller when given, as Stripe allows
  std::int64_t created = 0;
  std::string name;
  bool active = true;
  std::string unit_label;
  Metadata metadata;
};

struct Recurring {
  std::string interval = "month";
  std::int64_t interval_count = 1;
  std::string usage_type = "licensed";
  std::string aggregate_usage;  // empty unless metered
  std::string meter;            // a meter-backed price: the meter's id (mtr_…); else empty
};

struct Price {
  std::string id;
  std::int64_t created = 0;
  std::string product;
  std::string currency;
  std::optional<std::int64_t> unit_amount;
  std::optional<Recurring> recurring;
  bool active = true;
  std::string nickname;
  std::string lookup_key;
  Metadata metadata;
};

struct SubscriptionItem {
  std::string id;
  std::string subscription;
  std::int64_t created = 0;
  Price price;
  std::optional<std::int64_t> quantity;  // licensed prices only
  std::string summary_id;                // the id of its usage record summary
  Metadata metadata;
};

struct Subscription {
  std::string id;
  std::string customer;
  std::int64_t created = 0;
  std::int64_t current_period_start = 0;
  std::int64_t current_period_end = 0;
  std::string status = "active";
  Metadata metadata;
  std::vector<SubscriptionItem> items;  // live items only
};

struct NewItem {
  std::string price_id;
  std::optional<std::int64_t> quantity;
};

struct Period {
  std::int64_t start = 0;
  std::int64_t end = 0;
};

class Store {
 public:
  using Clock = std::function<std::int64_t()>;
  explicit Store(Clock clock);

  std::int64_t now() const { return clock_(); }

  Customer add_customer(Customer customer);
  std::optional<Customer> customer(const std::string& id) const;
  std::vector<Customer> customers() const;  // newest first

  Expected<Product> add_product(Product product);
  std::optional<Product> product(const std::string& id) const;

  Expected<Price> add_price(Price price);
  std::optional<Price> price(const std::string& id) const;
  std::vector<Price> prices() const;  // newest first

  // Errors name the parameters of POST /v1/subscriptions (customer, items[i][price]).
  // Without `period`, the current period starts now and lasts one interval of the first price.
  Expected<Subscription> add_subscription(const std::string& customer_id,
                                          const std::vector<NewItem>& items, Metadata metadata,
                                          std::optional<Period> period = std::nullopt);
  std::optional<Subscription> subscription(const std::string& id) const;
  std::vector<Subscription> subscriptions() const;  // newest first
  std::optional<SubscriptionItem> item(const std::string& id) const;
  std::optional<Period> item_period(const std::string& item_id) const;
  bool delete_item(const std::string& id);

  // `timestamp` absent means now.
  Expected<UsageRecord> record_usage(const std::string& item_id, std::int64_t quantity,
                                     std::optional<std::int64_t> timestamp,
                                     const std::string& action);
  std::int64_t total_usage(const std::string& item_id) const;
  std::vector<UsageRecord> usage_records(const std::string& item_id) const;
  std::map<std::string, std::int64_t> totals_by_customer() const;
  std::map<std::string, std::int64_t> totals_by_item() const;

 private:
  struct Usage {
    std::int64_t total = 0;
    std::vector<UsageRecord> records;
  };

  const SubscriptionItem* find_item(const std::string& id) const;

  Clock clock_;
  mutable std::mutex mutex_;
  std::map<std::string, Customer> customers_;
  std::vector<std::string> customer_order_;
  std::map<std::string, Product> products_;
  std::map<std::string, Price> prices_;
  std::map<std::string, Subscription> subscriptions_;
  std::vector<std::string> subscription_order_;
  std::map<std::string, std::string> subscription_of_item_;  // every item ever created
  std::map<std::string, Usage> usage_;                       // by item id, deleted items too
};

}  // namespace stripe_emulator
