// The admission engine behind StripeLogger::admit() (docs/admission.md).
//
// admit() decides from memory, under one mutex: the customer's account holds this process's
// grant of the period's budget (taken from the AdmissionStore), its open holds and its settled
// usage. A call is allowed while its reservation fits what is left of the grant; the owner of
// the budget's last piece may let one call cross it. So with C concurrent admissions, in one
// process or a fleet, what is held and used never exceeds the budget by more than one capped
// reservation. Everything that needs the store or Stripe runs on the "sb-admission" thread: the
// first grant (admit() may wait STRIPE_ADMISSION_WAIT_MS for it), refills when the grant runs
// low, the credit balance, reports of usage, give-backs, hold expiry and overage.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "admission_store.h"
#include "billing_tables.h"
#include "stripe_billing/admission.h"
#include "stripe_billing/config.h"
#include "stripe_billing/stripe_client.h"
#include "stripe_billing/stripe_logger.h"

namespace spdlog {
class logger;
}

namespace stripe_billing {

class CustomerResolver;

// Counters for stats() (StripeLoggerStats' admission fields).
struct AdmissionCounters {
  std::uint64_t allowed = 0;                    // within the budget
  std::uint64_t fail_open = 0;                  // allowed because the balance was unknown
  std::map<std::string, std::uint64_t> denied;  // by reason
  std::uint64_t holds_open = 0;
  std::uint64_t holds_settled = 0;
  std::uint64_t holds_released = 0;
  std::uint64_t holds_expired = 0;
  std::uint64_t settled_without_hold = 0;
  std::uint64_t overage_units = 0;  // used beyond the budget (billed, never forgiven)
  std::uint64_t store_errors = 0;
  std::uint64_t balance_fetches = 0;
  std::uint64_t balance_failures = 0;
};

// The calendar period a time falls in (UTC): its name ("2026-12", "2026-12-02") and its end.
struct BudgetPeriodSpan {
  std::string name;
  std::int64_t end_s = 0;
};
BudgetPeriodSpan budget_period_of(TimePoint at, BudgetPeriod period);

class Admission {
 public:
  Admission(const FinalizedConfig& config, std::shared_ptr<BillingTables> tables,
            const StripeClient& client, CustomerResolver& resolver,
            std::shared_ptr<AdmissionStore> store, std::shared_ptr<spdlog::logger> log,
            std::shared_ptr<Clock> clock);
  ~Admission();
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

  AdmissionDecision admit(const AdmissionRequest& request) noexcept;
  void settle(const UsageEvent& event) noexcept;   // log_success_event
  void release(const UsageEvent& event) noexcept;  // log_failure_event
  // A Stripe customer's credit balance changed (a webhook): fetched again in the background.
  void balance_changed(const std::string& customer_id);
  // Waits until every balance_changed() so far has been fetched and is in force.
  bool wait_for_balances(std::chrono::steady_clock::time_point deadline);
  // Reports what is used, gives back what is not needed and stops the thread. Open holds stay
  // counted in the store (as this owner's grant) until STRIPE_HOLD_TTL_S after the last report.
  void stop();
  AdmissionCounters counters() const;

 private:
  enum class State { kUnknown, kReady, kUnavailable, kNoBudget };
  struct Account {
    std::string key;
    std::string plan;
    std::string period;
    std::int64_t period_end_s = 0;
    State state = State::kUnknown;
    std::int64_t budget = 0;  // internal units
    std::int64_t grant = 0;
    std::int64_t held = 0;
    std::int64_t used = 0;
    std::int64_t others_used = 0;    // what the other owners had used at the last take
    std::int64_t reported_used = 0;  // this owner's use as the store last heard it
    std::int64_t largest = 0;        // the largest reservation seen: sizes the next grant
    bool exhausted = false;
    bool crossing = false;
    bool wanted = false;      // queued for the background thread
    bool dirty = false;       // used or grant changed since the last report
    std::string customer_id;  // credits: the Stripe customer
    std::chrono::steady_clock::time_point balance_at{};
    std::chrono::steady_clock::time_point active{};
  };
  struct Hold {
    Account* account = nullptr;
    std::int64_t amount = 0;
    std::chrono::steady_clock::time_point expires{};
  };
  struct Estimate {
    bool estimable = false;
    std::int64_t amount = 0;
  };

  Estimate estimate(const AdmissionRequest& request) const;
  std::optional<std::int64_t> actual(const UsageEvent& event) const;
  Account& account_locked(const std::string& key, std::string_view plan);
  void roll_period_locked(Account& account);
  void want_locked(Account& account);
  AdmissionDecision decide_locked(Account& account, std::string call, std::int64_t amount,
                                  std::unique_lock<std::mutex>& lock);
  AdmissionDecision deny(std::string_view reason, std::chrono::seconds retry_after);
  AdmissionDecision unavailable();
  void run();
  void serve(const std::string& key);
  std::optional<std::int64_t> budget_for(const std::string& key, Account& snapshot);
  std::optional<std::int64_t> fetch_balance(const std::string& key, std::string& customer_id);
  void sweep();
  void expire_locked(std::chrono::steady_clock::time_point now);
  void report(bool give_back_idle, bool give_back_all);
  std::int64_t now_ms() const;

  const FinalizedConfig& config_;
  const AdmissionSettings& settings_;
  std::shared_ptr<BillingTables> tables_;
  const StripeClient& client_;
  CustomerResolver& resolver_;
  std::shared_ptr<AdmissionStore> store_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<Clock> clock_;
  const std::int64_t scale_;  // internal units per billed unit: 1 (tokens) or 1e6 (money)
  const bool shared_;         // a fleet's store: grants in chunks, idle grants given back

  mutable std::mutex mutex_;
  std::condition_variable changed_;  // an account's state or grant moved
  std::condition_variable work_;     // the background thread has something to do
  std::unordered_map<std::string, std::unique_ptr<Account>> accounts_;
  std::unordered_map<std::string, Hold> holds_;
  std::unordered_set<std::uint64_t> recent_;  // hashes of the call ids settled lately
  std::vector<std::uint64_t> recent_ring_;    // the same, oldest overwritten first
  std::size_t recent_next_ = 0;
  std::chrono::steady_clock::time_point earliest_expiry_ =
      std::chrono::steady_clock::time_point::max();
  std::deque<std::string> queue_;  // account keys for the background thread
  std::vector<std::string> balance_changes_;
  AdmissionCounters counters_;
  std::uint64_t anonymous_holds_ = 0;
  std::uint64_t balance_requested_ = 0;
  std::uint64_t balance_served_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace stripe_billing
