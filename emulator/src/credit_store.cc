#include "credit_store.h"

#include <algorithm>

#include "ids.h"

namespace stripe_emulator {

CreditStore::CreditStore(const Store& store) : store_(store) {}

std::optional<ApiError> CreditStore::unknown_customer(const std::string& customer_id) const {
  if (store_.customer(customer_id)) return std::nullopt;
  return errors::resource_missing("customer", customer_id, "customer");
}

Expected<CreditGrant> CreditStore::add_grant(const std::string& customer_id, std::int64_t amount,
                                             const std::string& currency) {
  if (auto error = unknown_customer(customer_id)) return *error;
  if (amount <= 0)
    return errors::invalid_request("A credit grant's amount must be positive.", "amount");
  CreditGrant grant{
      new_id("credgr_test_", 24), customer_id, currency, amount, amount, store_.now()};
  std::lock_guard lock(mutex_);
  for (const auto& id : grant_order_) {
    const auto& earlier = grants_.at(id);
    if (earlier.customer == customer_id && earlier.currency != currency) {
      return errors::invalid_request("The customer's credit grants are in " + earlier.currency +
                                         "; a grant in " + currency + " cannot be added.",
                                     "currency");
    }
  }
  grant_order_.push_back(grant.id);
  return grants_[grant.id] = std::move(grant);
}

Expected<std::vector<CreditBalanceTransaction>> CreditStore::apply(const std::string& customer_id,
                                                                   std::int64_t amount) {
  if (auto error = unknown_customer(customer_id)) return *error;
  if (amount <= 0)
    return errors::invalid_request("The amount to apply must be positive.", "amount");
  const auto now = store_.now();
  const auto invoice = new_id("in_test_", 24);
  const auto line_item = new_id("il_test_", 24);
  std::vector<CreditBalanceTransaction> transactions;
  std::lock_guard lock(mutex_);
  for (auto id = grant_order_.begin(); id != grant_order_.end() && amount > 0; ++id) {
    auto& grant = grants_.at(*id);
    if (grant.customer != customer_id || grant.remaining == 0) continue;
    const auto applied = std::min(amount, grant.remaining);
    grant.remaining -= applied;
    amount -= applied;
    transactions.push_back(CreditBalanceTransaction{
        new_id("cbtxn_test_", 24), grant.id, grant.currency, applied, invoice, line_item, now});
  }
  return transactions;
}

std::optional<CreditGrant> CreditStore::grant(const std::string& id) const {
  std::lock_guard lock(mutex_);
  const auto found = grants_.find(id);
  if (found == grants_.end()) return std::nullopt;
  return found->second;
}

std::vector<CreditGrant> CreditStore::grants_of(const std::string& customer_id) const {
  std::lock_guard lock(mutex_);
  std::vector<CreditGrant> grants;
  for (const auto& id : grant_order_) {
    if (grants_.at(id).customer == customer_id) grants.push_back(grants_.at(id));
  }
  return grants;
}

std::int64_t CreditStore::balance(const std::string& customer_id) const {
  std::int64_t balance = 0;
  for (const auto& grant : grants_of(customer_id)) balance += grant.remaining;
  return balance;
}

}  // namespace stripe_emulator
