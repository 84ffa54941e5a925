#include "admission.h"

#include <pthread.h>
#include <spdlog/logger.h>

#include <algorithm>
#include <ctime>
#include <limits>

#include "charge_by.h"
#include "customer_resolver.h"
#include "price_table.h"
#include "token_types.h"
#include "usage_record.h"

namespace stripe_billing {
namespace {

using Steady = std::chrono::steady_clock;

constexpr std::int64_t kMaxInternal = std::numeric_limits<std::int64_t>::max() / 4;
constexpr std::size_t kRecentCallIds = 65'536;
constexpr auto kIdleGiveBack = std::chrono::seconds(5);
constexpr auto kReportEvery = std::chrono::milliseconds(200);
constexpr auto kSweepEvery = std::chrono::seconds(1);
constexpr auto kRetryUnavailable = std::chrono::seconds(1);

std::int64_t scaled(std::int64_t units, std::int64_t scale) {
  if (units <= 0) return 0;
  return units > kMaxInternal / scale ? kMaxInternal : units * scale;
}

std::int64_t unscaled_up(std::int64_t internal, std::int64_t scale) {
  if (internal <= 0) return 0;
  return internal / scale + (internal % scale != 0 ? 1 : 0);
}

// What a hold is keyed by: the call id as it is, or a hash of one that is long or not text (a
// hostile id costs one hash, never a copy of megabytes kept for the hold's life).
std::string hold_key(std::string_view call_id) {
  if (call_id.size() <= 200 && is_storable_text(call_id)) return std::string(call_id);
  return "hash:" + hashed_id(call_id);
}

bool money(QuantitySource source) {
  return source == QuantitySource::kCost || source == QuantitySource::kPriced;
}

const ModelPrices* prices_of(const BillingTables& tables, const PriceTable* prices,
                             std::string_view model, std::string_view provider) {
  if (prices == nullptr) return nullptr;
  const ModelPrices* found = prices->find(model);
  if (found == nullptr) {
    if (const auto slug = tables.slugs()->slug(std::string(model), std::string(provider))) {
      found = prices->find(*slug);
    }
  }
  return found;
}

}  // namespace

BudgetPeriodSpan budget_period_of(TimePoint at, BudgetPeriod period) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(at);
  std::tm day{};
  gmtime_r(&seconds, &day);
  char name[16];
  std::tm next{};
  if (period == BudgetPeriod::kDay) {
    std::strftime(name, sizeof name, "%Y-%m-%d", &day);
    next.tm_year = day.tm_year;
    next.tm_mon = day.tm_mon;
    next.tm_mday = day.tm_mday + 1;
  } else {
    std::strftime(name, sizeof name, "%Y-%m", &day);
    next.tm_year = day.tm_year + (day.tm_mon == 11 ? 1 : 0);
    next.tm_mon = (day.tm_mon + 1) % 12;
    next.tm_mday = 1;
  }
  return {name, static_cast<std::int64_t>(timegm(&next))};
}

Admission::Admission(const FinalizedConfig& config, std::shared_ptr<BillingTables> tables,
                     const StripeClient& client, CustomerResolver& resolver,
                     std::shared_ptr<AdmissionStore> store, std::shared_ptr<spdlog::logger> log,
                     std::shared_ptr<Clock> clock)
    : config_(config),
      settings_(config.admission()),
      tables_(std::move(tables)),
      client_(client),
      resolver_(resolver),
      store_(std::move(store)),
      log_(std::move(log)),
      clock_(std::move(clock)),
      scale_(money(config.quantity_source()) ? kMicrosPerUnit : 1),
      shared_(config.uses_postgres()) {
  recent_ring_.assign(kRecentCallIds, 0);
  recent_.reserve(kRecentCallIds * 2);
  thread_ = std::thread([this] { run(); });
}

Admission::~Admission() { stop(); }

std::int64_t Admission::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_->now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------------------------
// Estimates and actual amounts, in internal units

Admission::Estimate Admission::estimate(const AdmissionRequest& request) const {
  const std::int64_t cap = settings_.max_output;
  const std::int64_t output = request.max_tokens > 0 ? std::min(request.max_tokens, cap) : cap;
  const bool input_known = request.input_tokens >= 0 && request.input_tokens <= kMaxTokenCount;
  std::optional<std::int64_t> amount;
  switch (config_.quantity_source()) {
    case QuantitySource::kPromptTokens:
      if (input_known) amount = request.input_tokens;
      break;
    case QuantitySource::kCompletionTokens:
      amount = output;
      break;
    case QuantitySource::kTotalTokens:
    case QuantitySource::kSplit:
    case QuantitySource::kTokenTypes:
      if (input_known) amount = request.input_tokens + output;
      break;
    case QuantitySource::kPriced: {
      const auto prices = tables_->prices();
      const ModelPrices* found =
          input_known ? prices_of(*tables_, prices.get(), request.model, "") : nullptr;
      if (found != nullptr) {
        BillableTokens tokens;
        tokens.count[static_cast<std::size_t>(TokenType::kInput)] = request.input_tokens;
        tokens.count[static_cast<std::size_t>(TokenType::kOutput)] = output;
        amount = priced_amount_micros(tokens, *found, tables_->markup(), tables_->units_per_usd());
      }
      break;
    }
    case QuantitySource::kCost:
      break;  // response_cost is known only afterwards
  }
  if (amount) return {true, *amount};
  switch (settings_.unestimable) {
    case UnestimablePolicy::kReject:
      return {false, 0};
    case UnestimablePolicy::kAllow:
      return {true, 0};
    case UnestimablePolicy::kReserve:
      return {true, scaled(settings_.fixed_reserve, scale_)};
  }
  return {false, 0};
}

std::optional<std::int64_t> Admission::actual(const UsageEvent& event) const {
  if (event.cache_hit && config_.cache_hit() == CacheHitPolicy::kSkip) return 0;
  const auto& skipped = config_.skip_call_types();
  if (std::find(skipped.begin(), skipped.end(), event.call_type) != skipped.end()) return 0;
  const std::int64_t max = config_.max_quantity();
  const auto checked = [](const QuantityCheck& check) -> std::optional<std::int64_t> {
    if (check.verdict == QuantityCheck::Verdict::kBill) return check.value;
    if (check.verdict == QuantityCheck::Verdict::kZero) return 0;
    return std::nullopt;
  };
  switch (config_.quantity_source()) {
    case QuantitySource::kCost:
      return checked(cost_amount(event.response_cost, config_.cost_multiplier(), max));
    case QuantitySource::kTokenTypes:
    case QuantitySource::kPriced: {
      const BillableTokens tokens = billable_tokens(
          token_details(event), provider_family(event.provider, event.model).family);
      if (tokens.verdict != BillableTokens::Verdict::kOk &&
          tokens.verdict != BillableTokens::Verdict::kInconsistent) {
        return std::nullopt;
      }
      if (config_.quantity_source() == QuantitySource::kTokenTypes) return tokens.sum();
      const auto prices = tables_->prices();
      const ModelPrices* found = prices_of(*tables_, prices.get(), event.model, event.provider);
      if (found == nullptr) return std::nullopt;
      return priced_amount_micros(tokens, *found, tables_->markup(), tables_->units_per_usd());
    }
    case QuantitySource::kSplit:
      return checked(billable_quantity(event, QuantitySource::kTotalTokens, 2 * max));
    default:
      return checked(billable_quantity(event, config_.quantity_source(), max));
  }
}

// ---------------------------------------------------------------------------------------------
// The host's calls

Admission::Account& Admission::account_locked(const std::string& key, std::string_view plan) {
  auto found = accounts_.find(key);
  if (found == accounts_.end()) {
    auto account = std::make_unique<Account>();
    account->key = key;
    account->plan = std::string(plan);
    found = accounts_.emplace(key, std::move(account)).first;
    want_locked(*found->second);
  } else if (!plan.empty() && found->second->plan != plan) {
    found->second->plan = std::string(plan);  // the plan changed: its budget is read again
    want_locked(*found->second);
  }
  roll_period_locked(*found->second);
  return *found->second;
}

void Admission::roll_period_locked(Account& account) {
  const TimePoint now = clock_->now();
  const std::int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  if (!account.period.empty() && now_s < account.period_end_s) return;
  const BudgetPeriodSpan span = budget_period_of(now, settings_.period);
  if (!account.period.empty()) {
    // A new period: nothing granted or used yet; open holds move along with the calls.
    account.grant = 0;
    account.used = 0;
    account.others_used = 0;
    account.reported_used = 0;
    account.exhausted = false;
    account.crossing = false;
    if (account.state == State::kReady) account.state = State::kUnknown;
    want_locked(account);
  }
  account.period = span.name;
  account.period_end_s = span.end_s;
}

void Admission::want_locked(Account& account) {
  if (account.wanted) return;
  account.wanted = true;
  queue_.push_back(account.key);
  work_.notify_one();
}

AdmissionDecision Admission::deny(std::string_view reason, std::chrono::seconds retry_after) {
  ++counters_.denied[std::string(reason)];
  AdmissionDecision decision;
  decision.verdict = AdmissionVerdict::kDeny;
  decision.reason = reason;
  decision.retry_after = retry_after;
  return decision;
}

AdmissionDecision Admission::unavailable() {
  if (settings_.fail_open) {
    ++counters_.fail_open;
    AdmissionDecision decision;
    decision.verdict = AdmissionVerdict::kAllowUnavailable;
    decision.reason = "fail_open";
    return decision;
  }
  return deny("balance_unavailable", kRetryUnavailable);
}

AdmissionDecision Admission::admit(const AdmissionRequest& request) noexcept {
  try {
    if (settings_.mode == AdmissionMode::kOff) {
      AdmissionDecision decision;
      decision.verdict = AdmissionVerdict::kAllow;
      decision.reason = "admission_off";
      return decision;
    }
    const CustomerKey key = charge_by_value(
        KeyFields{request.end_user_id, request.user_id, request.team_id, request.request_user},
        config_.charge_by(), config_.trust_request_user());
    std::string call = request.call_id.empty() ? std::string() : hold_key(request.call_id);
    std::unique_lock lock(mutex_);
    if (key.value.empty() || !is_storable_text(key.value) || key.value.size() > 500) {
      return deny("missing_customer", std::chrono::seconds(0));
    }
    const Estimate estimated = estimate(request);
    if (!estimated.estimable) return deny("not_estimable", std::chrono::seconds(0));
    Account& account = account_locked(std::string(key.value), request.plan);
    account.active = clock_->steady_now();  // also while unavailable: it is tried again
    if (account.state == State::kUnknown && settings_.wait.count() > 0) {
      changed_.wait_for(lock, settings_.wait,
                        [&] { return stopping_ || account.state != State::kUnknown; });
    }
    switch (account.state) {
      case State::kUnknown:
      case State::kUnavailable:
        return unavailable();
      case State::kNoBudget:
        return deny("no_budget", std::chrono::seconds(0));
      case State::kReady:
        break;
    }
    return decide_locked(account, std::move(call), estimated.amount, lock);
  } catch (...) {
    return AdmissionDecision{
        settings_.fail_open ? AdmissionVerdict::kAllowUnavailable : AdmissionVerdict::kDeny,
        settings_.fail_open ? "fail_open" : "balance_unavailable", kRetryUnavailable, 0, 0};
  }
}

AdmissionDecision Admission::decide_locked(Account& account, std::string call, std::int64_t amount,
                                           std::unique_lock<std::mutex>& lock) {
  const auto now = clock_->steady_now();
  account.active = now;
  account.largest = std::max(account.largest, amount);
  const auto left = [&] { return account.grant - account.held - account.used; };
  const auto fits = [&] {
    return amount <= left() || settings_.overage_allowed || (account.crossing && left() > 0);
  };
  if (!fits()) expire_locked(now);  // what expired is free before anything is refused
  if (!fits() && !account.exhausted) {
    // This process's grant ran out before a refill came: wait for it, boundedly.
    want_locked(account);
    if (settings_.wait.count() > 0) {
      changed_.wait_for(lock, settings_.wait, [&] {
        return stopping_ || fits() || account.exhausted || account.state != State::kReady;
      });
    }
    if (account.state != State::kReady) return unavailable();
  }
  if (!fits()) {
    if (!account.exhausted) return deny("budget_refilling", std::chrono::seconds(1));
    if (account.others_used + account.used >= account.budget) {
      if (settings_.mode == AdmissionMode::kCredits) {
        return deny("credits_exhausted", std::chrono::seconds(0));
      }
      const std::int64_t now_s =
          std::chrono::duration_cast<std::chrono::seconds>(clock_->now().time_since_epoch())
              .count();
      return deny("budget_exhausted",
                  std::chrono::seconds(std::max<std::int64_t>(1, account.period_end_s - now_s)));
    }
    // What is left of the budget is held by calls still running (here or elsewhere in the
    // fleet): it comes back as they settle.
    return deny("held_by_open_calls", std::chrono::seconds(1));
  }
  account.held += amount;
  if (call.empty() && amount > 0) {
    // No call id: nothing can settle the hold, so it is held until it expires, and the call's
    // success counts its usage besides until then (the gate errs towards refusing).
    call = std::string("\0anonymous-", 11) + std::to_string(++anonymous_holds_);
  }
  if (amount > 0) {
    Hold hold{&account, amount, now + settings_.hold_ttl};
    earliest_expiry_ = std::min(earliest_expiry_, hold.expires);
    auto [at, inserted] = holds_.try_emplace(std::move(call), hold);
    if (!inserted) {  // admitted twice under one call id: the newer hold replaces the older
      at->second.account->held -= at->second.amount;
      at->second = hold;
    }
  }
  const std::int64_t low_water = std::max(account.largest * 4, account.grant / 4);
  if (!account.exhausted && left() < low_water) want_locked(account);
  ++counters_.allowed;
  AdmissionDecision decision;
  decision.verdict = AdmissionVerdict::kAllow;
  decision.reserved = unscaled_up(amount, scale_);
  decision.remaining = std::max<std::int64_t>(0, left()) / scale_;
  return decision;
}

void Admission::settle(const UsageEvent& event) noexcept {
  try {
    if (settings_.mode == AdmissionMode::kOff) return;
    const std::int64_t amount = actual(event).value_or(0);
    const CustomerKey key = charge_by_value(event, config_);
    const std::string call = hold_key(event.call_id);
    const std::uint64_t recent_id = std::hash<std::string>{}(call) | 1;  // never 0: a free slot
    std::lock_guard lock(mutex_);
    Account* account = nullptr;
    const auto hold = holds_.find(call);
    if (hold != holds_.end()) {
      account = hold->second.account;
      account->held -= hold->second.amount;
      holds_.erase(hold);
      ++counters_.holds_settled;
    } else {
      if (recent_.count(recent_id) != 0) return;  // settled already
      if (key.value.empty() || !is_storable_text(key.value) || key.value.size() > 500) return;
      account = &account_locked(std::string(key.value), "");
      ++counters_.settled_without_hold;
    }
    if (!event.call_id.empty() && recent_.insert(recent_id).second) {
      // A ring of the last kRecentCallIds ids (as 64-bit hashes: no string is copied).
      std::uint64_t& slot = recent_ring_[recent_next_++ % recent_ring_.size()];
      if (slot != 0) recent_.erase(slot);
      slot = recent_id;
    }
    roll_period_locked(*account);
    account->used = std::min(kMaxInternal, account->used + amount);
    account->dirty = true;
    if (account->used + account->held > account->grant) want_locked(*account);
    changed_.notify_all();
  } catch (...) {
  }
}

void Admission::release(const UsageEvent& event) noexcept {
  try {
    if (settings_.mode == AdmissionMode::kOff) return;
    const std::string call = hold_key(event.call_id);
    std::lock_guard lock(mutex_);
    const auto hold = holds_.find(call);
    if (hold == holds_.end()) return;
    hold->second.account->held -= hold->second.amount;
    holds_.erase(hold);
    ++counters_.holds_released;
    changed_.notify_all();
  } catch (...) {
  }
}

void Admission::balance_changed(const std::string& customer_id) {
  std::lock_guard lock(mutex_);
  balance_changes_.push_back(customer_id);
  ++balance_requested_;
  work_.notify_one();
}

bool Admission::wait_for_balances(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  const std::uint64_t wanted = balance_requested_;
  return changed_.wait_until(lock, deadline,
                             [&] { return stopping_ || balance_served_ >= wanted; });
}

AdmissionCounters Admission::counters() const {
  std::lock_guard lock(mutex_);
  AdmissionCounters out = counters_;
  out.holds_open = holds_.size();
  return out;
}

// ---------------------------------------------------------------------------------------------
// The background thread

void Admission::run() {
  pthread_setname_np(pthread_self(), "sb-admission");
  auto next_report = Steady::now();
  auto next_sweep = Steady::now();
  for (;;) {
    std::deque<std::string> keys;
    std::vector<std::string> changes;
    std::uint64_t served = 0;
    {
      std::unique_lock lock(mutex_);
      work_.wait_for(lock, std::chrono::milliseconds(50),
                     [&] { return stopping_ || !queue_.empty() || !balance_changes_.empty(); });
      if (stopping_) break;
      keys.swap(queue_);
      changes.swap(balance_changes_);
      served = balance_requested_;
      for (const std::string& customer : changes) {
        for (auto& [name, account] : accounts_) {
          if (account->customer_id != customer) continue;
          account->balance_at = {};
          if (!account->wanted) {
            account->wanted = true;
            keys.push_back(name);
          }
        }
      }
    }
    for (const std::string& key : keys) serve(key);
    if (!changes.empty()) {
      std::lock_guard lock(mutex_);
      balance_served_ = std::max(balance_served_, served);
      changed_.notify_all();
    }
    const auto now = Steady::now();
    if (now >= next_sweep) {
      sweep();
      next_sweep = now + kSweepEvery;
    }
    if (now >= next_report) {
      report(shared_, false);
      next_report = now + kReportEvery;
    }
  }
  // What is not held by a running call goes back: a restart (or the fleet) may use it at once.
  report(false, true);
}

std::optional<std::int64_t> Admission::fetch_balance(const std::string& key,
                                                     std::string& customer_id) {
  if (customer_id.empty()) {
    auto target = resolver_.resolve(key, "");
    if (!target || target->customer_id.empty()) {
      log_->warn("stripe_billing admission: no Stripe customer for {}: {}", log_safe(key),
                 target ? "the map names a subscription item" : target.error().message);
      return std::nullopt;
    }
    customer_id = target->customer_id;
  }
  auto summary = client_.get("/v1/billing/credit_balance_summary",
                             {{"customer", customer_id},
                              {"filter[type]", "applicability_scope"},
                              {"filter[applicability_scope][price_type]", "metered"}});
  if (!summary) {
    log_->warn("stripe_billing admission: cannot read the credit balance of {}: {}",
               log_safe(customer_id), summary.error().message);
    return std::nullopt;
  }
  std::int64_t cents = 0;
  const auto& balances = summary->body.find("balances");
  if (balances == summary->body.end() || !balances->is_array()) return std::nullopt;
  for (const auto& balance : *balances) {
    const auto value =
        balance.value("/available_balance/monetary/value"_json_pointer, nlohmann::json());
    if (value.is_number_integer()) cents += value.get<std::int64_t>();
  }
  return cents;
}

std::optional<std::int64_t> Admission::budget_for(const std::string& key, Account& snapshot) {
  if (settings_.mode == AdmissionMode::kStatic) {
    for (const std::string& name : {key, snapshot.plan, std::string("*")}) {
      if (name.empty()) continue;
      const auto found = settings_.budgets.find(name);
      if (found != settings_.budgets.end()) return scaled(found->second, scale_);
    }
    return std::nullopt;
  }
  const auto now = clock_->steady_now();
  if (snapshot.state == State::kReady && snapshot.balance_at != Steady::time_point{} &&
      now - snapshot.balance_at < settings_.credit_balance_ttl) {
    return snapshot.budget;
  }
  {
    std::lock_guard lock(mutex_);
    ++counters_.balance_fetches;
  }
  const auto cents = fetch_balance(key, snapshot.customer_id);
  if (!cents) {
    std::lock_guard lock(mutex_);
    ++counters_.balance_failures;
    return std::nullopt;
  }
  snapshot.balance_at = now;
  return scaled(std::max<std::int64_t>(0, *cents), scale_);
}

void Admission::serve(const std::string& key) {
  Account snapshot;
  {
    std::lock_guard lock(mutex_);
    const auto found = accounts_.find(key);
    if (found == accounts_.end()) return;
    roll_period_locked(*found->second);
    found->second->wanted = false;  // after the roll, which may want it again
    snapshot = *found->second;
  }
  const auto budget = budget_for(key, snapshot);
  if (!budget) {
    std::lock_guard lock(mutex_);
    Account& account = *accounts_.at(key);
    account.customer_id = snapshot.customer_id;
    if (settings_.mode == AdmissionMode::kStatic) {
      account.state = State::kNoBudget;
    } else if (account.state != State::kReady) {
      account.state = State::kUnavailable;  // a known balance stays in force while Stripe is down
    }
    changed_.notify_all();
    return;
  }
  const std::int64_t need = snapshot.used + snapshot.held - snapshot.grant;
  const std::int64_t chunk =
      shared_ ? std::max({*budget / 8, snapshot.largest * 8, need}) : std::max(*budget, need);
  const bool budget_moved = *budget != snapshot.budget;
  const bool low = snapshot.grant - snapshot.held - snapshot.used <
                   std::max(snapshot.largest * 4, snapshot.grant / 4);
  GrantTaken taken;
  std::int64_t forced = 0;
  bool got_fresh = false;  // taken is what the store says now
  if (snapshot.state != State::kReady || need > 0 || budget_moved || low) {
    auto got = store_->take(key, snapshot.period, chunk, *budget, false, now_ms());
    if (!got) {
      std::lock_guard lock(mutex_);
      ++counters_.store_errors;
      Account& account = *accounts_.at(key);
      if (account.state != State::kReady) account.state = State::kUnavailable;
      log_->warn("stripe_billing admission: {}", got.error().message);
      changed_.notify_all();
      return;
    }
    taken = *got;
    got_fresh = true;
    // Settled usage beyond everything the budget had left (estimates that were too low): taken
    // as this owner's grant all the same, so the fleet sees it, and counted. Never forgiven.
    const std::int64_t over = snapshot.used - (snapshot.grant + taken.granted);
    if (over > 0) {
      auto forced_take = store_->take(key, snapshot.period, over, *budget, true, now_ms());
      if (forced_take) {
        forced = forced_take->granted;
        taken.fleet_total = forced_take->fleet_total;
        taken.exhausted = true;
      }
    }
  } else {
    taken.exhausted = snapshot.exhausted;
    taken.crossing = snapshot.crossing;
  }
  std::lock_guard lock(mutex_);
  Account& account = *accounts_.at(key);
  account.customer_id = snapshot.customer_id;
  account.balance_at = snapshot.balance_at;
  if (account.period == snapshot.period) {
    account.grant += taken.granted + forced;
    // A budget that went down (credits spent elsewhere, an invoice applied): this owner's grant
    // shrinks to what is left beside the other owners' grants, never below what it holds and
    // used. The store hears of it at the next report.
    const std::int64_t others_granted =
        taken.fleet_total - (snapshot.grant + taken.granted + forced);
    const std::int64_t cap = *budget - std::max<std::int64_t>(0, others_granted);
    if (got_fresh && account.grant > cap) {
      account.grant = std::max(account.held + account.used, cap);
      account.exhausted = true;
      account.dirty = true;
    }
    account.exhausted = taken.exhausted;
    account.crossing = taken.crossing;
    // What the other owners had used at the take (the store holds this owner's last report).
    if (got_fresh) {
      account.others_used = std::max<std::int64_t>(0, taken.fleet_used - snapshot.reported_used);
    }
    account.budget = *budget;
    account.state = State::kReady;
    if (forced > 0) {
      counters_.overage_units += static_cast<std::uint64_t>(unscaled_up(forced, scale_));
      log_->warn("stripe_billing admission: {} used {} past its budget (recorded, billed)",
                 log_safe(key), unscaled_up(forced, scale_));
    }
  }
  changed_.notify_all();
}

void Admission::expire_locked(Steady::time_point now) {
  // Only when the earliest hold may have expired: a storm of refusals never rescans the holds.
  if (holds_.empty() || now < earliest_expiry_) return;
  Steady::time_point earliest = Steady::time_point::max();
  for (auto hold = holds_.begin(); hold != holds_.end();) {
    if (hold->second.expires <= now) {
      hold->second.account->held -= hold->second.amount;
      ++counters_.holds_expired;
      hold = holds_.erase(hold);
    } else {
      earliest = std::min(earliest, hold->second.expires);
      ++hold;
    }
  }
  earliest_expiry_ = earliest;
}

void Admission::sweep() {
  const auto now = clock_->steady_now();
  std::lock_guard lock(mutex_);
  expire_locked(now);
  for (auto& [key, account] : accounts_) {
    roll_period_locked(*account);
    const bool stale_balance = settings_.mode == AdmissionMode::kCredits &&
                               account->state == State::kReady &&
                               now - account->balance_at >= settings_.credit_balance_ttl;
    const bool recent = now - account->active < std::chrono::seconds(10);
    const bool retry = (account->state == State::kUnavailable ||
                        account->state == State::kNoBudget || account->exhausted) &&
                       recent;
    if (stale_balance || retry) want_locked(*account);
  }
  changed_.notify_all();
}

void Admission::report(bool give_back_idle, bool give_back_all) {
  std::vector<GrantReport> rows;
  const auto now = clock_->steady_now();
  {
    std::lock_guard lock(mutex_);
    for (auto& [key, account] : accounts_) {
      if (account->state != State::kReady) continue;
      const std::int64_t needed = account->held + account->used;
      const bool idle = give_back_idle && now - account->active > kIdleGiveBack;
      if ((idle || give_back_all) && account->grant > needed) {
        account->grant = needed;
        account->exhausted = false;
        account->dirty = true;
      }
      if (!account->dirty) continue;
      account->dirty = false;
      account->reported_used = account->used;
      rows.push_back({key, account->period, account->grant, account->used});
    }
  }
  auto written = rows.empty() ? store_->heartbeat(now_ms()) : store_->report(rows, now_ms());
  if (!written) {
    std::lock_guard lock(mutex_);
    ++counters_.store_errors;
    for (const GrantReport& row : rows) {
      const auto found = accounts_.find(row.customer);
      if (found != accounts_.end()) found->second->dirty = true;
    }
  }
}

void Admission::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  work_.notify_all();
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

// ---------------------------------------------------------------------------------------------
// Decisions as OpenAI-compatible clients expect them

int AdmissionDecision::http_status() const noexcept {
  if (allowed()) return 200;
  if (reason == "not_estimable") return 400;
  if (reason == "missing_customer") return 403;
  if (retry_after.count() > 0 && reason != "budget_exhausted") return 429;
  return 402;
}

std::string AdmissionDecision::openai_error_body() const {
  std::string message;
  std::string type = "insufficient_quota";
  if (reason == "budget_exhausted") {
    message = "Your usage budget for this period is spent.";
  } else if (reason == "credits_exhausted") {
    message = "Your credit balance is spent. Add credits to continue.";
  } else if (reason == "no_budget") {
    message = "No usage budget is configured for this customer.";
  } else if (reason == "not_estimable") {
    message = "The cost of this request cannot be estimated; it was not sent.";
    type = "invalid_request_error";
  } else if (reason == "missing_customer") {
    message = "The request names no customer to bill.";
    type = "permission_error";
  } else {
    message = "The budget is being checked; retry shortly.";
    type = "rate_limit_error";
  }
  nlohmann::json body = {
      {"error",
       {{"message", message}, {"type", type}, {"code", std::string(reason)}, {"param", nullptr}}}};
  return body.dump();
}

const char* to_string(AdmissionVerdict verdict) noexcept {
  switch (verdict) {
    case AdmissionVerdict::kAllow:
      return "allow";
    case AdmissionVerdict::kAllowUnavailable:
      return "allow_unavailable";
    case AdmissionVerdict::kDeny:
      return "deny";
  }
  return "deny";
}

}  // namespace stripe_billing
