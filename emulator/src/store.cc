#include "store.h"

#include <algorithm>
#include <ctime>

#include "ids.h"

namespace stripe_emulator {
namespace {

// Stripe bills in calendar units: a monthly period started on Jan 31 ends on Feb 28/29.
std::int64_t add_interval(std::int64_t start, const Recurring& recurring) {
  const auto count = static_cast<int>(recurring.interval_count);
  if (recurring.interval == "day") return start + 86400LL * count;
  if (recurring.interval == "week") return start + 7 * 86400LL * count;
  const auto seconds = static_cast<std::time_t>(start);
  std::tm calendar{};
  gmtime_r(&seconds, &calendar);
  const int months = (recurring.interval == "year" ? 12 : 1) * count;
  const int day = calendar.tm_mday;
  calendar.tm_mday = 1;
  calendar.tm_mon += months;
  timegm(&calendar);  // normalizes month and year
  static constexpr int kDaysIn[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const int year = calendar.tm_year + 1900;
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  const int last_day = kDaysIn[calendar.tm_mon] + (calendar.tm_mon == 1 && leap ? 1 : 0);
  calendar.tm_mday = std::min(day, last_day);
  return static_cast<std::int64_t>(timegm(&calendar));
}

ApiError timestamp_error(const std::string& rule) {
  return errors::invalid_request(
      "Cannot create the usage record with this timestamp because timestamps must be " + rule + ".",
      "timestamp");
}

}  // namespace

Store::Store(Clock clock) : clock_(std::move(clock)) {}

Customer Store::add_customer(Customer customer) {
  customer.id = new_id("cus_", 14);
  customer.created = now();
  std::lock_guard lock(mutex_);
  customer_order_.push_back(customer.id);
  return customers_[customer.id] = std::move(customer);
}

std::optional<Customer> Store::customer(const std::string& id) const {
  std::lock_guard lock(mutex_);
  const auto found = customers_.find(id);
  if (found == customers_.end()) return std::nullopt;
  return found->second;
}

std::vector<Customer> Store::customers() const {
  std::lock_guard lock(mutex_);
  std::vector<Customer> newest_first;
  for (auto id = customer_order_.rbegin(); id != customer_order_.rend(); ++id) {
    newest_first.push_back(customers_.at(*id));
  }
  return newest_first;
}

Expected<Product> Store::add_product(Product product) {
  if (product.id.empty()) product.id = new_id("prod_", 14);
  product.created = now();
  std::lock_guard lock(mutex_);
  if (products_.count(product.id) > 0) {
    auto error = errors::invalid_request("Product already exists.", "id");
    error.code = "resource_already_exists";
    return error;
  }
  return products_[product.id] = std::move(product);
}

std::optional<Product> Store::product(const std::string& id) const {
  std::lock_guard lock(mutex_);
  const auto found = products_.find(id);
  if (found == products_.end()) return std::nullopt;
  return found->second;
}

Expected<Price> Store::add_price(Price price) {
  price.id = new_id("price_", 24);
  price.created = now();
  std::lock_guard lock(mutex_);
  if (products_.count(price.product) == 0) {
    return errors::resource_missing("product", price.product, "product");
  }
  return prices_[price.id] = std::move(price);
}

std::optional<Price> Store::price(const std::string& id) const {
  std::lock_guard lock(mutex_);
  const auto found = prices_.find(id);
  if (found == prices_.end()) return std::nullopt;
  return found->second;
}

std::vector<Price> Store::prices() const {
  std::lock_guard lock(mutex_);
  std::vector<Price> newest_first;
  for (const auto& [id, price] : prices_) newest_first.push_back(price);
  std::stable_sort(newest_first.begin(), newest_first.end(),
                   [](const Price& a, const Price& b) { return a.created > b.created; });
  return newest_first;
}

Expected<Subscription> Store::add_subscription(const std::string& customer_id,
                                               const std::vector<NewItem>& items, Metadata metadata,
                                               std::optional<Period> period) {
  const auto created = now();
  std::lock_guard lock(mutex_);
  if (customers_.count(customer_id) == 0) {
    return errors::resource_missing("customer", customer_id, "customer");
  }
  if (items.empty()) return errors::parameter_missing("items");
  Subscription subscription{new_id("sub_", 24), customer_id,         created, 0, 0,
                            "active",           std::move(metadata), {}};
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto param = "items[" + std::to_string(i) + "][price]";
    const auto price = prices_.find(items[i].price_id);
    if (price == prices_.end()) {
      return errors::resource_missing("price", items[i].price_id, param);
    }
    if (!price->second.recurring) {
      return errors::invalid_request(
          "The price specified is set to `type=one_time` but this field only accepts prices "
          "with `type=recurring`.",
          param);
    }
    const bool metered = price->second.recurring->usage_type == "metered";
    subscription.items.push_back(SubscriptionItem{
        new_id("si_", 14),
        subscription.id,
        created,
        price->second,
        metered ? std::nullopt : std::optional<std::int64_t>(items[i].quantity.value_or(1)),
        new_id("sis_", 14),
        {}});
  }
  const auto& first_price = subscription.items.front().price;
  subscription.current_period_start = period ? period->start : created;
  subscription.current_period_end =
      period ? period->end : add_interval(created, *first_price.recurring);
  for (const auto& item : subscription.items) {
    subscription_of_item_[item.id] = subscription.id;
    usage_[item.id];
  }
  subscription_order_.push_back(subscription.id);
  return subscriptions_[subscription.id] = std::move(subscription);
}

std::optional<Subscription> Store::subscription(const std::string& id) const {
  std::lock_guard lock(mutex_);
  const auto found = subscriptions_.find(id);
  if (found == subscriptions_.end()) return std::nullopt;
  return found->second;
}

std::vector<Subscription> Store::subscriptions() const {
  std::lock_guard lock(mutex_);
  std::vector<Subscription> newest_first;
  for (auto id = subscription_order_.rbegin(); id != subscription_order_.rend(); ++id) {
    newest_first.push_back(subscriptions_.at(*id));
  }
  return newest_first;
}

const SubscriptionItem* Store::find_item(const std::string& id) const {
  const auto owner = subscription_of_item_.find(id);
  if (owner == subscription_of_item_.end()) return nullptr;
  for (const auto& item : subscriptions_.at(owner->second).items) {
    if (item.id == id) return &item;
  }
  return nullptr;
}

std::optional<SubscriptionItem> Store::item(const std::string& id) const {
  std::lock_guard lock(mutex_);
  const auto* item = find_item(id);
  if (item == nullptr) return std::nullopt;
  return *item;
}

std::optional<Period> Store::item_period(const std::string& item_id) const {
  std::lock_guard lock(mutex_);
  const auto* item = find_item(item_id);
  if (item == nullptr) return std::nullopt;
  const auto& subscription = subscriptions_.at(item->subscription);
  return Period{subscription.current_period_start, subscription.current_period_end};
}

bool Store::delete_item(const std::string& id) {
  std::lock_guard lock(mutex_);
  const auto owner = subscription_of_item_.find(id);
  if (owner == subscription_of_item_.end()) return false;
  auto& items = subscriptions_.at(owner->second).items;
  const auto before = items.size();
  items.erase(std::remove_if(items.begin(), items.end(),
                             [&](const SubscriptionItem& item) { return item.id == id; }),
              items.end());
  return items.size() != before;
}

Expected<UsageRecord> Store::record_usage(const std::string& item_id, std::int64_t quantity,
                                          std::optional<std::int64_t> timestamp,
                                          const std::string& action) {
  const auto current_time = now();
  std::lock_guard lock(mutex_);
  const auto* item = find_item(item_id);
  if (item == nullptr) {
    return errors::resource_missing("subscription_item", item_id, "subscription_item");
  }
  if (!item->price.recurring || item->price.recurring->usage_type != "metered") {
    return errors::invalid_request(
        "Usage records can only be created for subscription items with a metered price.",
        "subscription_item");
  }
  if (quantity < 0) {
    return errors::invalid_request("Usage quantity must be zero or a positive integer.",
                                   "quantity");
  }
  const auto at = timestamp.value_or(current_time);
  const auto& subscription = subscriptions_.at(item->subscription);
  if (at > current_time) return timestamp_error("before the current time");
  if (at < subscription.current_period_start) {
    return timestamp_error("after the subscription's current period start time");
  }
  if (at >= subscription.current_period_end) {
    return timestamp_error("before the subscription's current period end time");
  }
  auto& usage = usage_[item_id];
  usage.total = action == "set" ? quantity : usage.total + quantity;
  return usage.records.emplace_back(
      UsageRecord{new_id("mbur_", 24), item_id, quantity, at, action});
}

std::int64_t Store::total_usage(const std::string& item_id) const {
  std::lock_guard lock(mutex_);
  const auto found = usage_.find(item_id);
  return found == usage_.end() ? 0 : found->second.total;
}

std::vector<UsageRecord> Store::usage_records(const std::string& item_id) const {
  std::lock_guard lock(mutex_);
  const auto found = usage_.find(item_id);
  return found == usage_.end() ? std::vector<UsageRecord>{} : found->second.records;
}

std::map<std::string, std::int64_t> Store::totals_by_customer() const {
  std::lock_guard lock(mutex_);
  std::map<std::string, std::int64_t> totals;
  for (const auto& [item_id, usage] : usage_) {
    const auto& subscription = subscriptions_.at(subscription_of_item_.at(item_id));
    totals[subscription.customer] += usage.total;
  }
  return totals;
}

std::map<std::string, std::int64_t> Store::totals_by_item() const {
  std::lock_guard lock(mutex_);
  std::map<std::string, std::int64_t> totals;
  for (const auto& [item_id, usage] : usage_) totals[item_id] = usage.total;
  return totals;
}

}  // namespace stripe_emulator
