#include "customer_resolver.h"

#include "usage_record.h"

namespace stripe_billing {
namespace {

constexpr std::size_t kMaxMetadataValue = 500;  // Stripe's limit for a metadata value
constexpr std::size_t kMaxCacheEntries = 100'000;

Error not_found(ErrorCode code, const std::string& what) {
  return Error{code, what, std::nullopt};
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
  if (auto cached = cached_entry(cache_key(customer_key, price_id))) return std::move(*cached);
  ++misses_;
  auto customer = price_id.empty() ? look_up_customer(customer_key) : resolve(customer_key, "");
  if (!customer || price_id.empty()) return customer;
  return look_up_item(customer_key, customer->customer_id, price_id);
}

void CustomerResolver::invalidate(const std::string& customer_key, const std::string& price_id) {
  std::lock_guard lock(mutex_);
  cache_.erase(cache_key(customer_key, price_id));
}

std::string CustomerResolver::cache_key(const std::string& customer_key,
                                        const std::string& price_id) {
  return price_id + '\n' + customer_key;
}

std::optional<Expected<BillingTarget>> CustomerResolver::cached_entry(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto it = cache_.find(key);
  if (it == cache_.end() || it->second.expires <= clock_->now()) return std::nullopt;
  ++hits_;
  if (it->second.target) return Expected<BillingTarget>(*it->second.target);
  return Expected<BillingTarget>(
      not_found(it->second.not_found_code, "no Stripe customer or item (cached)"));
}

Expected<BillingTarget> CustomerResolver::look_up_customer(const std::string& customer_key) {
  std::string customer_id;
  if (auto it = config_.customer_map().find(customer_key); it != config_.customer_map().end()) {
    customer_id = it->second.customer_id;
  } else if (is_customer_id(customer_key)) {
    customer_id = customer_key;
  } else {
    if (customer_key.size() > kMaxMetadataValue || !is_valid_utf8(customer_key)) {
      return not_found(ErrorCode::kMissingCustomer,
                       "customer key is not a possible Stripe metadata value (over 500 bytes or "
                       "not UTF-8)");
    }
    auto found = search_customer(customer_key);
    if (!found) {
      if (found.error().code == ErrorCode::kCustomerNotFound) {
        remember(cache_key(customer_key, ""),
                 Entry{std::nullopt, ErrorCode::kCustomerNotFound,
                       clock_->now() + config_.lookup_miss_ttl()});
      } else {
        ++failures_;
      }
      return std::move(found).error();
    }
    customer_id = std::move(found.value());
  }
  BillingTarget target{customer_id, "", 0, 0};
  remember(cache_key(customer_key, ""),
           Entry{target, ErrorCode::kCustomerNotFound, clock_->now() + config_.lookup_cache_ttl()});
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
                     clock_->now() + config_.lookup_miss_ttl()});
    } else {
      ++failures_;
    }
    return std::move(item).error();
  }
  remember(cache_key(customer_key, price_id),
           Entry{*item, ErrorCode::kCustomerNotFound, clock_->now() + config_.lookup_cache_ttl()});
  return item;
}

Expected<std::string> CustomerResolver::search_customer(const std::string& customer_key) {
  ++requests_;
  auto response = client_.get(
      "/v1/customers/search",
      {{"query", customer_search_query(config_.customer_metadata_key(), customer_key)},
       {"limit", "2"}});
  if (!response) return std::move(response).error();
  const auto& data = response->body.value("data", nlohmann::json::array());
  if (!data.is_array() || data.empty()) {
    return not_found(ErrorCode::kCustomerNotFound,
                     "no Stripe customer has metadata " + config_.customer_metadata_key() +
                         " equal to the customer key");
  }
  const auto& first = data.front();
  if (!first.is_object() || !first.contains("id") || !first["id"].is_string()) {
    return Error{ErrorCode::kInvalidResponse, "customer search result without an id",
                 std::nullopt};
  }
  return first["id"].get<std::string>();
}

Expected<BillingTarget> CustomerResolver::find_subscription_item(const std::string& customer_id,
                                                                 const std::string& price_id) {
  ++requests_;
  auto response = client_.get("/v1/subscriptions", {{"customer", customer_id},
                                                    {"price", price_id},
                                                    {"status", "active"},
                                                    {"limit", "10"}});
  if (!response) return std::move(response).error();
  const auto& subscriptions = response->body.value("data", nlohmann::json::array());
  for (const auto& subscription : subscriptions) {
    if (!subscription.is_object() || !subscription.contains("items")) continue;
    const auto& items = subscription["items"].value("data", nlohmann::json::array());
    for (const auto& item : items) {
      if (!item.is_object() || !item.contains("price") || !item.contains("id")) continue;
      const auto& price = item["price"];
      const bool matches = (price.is_object() && price.value("id", "") == price_id) ||
                           (price.is_string() && price.get<std::string>() == price_id);
      if (!matches || !item["id"].is_string()) continue;
      // Before API 2025-03-31 the period lives on the subscription; later, on the item.
      auto period = [&](const char* name) -> std::int64_t {
        for (const auto* holder : {&item, &subscription}) {
          auto it = holder->find(name);
          if (it != holder->end() && it->is_number_integer()) return it->get<std::int64_t>();
        }
        return 0;
      };
      return BillingTarget{customer_id, item["id"].get<std::string>(),
                           period("current_period_start"), period("current_period_end")};
    }
  }
  return not_found(ErrorCode::kSubscriptionItemNotFound,
                   "customer " + customer_id + " has no active subscription item on price " +
                       price_id);
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
