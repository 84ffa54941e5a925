#include "customer_resolver.h"

#include "usage_record.h"

namespace stripe_billing {
namespace {

constexpr std::size_t kMaxMetadataValue = 500;  // Stripe's limit for a metadata value
constexpr std::size_t kMaxCacheEntries = 100'000;

Error not_found(ErrorCode code, const std::string& what) { return Error{code, what, std::nullopt}; }

Error wrong_shape(const std::string& what) {
  return Error{ErrorCode::kInvalidResponse, what, std::nullopt};
}

// A member of a JSON object; null when `value` is not an object or has no such member.
const nlohmann::json* member(const nlohmann::json* value, const char* name) {
  if (value == nullptr || !value->is_object()) return nullptr;
  auto it = value->find(name);
  return it == value->end() ? nullptr : &*it;
}
const nlohmann::json* member(const nlohmann::json& value, const char* name) {
  return member(&value, name);
}

}  // namespace

bool is_customer_id(const std::string& value) {
  if (value.size() <= 4 || value.compare(0, 4, "cus_") != 0) return false;
  for (std::size_t i = 4; i < value.size(); ++i) {
    const char c = value[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) {
      return false;
    }
  }
  return true;
}

std::string customer_search_query(const std::string& metadata_key, const std::string& value) {
  std::string escaped;
  for (char c : value) {
    if (c == '\'' || c == '\\') escaped.push_back('\\');
    escaped.push_back(c);
  }
  return "metadata['" + metadata_key + "']:'" + escaped + "'";
}

CustomerResolver::CustomerResolver(const StripeClient& client, const FinalizedConfig& config,
                                   std::shared_ptr<Clock> clock)
    : client_(client), config_(config), clock_(std::move(clock)) {}

Expected<BillingTarget> CustomerResolver::resolve(const std::string& customer_key,
                                                  const std::string& price_id) {
  if (auto it = config_.customer_map().find(customer_key);
      it != config_.customer_map().end() && !it->second.subscription_item_id.empty()) {
    ++hits_;
    return BillingTarget{it->second.customer_id, it->second.subscription_item_id, 0, 0};
  }
  if (auto cached = cached_entry(cache_key(customer_key, price_id), true)) {
    return std::move(cached->answer);
  }
  ++misses_;
  auto customer = price_id.empty() ? look_up_customer(customer_key) : resolve(customer_key, "");
  if (!customer || price_id.empty()) return customer;
  return look_up_item(customer_key, customer->customer_id, price_id);
}

std::optional<CustomerResolver::Known> CustomerResolver::without_request(
    const std::string& customer_key) {
  const TimePoint now = clock_->now();
  if (auto it = config_.customer_map().find(customer_key); it != config_.customer_map().end()) {
    return Known{BillingTarget{it->second.customer_id, it->second.subscription_item_id, 0, 0}, now};
  }
  if (is_customer_id(customer_key)) return Known{BillingTarget{customer_key, "", 0, 0}, now};
  if (customer_key.size() > kMaxMetadataValue || !is_storable_text(customer_key)) {
    return Known{not_found(ErrorCode::kMissingCustomer,
                           "customer key is not a possible Stripe metadata value (over 500 bytes "
                           "or not UTF-8)"),
                 now};
  }
  return std::nullopt;
}

std::optional<CustomerResolver::Known> CustomerResolver::known(const std::string& customer_key,
                                                               const std::string& price_id) {
  if (auto it = config_.customer_map().find(customer_key);
      it != config_.customer_map().end() && !it->second.subscription_item_id.empty()) {
    return Known{BillingTarget{it->second.customer_id, it->second.subscription_item_id, 0, 0},
                 clock_->now()};
  }
  if (auto cached = cached_entry(cache_key(customer_key, price_id), false)) return cached;
  if (price_id.empty()) return without_request(customer_key);
  auto customer = cached_entry(cache_key(customer_key, ""), false);
  if (!customer) customer = without_request(customer_key);
  // No customer means no item either; a known customer's item on the price only Stripe knows.
  if (customer && !customer->answer) return customer;
  return std::nullopt;
}

void CustomerResolver::invalidate(const std::string& customer_key, const std::string& price_id) {
  std::lock_guard lock(mutex_);
  cache_.erase(cache_key(customer_key, price_id));
}

std::string CustomerResolver::cache_key(const std::string& customer_key,
                                        const std::string& price_id) {
  return price_id + '\n' + customer_key;
}

std::optional<CustomerResolver::Known> CustomerResolver::cached_entry(const std::string& key,
                                                                      bool count_hit) {
  std::lock_guard lock(mutex_);
  auto it = cache_.find(key);
  if (it == cache_.end() || it->second.expires <= clock_->now()) return std::nullopt;
  if (count_hit) ++hits_;
  if (it->second.target) return Known{*it->second.target, it->second.fetched};
  return Known{not_found(it->second.not_found_code, "no Stripe customer or item (cached)"),
               it->second.fetched};
}

Expected<BillingTarget> CustomerResolver::look_up_customer(const std::string& customer_key) {
  const TimePoint now = clock_->now();
  if (auto known = without_request(customer_key)) {
    if (known->answer) {
      remember(cache_key(customer_key, ""), Entry{*known->answer, ErrorCode::kCustomerNotFound,
                                                  now + config_.lookup_cache_ttl(), now});
    }
    return std::move(known->answer);
  }
  auto found = search_customer(customer_key);
  if (!found) {
    if (found.error().code == ErrorCode::kCustomerNotFound) {
      remember(cache_key(customer_key, ""), Entry{std::nullopt, ErrorCode::kCustomerNotFound,
                                                  now + config_.lookup_miss_ttl(), now});
    } else {
      ++failures_;
    }
    return std::move(found).error();
  }
  BillingTarget target{std::move(found.value()), "", 0, 0};
  remember(cache_key(customer_key, ""),
           Entry{target, ErrorCode::kCustomerNotFound, now + config_.lookup_cache_ttl(), now});
  return target;
}

Expected<BillingTarget> CustomerResolver::look_up_item(const std::string& customer_key,
                                                       const std::string& customer_id,
                                                       const std::string& price_id) {
  auto item = find_subscription_item(customer_id, price_id);
  if (!item) {
    if (item.error().code == ErrorCode::kSubscriptionItemNotFound) {
      remember(cache_key(customer_key, price_id),
               Entry{std::nullopt, ErrorCode::kSubscriptionItemNotFound,
                     clock_->now() + config_.lookup_miss_ttl(), clock_->now()});
    } else {
      ++failures_;
    }
    return std::move(item).error();
  }
  remember(cache_key(customer_key, price_id),
           Entry{*item, ErrorCode::kCustomerNotFound, clock_->now() + config_.lookup_cache_ttl(),
                 clock_->now()});
  return item;
}

Expected<std::string> CustomerResolver::search_customer(const std::string& customer_key) {
  ++requests_;
  auto response =
      client_.get("/v1/customers/search",
                  {{"query", customer_search_query(config_.customer_metadata_key(), customer_key)},
                   {"limit", "2"}});
  if (!response) return std::move(response).error();
  const nlohmann::json* data = member(response->body, "data");
  if (data == nullptr || !data->is_array())
    return wrong_shape("customer search without a data list");
  if (data->empty()) {
    return not_found(ErrorCode::kCustomerNotFound, "no Stripe customer has metadata " +
                                                       config_.customer_metadata_key() +
                                                       " equal to the customer key");
  }
  const nlohmann::json* id = member(data->front(), "id");
  if (id == nullptr || !id->is_string()) return wrong_shape("customer search result without an id");
  return id->get<std::string>();
}

Expected<BillingTarget> CustomerResolver::find_subscription_item(const std::string& customer_id,
                                                                 const std::string& price_id) {
  ++requests_;
  auto response = client_.get(
      "/v1/subscriptions",
      {{"customer", customer_id}, {"price", price_id}, {"status", "active"}, {"limit", "10"}});
  if (!response) return std::move(response).error();
  const nlohmann::json* subscriptions = member(response->body, "data");
  if (subscriptions == nullptr || !subscriptions->is_array()) {
    return wrong_shape("subscription list without a data list");
  }
  // An answer not shaped as Stripe's is an error to retry, never "no subscription": that would
  // park the customer's usage for nothing.
  for (const auto& subscription : *subscriptions) {
    const nlohmann::json* items = member(member(subscription, "items"), "data");
    if (items == nullptr || !items->is_array()) {
      return wrong_shape("subscription without an items list");
    }
    for (const auto& item : *items) {
      const nlohmann::json* id = member(item, "id");
      const nlohmann::json* price = member(item, "price");
      if (id == nullptr || !id->is_string() || price == nullptr) {
        return wrong_shape("subscription item without an id and a price");
      }
      const nlohmann::json* price_object_id = member(price, "id");
      const bool matches = (price_object_id != nullptr && *price_object_id == price_id) ||
                           (price->is_string() && *price == price_id);
      if (!matches) continue;
      // Before API 2025-03-31 the period lives on the subscription; later, on the item.
      auto period = [&](const char* name) -> std::int64_t {
        for (const nlohmann::json* holder : {&item, &subscription}) {
          const nlohmann::json* value = member(holder, name);
          if (value != nullptr && value->is_number_integer()) return value->get<std::int64_t>();
        }
        return 0;
      };
      return BillingTarget{customer_id, id->get<std::string>(), period("current_period_start"),
                           period("current_period_end")};
    }
  }
  return not_found(
      ErrorCode::kSubscriptionItemNotFound,
      "customer " + customer_id + " has no active subscription item on price " + price_id);
}

void CustomerResolver::remember(const std::string& key, Entry entry) {
  std::lock_guard lock(mutex_);
  if (cache_.size() >= kMaxCacheEntries) {
    const TimePoint now = clock_->now();
    for (auto it = cache_.begin(); it != cache_.end();) {
      it = it->second.expires <= now ? cache_.erase(it) : std::next(it);
    }
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  }
  cache_[key] = std::move(entry);
}

}  // namespace stripe_billing
