// Stripe's billing credits for the emulator's customers: credit grants (credgr_test_…, paid, for
// metered prices) and the credit balance transactions (cbtxn_test_…) of invoices that applied
// them. A customer's balance is what its grants have left; an invoice draws on the oldest grants
// first and never below 0. A customer's grants share one currency, as Stripe bills a customer in
// one currency. Customers are looked up in the Store, which also gives the clock.
// Thread-safe: one mutex, every method is atomic; answers are copies.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "api_error.h"
#include "store.h"

namespace stripe_emulator {

struct CreditGrant {
  std::string id;
  std::string customer;
  std::string currency;
  std::int64_t amount = 0;     // granted, in the smallest currency unit
  std::int64_t remaining = 0;  // not yet applied to invoices
  std::int64_t created = 0;
};

// A debit of type credits_applied: `amount` of `credit_grant` applied to an invoice line.
struct CreditBalanceTransaction {
  std::string id;
  std::string credit_grant;
  std::string currency;
  std::int64_t amount = 0;
  std::string invoice;
  std::string invoice_line_item;
  std::int64_t created = 0;
};

class CreditStore {
 public:
  explicit CreditStore(const Store& store);

  // Errors: resource_missing (customer), a non-positive amount, another currency (amount,
  // currency).
  Expected<CreditGrant> add_grant(const std::string& customer_id, std::int64_t amount,
                                  const std::string& currency);
  // One invoice applying up to `amount`: a transaction per grant drawn on, oldest grant first
  // (none when the balance is 0). Errors: resource_missing (customer), a non-positive amount.
  Expected<std::vector<CreditBalanceTransaction>> apply(const std::string& customer_id,
                                                        std::int64_t amount);
  std::optional<CreditGrant> grant(const std::string& id) const;
  std::vector<CreditGrant> grants_of(const std::string& customer_id) const;  // oldest first
  std::int64_t balance(const std::string& customer_id) const;

 private:
  std::optional<ApiError> unknown_customer(const std::string& customer_id) const;

  const Store& store_;
  mutable std::mutex mutex_;
  std::map<std::string, CreditGrant> grants_;
  std::vector<std::string> grant_order_;  // oldest first
};

}  // namespace stripe_emulator
