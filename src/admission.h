// The admission engine behind StripeLogger::admit() (docs/admission.md).
//
// admit() decides from memory: the customer's account holds this process's grant of the
// period's budget (taken from the AdmissionStore), its open holds and its settled usage; with
// STRIPE_TOKEN_BUDGETS, one such account more per token type that has a budget, and a call must
// fit them all. A call is allowed while its reservation fits what is left of the grant; the
// owner of the budget's last piece may let one call cross it. So with C concurrent admissions, in
// one process or a fleet, what is held and used never exceeds the budget by more than one capped
// reservation. The accounts, holds and recently settled call ids live in 16 shards by customer
// key, each with its own mutex: calls for different customers do not wait for each other.
// Everything that needs the store or Stripe runs on the "sb-admission" thread: the first grant
// (admit() may wait STRIPE_ADMISSION_WAIT_MS for it), refills when the grant runs low, the
// credit balance, reports of usage, give-backs, hold expiry and overage.
#pragma once

#include <array>
#include <atomic>
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
#include "token_types.h"

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

  static constexpr std::size_t kShards = 16;

 private:
  enum class State { kUnknown, kReady, kUnavailable, kNoBudget };
  struct Shard;
  struct Account {
    std::string id;   // the shard's key: the customer key, or key + '\0' + a token type
    std::string key;  // the customer key (the store's customer)
    int type = -1;    // -1: the budget of all billed units; else a TokenType's index
    Shard* shard = nullptr;
    std::string plan;
    std::string period;  // the store's period: "2026-12", or "2026-12:output" for a type
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
    // The total's accounts per token type (STRIPE_TOKEN_BUDGETS), nullptr where none applies.
    std::array<Account*, kTokenTypeCount> typed{};
  };
  // One account's share of a call: what it reserves (admit) or used (settle).
  struct Part {
    Account* account = nullptr;
    std::int64_t amount = 0;
  };
  static constexpr std::size_t kMaxParts = 1 + kTokenTypeCount;
  struct Hold {
    Account* owner = nullptr;  // the customer's total account (settlement starts there)
    std::array<Part, kMaxParts> parts{};
    std::size_t count = 0;
    std::chrono::steady_clock::time_point expires{};
  };
  struct Estimate {
    bool estimable = false;
    std::int64_t amount = 0;
    std::array<std::int64_t, kTokenTypeCount> typed{};  // STRIPE_TOKEN_BUDGETS
  };
  struct Actual {
    std::int64_t amount = 0;
    std::array<std::int64_t, kTokenTypeCount> typed{};
  };
  struct ShardCounters {
    std::uint64_t allowed = 0;
    std::uint64_t fail_open = 0;
    std::map<std::string, std::uint64_t> denied;
    std::uint64_t holds_settled = 0;
    std::uint64_t holds_released = 0;
    std::uint64_t holds_expired = 0;
    std::uint64_t settled_without_hold = 0;
  };
  struct alignas(64) Shard {
    mutable std::mutex mutex;
    std::condition_variable changed;  // an account's state or grant moved
    std::unordered_map<std::string, std::unique_ptr<Account>> accounts;
    std::unordered_map<std::string, Hold> holds;
    std::unordered_set<std::uint64_t> recent;  // hashes of the call ids settled lately
    std::vector<std::uint64_t> recent_ring;    // the same, oldest overwritten first
    std::size_t recent_next = 0;
    std::chrono::steady_clock::time_point earliest_expiry =
        std::chrono::steady_clock::time_point::max();
    std::uint64_t anonymous_holds = 0;
    ShardCounters counters;
  };

  Shard& shard_of(std::string_view key);
  Estimate estimate(const AdmissionRequest& request) const;
  std::optional<Actual> actual(const UsageEvent& event) const;
  Account& account_locked(Shard& shard, std::string_view key, std::string_view plan);
  void link_typed_locked(Shard& shard, Account& total);
  void roll_period_locked(Account& account);
  void want_locked(Account& account);
  void add_used_locked(Account& account, std::int64_t amount);
  AdmissionDecision decide_locked(Shard& shard, Account& owner, const Estimate& estimated,
                                  std::array<Part, kMaxParts>& parts, std::size_t count,
                                  std::string call, std::unique_lock<std::mutex>& lock);
  AdmissionDecision deny(Shard& shard, std::string_view reason, std::chrono::seconds retry_after,
                         const Account* account = nullptr);
  AdmissionDecision unavailable(Shard& shard);
  void run();
  void serve(Account& account);
  std::optional<std::int64_t> budget_for(Account& snapshot);
  std::optional<std::int64_t> fetch_balance(const std::string& key, std::string& customer_id);
  void sweep();
  void expire_locked(Shard& shard, std::chrono::steady_clock::time_point now);
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
  const bool typed_;          // STRIPE_TOKEN_BUDGETS names at least one budget

  std::array<Shard, kShards> shards_;
  std::atomic<bool> stopping_{false};

  // The background thread's work, under work_mutex_ (taken after a shard's, never before).
  mutable std::mutex work_mutex_;
  std::condition_variable work_;      // the background thread has something to do
  std::condition_variable balances_;  // balance_served_ moved
  std::deque<Account*> queue_;        // accounts to serve (never erased: the pointers stay)
  std::vector<std::string> balance_changes_;
  std::uint64_t balance_requested_ = 0;
  std::uint64_t balance_served_ = 0;
  AdmissionCounters background_counters_;  // store_errors, balance_*, overage_units
  std::thread thread_;
};

}  // namespace stripe_billing
