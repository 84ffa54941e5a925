#include "endpoints.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "form_values.h"
#include "pagination.h"
#include "resources.h"
#include "search_query.h"

namespace stripe_emulator {
namespace {

using nlohmann::json;

// Metadata arrives as a hash of strings, or as "" to mean none.
Metadata metadata(const json& params) { return string_hash(params, "metadata"); }

Answer search_customers(const Store& store, const ApiCall& call) {
  const auto query = CustomerQuery::parse(text(call.params, "query"));
  if (const auto* error = std::get_if<ApiError>(&query)) return to_answer(*error);
  std::vector<json> found;
  for (const auto& customer : store.customers()) {
    if (std::get<CustomerQuery>(query).matches(customer)) found.emplace_back(customer);
  }
  // Page tokens are opaque to clients; here they are the offset of the page's first result.
  const auto page_token = text(call.params, "page");
  const std::size_t offset =
      page_token.rfind("page_", 0) == 0 ? std::strtoull(page_token.c_str() + 5, nullptr, 10) : 0;
  const auto first = std::min(offset, found.size());
  const auto last = std::min(first + limit(call.params), found.size());
  const bool has_more = last < found.size();
  std::vector<json> page_data(found.begin() + static_cast<std::ptrdiff_t>(first),
                              found.begin() + static_cast<std::ptrdiff_t>(last));
  return ok(search_result(std::move(page_data), has_more,
                          has_more ? "page_" + std::to_string(last) : "", "/v1/customers/search"));
}

Answer list_customers(const Store& store, const ApiCall& call) {
  std::vector<json> customers;
  for (const auto& customer : store.customers()) {
    if (!call.params.contains("email") || customer.email == call.params["email"]) {
      customers.emplace_back(customer);
    }
  }
  return ok(page(customers, call.params, "/v1/customers"));
}

Answer create_customer(Store& store, const ApiCall& call) {
  Customer customer;
  customer.email = text(call.params, "email");
  customer.name = text(call.params, "name");
  customer.phone = text(call.params, "phone");
  customer.metadata = metadata(call.params);
  return ok(store.add_customer(std::move(customer)));
}

Answer retrieve_customer(const Store& store, const ApiCall& call) {
  const auto& id = call.path_params.at("customer");
  const auto customer = store.customer(id);
  if (!customer) return to_answer(errors::resource_missing("customer", id, "id"));
  return ok(*customer);
}

Answer create_product(Store& store, const ApiCall& call) {
  Product product;
  product.id = text(call.params, "id");
  product.name = text(call.params, "name");
  product.active = boolean(call.params, "active", true);
  product.unit_label = text(call.params, "unit_label");
  product.metadata = metadata(call.params);
  return answer(store.add_product(std::move(product)));
}

Answer retrieve_product(const Store& store, const ApiCall& call) {
  const auto& id = call.path_params.at("id");
  const auto product = store.product(id);
  if (!product) return to_answer(errors::resource_missing("product", id, "id"));
  return ok(*product);
}

std::optional<std::int64_t> unit_amount(const json& params) {
  if (const auto amount = integer(params, "unit_amount")) return amount;
  const auto decimal = text(params, "unit_amount_decimal");
  if (decimal.empty() || decimal.find('.') != std::string::npos) return std::nullopt;
  return std::stoll(decimal);
}

Answer create_price(Store& store, const ApiCall& call) {
  Price price;
  price.currency = text(call.params, "currency");
  price.unit_amount = unit_amount(call.params);
  price.active = boolean(call.params, "active", true);
  price.nickname = text(call.params, "nickname");
  price.lookup_key = text(call.params, "lookup_key");
  price.metadata = metadata(call.params);
  if (call.params.contains("recurring")) {
    const auto& recurring = call.params["recurring"];
    const auto usage_type = text(recurring, "usage_type", "licensed");
    const auto meter = text(recurring, "meter");
    price.recurring = Recurring{
        text(recurring, "interval"), integer(recurring, "interval_count").value_or(1), usage_type,
        usage_type == "metered" && meter.empty() ? text(recurring, "aggregate_usage", "sum") : "",
        meter};
  }
  if (call.params.contains("product")) {
    price.product = text(call.params, "product");
  } else if (call.params.contains("product_data")) {
    const auto& data = call.params["product_data"];
    const auto product = store.add_product(Product{text(data, "id"), 0, text(data, "name"),
                                                   boolean(data, "active", true),
                                                   text(data, "unit_label"), metadata(data)});
    if (const auto* error = std::get_if<ApiError>(&product)) return to_answer(*error);
    price.product = std::get<Product>(product).id;
  } else {
    return to_answer(errors::invalid_request(
        "You must specify either `product` or `product_data` when creating a price.", "product"));
  }
  return answer(store.add_price(std::move(price)));
}

Answer retrieve_price(const Store& store, const ApiCall& call) {
  const auto& id = call.path_params.at("price");
  const auto price = store.price(id);
  if (!price) return to_answer(errors::resource_missing("price", id, "id"));
  return ok(*price);
}

bool is_listed(const Price& price, const json& params) {
  if (params.contains("active") && price.active != boolean(params, "active", true)) return false;
  if (params.contains("currency") && price.currency != text(params, "currency")) return false;
  if (params.contains("product") && price.product != text(params, "product")) return false;
  if (params.contains("type") &&
      (text(params, "type") == "recurring") != price.recurring.has_value()) {
    return false;
  }
  if (!params.contains("lookup_keys")) return true;
  const auto keys = array(params, "lookup_keys");
  return std::any_of(keys.begin(), keys.end(),
                     [&](const json& key) { return key.is_string() && key == price.lookup_key; });
}

Answer list_prices(const Store& store, const ApiCall& call) {
  std::vector<json> prices;
  for (const auto& price : store.prices()) {
    if (is_listed(price, call.params)) prices.emplace_back(price);
  }
  return ok(page(prices, call.params, "/v1/prices"));
}

Answer create_subscription(Store& store, const ApiCall& call) {
  std::vector<NewItem> items;
  for (const auto& item : array(call.params, "items")) {
    const auto index = std::to_string(items.size());
    if (!item.contains("price")) {
      return to_answer(errors::invalid_request(
          "The emulator creates subscription items from an existing price only: pass items[" +
              index + "][price].",
          "items[" + index + "][price]"));
    }
    items.push_back(NewItem{text(item, "price"), integer(item, "quantity")});
  }
  return answer(
      store.add_subscription(text(call.params, "customer"), items, metadata(call.params)));
}

bool has_status(const Subscription& subscription, const std::string& wanted) {
  if (wanted == "all") return true;
  if (wanted.empty()) {
    return subscription.status != "canceled" && subscription.status != "incomplete_expired";
  }
  if (wanted == "ended") return subscription.status == "canceled";
  return subscription.status == wanted;
}

bool has_price(const Subscription& subscription, const std::string& price_id) {
  return std::any_of(subscription.items.begin(), subscription.items.end(),
                     [&](const SubscriptionItem& item) { return item.price.id == price_id; });
}

Answer list_subscriptions(const Store& store, const ApiCall& call) {
  const auto customer = text(call.params, "customer");
  const auto price = text(call.params, "price");
  std::vector<json> subscriptions;
  for (const auto& subscription : store.subscriptions()) {
    if ((customer.empty() || subscription.customer == customer) &&
        (price.empty() || has_price(subscription, price)) &&
        has_status(subscription, text(call.params, "status"))) {
      subscriptions.emplace_back(subscription);
    }
  }
  return ok(page(subscriptions, call.params, "/v1/subscriptions"));
}

Answer list_subscription_items(const Store& store, const ApiCall& call) {
  const auto id = text(call.params, "subscription");
  const auto subscription = store.subscription(id);
  if (!subscription) return to_answer(errors::resource_missing("subscription", id, "subscription"));
  std::vector<json> items(subscription->items.rbegin(), subscription->items.rend());
  return ok(page(items, call.params, "/v1/subscription_items"));
}

Answer record_usage(Store& store, const ApiCall& call) {
  const auto timestamp = text(call.params, "timestamp", "now");
  return answer(store.record_usage(
      call.path_params.at("subscription_item"), *integer(call.params, "quantity"),
      timestamp == "now" ? std::nullopt : std::optional<std::int64_t>(std::stoll(timestamp)),
      text(call.params, "action", "increment")));
}

Answer usage_record_summaries(const Store& store, const ApiCall& call) {
  const auto& id = call.path_params.at("subscription_item");
  const auto item = store.item(id);
  const auto period = store.item_period(id);
  if (!item || !period) {
    return to_answer(errors::resource_missing("subscription_item", id, "subscription_item"));
  }
  const auto summary = usage_record_summary(*item, *period, store.total_usage(id));
  return ok(list_object(json::array({summary}), false,
                        "/v1/subscription_items/" + id + "/usage_record_summaries"));
}

}  // namespace

std::map<std::string, Endpoint> make_endpoints(Store& store) {
  return {
      {"GetCustomers", bound(store, list_customers)},
      {"GetCustomersCustomer", bound(store, retrieve_customer)},
      {"GetCustomersSearch", bound(store, search_customers)},
      {"GetPrices", bound(store, list_prices)},
      {"GetPricesPrice", bound(store, retrieve_price)},
      {"GetProductsId", bound(store, retrieve_product)},
      {"GetSubscriptionItems", bound(store, list_subscription_items)},
      {"GetSubscriptionItemsSubscriptionItemUsageRecordSummaries",
       bound(store, usage_record_summaries)},
      {"GetSubscriptions", bound(store, list_subscriptions)},
      {"PostCustomers", bound(store, create_customer)},
      {"PostPrices", bound(store, create_price)},
      {"PostProducts", bound(store, create_product)},
      {"PostSubscriptionItemsSubscriptionItemUsageRecords", bound(store, record_usage)},
      {"PostSubscriptions", bound(store, create_subscription)},
  };
}

}  // namespace stripe_emulator
