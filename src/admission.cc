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
      shared_(config.uses_postgres()),
      typed_(!settings_.token_budgets.empty()) {
  for (Shard& shard : shards_) {
    shard.recent_ring.assign(kRecentCallIds / kShards, 0);
    shard.recent.reserve(kRecentCallIds / kShards * 2);
  }
  thread_ = std::thread([this] { run(); });
}

Admission::~Admission() { stop(); }

std::int64_t Admission::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock_->now().time_since_epoch())
      .count();
}

Admission::Shard& Admission::shard_of(std::string_view key) {
  return shards_[std::hash<std::string_view>{}(key) % kShards];
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
  Estimate out;
  if (amount) {
    out = {true, *amount, {}};
  } else {
    switch (settings_.unestimable) {
      case UnestimablePolicy::kReject:
        return out;
      case UnestimablePolicy::kAllow:
        out = {true, 0, {}};
        break;
      case UnestimablePolicy::kReserve:
        out = {true, scaled(settings_.fixed_reserve, scale_), {}};
        break;
    }
  }
  // By token type: the prompt is input (what of it a cache will serve is known only afterwards)
  // and the capped max_tokens output; the cache types reserve nothing and are held to their
  // budgets by what is used.
  out.typed[static_cast<std::size_t>(TokenType::kInput)] = input_known ? request.input_tokens : 0;
  out.typed[static_cast<std::size_t>(TokenType::kOutput)] = output;
  return out;
}

std::optional<Admission::Actual> Admission::actual(const UsageEvent& event) const {
  if (event.cache_hit && config_.cache_hit() == CacheHitPolicy::kSkip) return Actual{};
  const auto& skipped = config_.skip_call_types();
  if (std::find(skipped.begin(), skipped.end(), event.call_type) != skipped.end()) {
    return Actual{};
  }
  const std::int64_t max = config_.max_quantity();
  const auto checked = [](const QuantityCheck& check) -> std::optional<std::int64_t> {
    if (check.verdict == QuantityCheck::Verdict::kBill) return check.value;
    if (check.verdict == QuantityCheck::Verdict::kZero) return 0;
    return std::nullopt;
  };
  const auto only = [](std::optional<std::int64_t> amount) -> std::optional<Actual> {
    if (!amount) return std::nullopt;
    return Actual{*amount, {}};
  };
  switch (config_.quantity_source()) {
    case QuantitySource::kCost:
      return only(checked(cost_amount(event.response_cost, config_.cost_multiplier(), max)));
    case QuantitySource::kTokenTypes:
    case QuantitySource::kPriced: {
      const BillableTokens tokens = billable_tokens(
          token_details(event), provider_family(event.provider, event.model).family);
      if (tokens.verdict != BillableTokens::Verdict::kOk &&
          tokens.verdict != BillableTokens::Verdict::kInconsistent) {
        return std::nullopt;
      }
      if (config_.quantity_source() == QuantitySource::kTokenTypes) {
        Actual out{tokens.sum(), {}};
        for (std::size_t type = 0; type < kTokenTypeCount; ++type) {
          out.typed[type] = std::max<std::int64_t>(0, tokens.count[type]);
        }
        return out;
      }
      const auto prices = tables_->prices();
      const ModelPrices* found = prices_of(*tables_, prices.get(), event.model, event.provider);
      if (found == nullptr) return std::nullopt;
      return only(
          priced_amount_micros(tokens, *found, tables_->markup(), tables_->units_per_usd()));
    }
    case QuantitySource::kSplit: {
      auto out = only(checked(billable_quantity(event, QuantitySource::kTotalTokens, 2 * max)));
      if (out && typed_) {
        out->typed[static_cast<std::size_t>(TokenType::kInput)] =
            checked(billable_quantity(event, QuantitySource::kPromptTokens, max)).value_or(0);
        out->typed[static_cast<std::size_t>(TokenType::kOutput)] =
            checked(billable_quantity(event, QuantitySource::kCompletionTokens, max)).value_or(0);
      }
      return out;
    }
    default:
      return only(checked(billable_quantity(event, config_.quantity_source(), max)));
  }
}

// ---------------------------------------------------------------------------------------------
// The host's calls

Admission::Account& Admission::account_locked(Shard& shard, std::string_view key,
                                              std::string_view plan) {
  auto found = shard.accounts.find(std::string(key));
  if (found == shard.accounts.end()) {
    auto account = std::make_unique<Account>();
    account->id = std::string(key);
    account->key = account->id;
    account->shard = &shard;
    account->plan = std::string(plan);
    found = shard.accounts.emplace(account->id, std::move(account)).first;
    link_typed_locked(shard, *found->second);
    want_locked(*found->second);
  } else if (!plan.empty() && found->second->plan != plan) {
    found->second->plan = std::string(plan);  // the plan changed: its budgets are read again
    link_typed_locked(shard, *found->second);
    want_locked(*found->second);
  }
  Account& total = *found->second;
  roll_period_locked(total);
  if (typed_) {
    for (Account* typed : total.typed) {
      if (typed != nullptr) roll_period_locked(*typed);
    }
  }
  return total;
}

// The token types with a budget for this customer (its key's, else its plan's, else `*`'s, type
// by type), each an account of its own: its store row is the customer's, for a period that names
// the type.
void Admission::link_typed_locked(Shard& shard, Account& total) {
  if (!typed_) return;
  for (std::size_t type = 0; type < kTokenTypeCount; ++type) {
    const std::string type_name = to_string(kAllTokenTypes[type]);
    bool budgeted = false;
    for (const std::string& name : {total.key, total.plan, std::string("*")}) {
      const auto found =
          name.empty() ? settings_.token_budgets.end() : settings_.token_budgets.find(name);
      if (found != settings_.token_budgets.end() && found->second.count(type_name) != 0) {
        budgeted = true;
        break;
      }
    }
    if (!budgeted) {
      total.typed[type] = nullptr;
      continue;
    }
    const std::string id = total.key + std::string(1, '\0') + type_name;
    auto found = shard.accounts.find(id);
    if (found == shard.accounts.end()) {
      auto account = std::make_unique<Account>();
      account->id = id;
      account->key = total.key;
      account->type = static_cast<int>(type);
      account->shard = &shard;
      found = shard.accounts.emplace(id, std::move(account)).first;
    }
    Account& typed = *found->second;
    typed.plan = total.plan;
    roll_period_locked(typed);
    want_locked(typed);
    total.typed[type] = &typed;
  }
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
  if (account.type >= 0) {
    account.period += ':';
    account.period += to_string(kAllTokenTypes[static_cast<std::size_t>(account.type)]);
  }
  account.period_end_s = span.end_s;
}

void Admission::want_locked(Account& account) {
  if (account.wanted) return;
  account.wanted = true;
  {
    std::lock_guard lock(work_mutex_);
    queue_.push_back(&account);
  }
  work_.notify_one();
}

void Admission::add_used_locked(Account& account, std::int64_t amount) {
  roll_period_locked(account);
  account.used = std::min(kMaxInternal, account.used + amount);
  account.dirty = true;
  if (account.used + account.held > account.grant) want_locked(account);
}

AdmissionDecision Admission::deny(Shard& shard, std::string_view reason,
                                  std::chrono::seconds retry_after, const Account* account) {
  ++shard.counters.denied[std::string(reason)];
  AdmissionDecision decision;
  decision.verdict = AdmissionVerdict::kDeny;
  decision.reason = reason;
  decision.retry_after = retry_after;
  if (account != nullptr && account->type >= 0) {
    decision.token_type = to_string(kAllTokenTypes[static_cast<std::size_t>(account->type)]);
  }
  return decision;
}

AdmissionDecision Admission::unavailable(Shard& shard) {
  if (settings_.fail_open) {
    ++shard.counters.fail_open;
    AdmissionDecision decision;
    decision.verdict = AdmissionVerdict::kAllowUnavailable;
    decision.reason = "fail_open";
    return decision;
  }
  return deny(shard, "balance_unavailable", kRetryUnavailable);
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
    Shard& shard = shard_of(key.value);
    if (key.value.empty() || !is_storable_text(key.value) || key.value.size() > 500) {
      std::lock_guard lock(shard.mutex);
      return deny(shard, "missing_customer", std::chrono::seconds(0));
    }
    const Estimate estimated = estimate(request);
    std::string call = request.call_id.empty() ? std::string() : hold_key(request.call_id);
    std::unique_lock lock(shard.mutex);
    if (!estimated.estimable) return deny(shard, "not_estimable", std::chrono::seconds(0));
    Account& account = account_locked(shard, key.value, request.plan);
    account.active = clock_->steady_now();  // also while unavailable: it is tried again
    const auto known = [&] {
      if (account.state == State::kUnknown) return false;
      for (const Account* typed : account.typed) {
        if (typed != nullptr && typed->state == State::kUnknown) return false;
      }
      return true;
    };
    if (!known() && settings_.wait.count() > 0) {
      shard.changed.wait_for(lock, settings_.wait, [&] { return stopping_ || known(); });
    }
    // The accounts the call must fit: the total's budget, and each token type's that applies.
    std::array<Part, kMaxParts> parts{};
    std::size_t count = 0;
    bool unknown = false;
    const auto add = [&](Account& each, std::int64_t amount) {
      if (each.state == State::kReady) parts[count++] = {&each, amount};
      if (each.state == State::kUnknown || each.state == State::kUnavailable) unknown = true;
    };
    add(account, estimated.amount);
    for (std::size_t type = 0; type < kTokenTypeCount; ++type) {
      if (account.typed[type] != nullptr) add(*account.typed[type], estimated.typed[type]);
    }
    if (unknown) return unavailable(shard);
    if (count == 0) return deny(shard, "no_budget", std::chrono::seconds(0));
    return decide_locked(shard, account, estimated, parts, count, std::move(call), lock);
  } catch (...) {
    AdmissionDecision decision;
    decision.verdict =
        settings_.fail_open ? AdmissionVerdict::kAllowUnavailable : AdmissionVerdict::kDeny;
    decision.reason = settings_.fail_open ? "fail_open" : "balance_unavailable";
    decision.retry_after = kRetryUnavailable;
    return decision;
  }
}

AdmissionDecision Admission::decide_locked(Shard& shard, Account& owner, const Estimate& estimated,
                                           std::array<Part, kMaxParts>& parts, std::size_t count,
                                           std::string call, std::unique_lock<std::mutex>& lock) {
  const auto now = clock_->steady_now();
  const auto left = [](const Account& account) {
    return account.grant - account.held - account.used;
  };
  // A part fits what is left of its grant; one that reserves nothing needs something left.
  const auto fits = [&](const Part& part) {
    const std::int64_t room = left(*part.account);
    return (part.amount <= room && (part.amount > 0 || room > 0)) || settings_.overage_allowed ||
           (part.account->crossing && room > 0);
  };
  const auto first_unfit = [&]() -> const Part* {
    for (std::size_t i = 0; i < count; ++i) {
      if (!fits(parts[i])) return &parts[i];
    }
    return nullptr;
  };
  for (std::size_t i = 0; i < count; ++i) {
    parts[i].account->active = now;
    parts[i].account->largest = std::max(parts[i].account->largest, parts[i].amount);
  }
  if (first_unfit() != nullptr) expire_locked(shard, now);  // what expired is free first
  const Part* unfit = first_unfit();
  if (unfit != nullptr && !unfit->account->exhausted) {
    // This process's grant ran out before a refill came: wait for it, boundedly.
    for (std::size_t i = 0; i < count; ++i) {
      if (!fits(parts[i])) want_locked(*parts[i].account);
    }
    const auto settled = [&] {
      for (std::size_t i = 0; i < count; ++i) {
        const Account& account = *parts[i].account;
        if (account.state != State::kReady) return true;
        if (!fits(parts[i]) && account.exhausted) return true;
      }
      return first_unfit() == nullptr;
    };
    if (settings_.wait.count() > 0) {
      shard.changed.wait_for(lock, settings_.wait, [&] { return stopping_ || settled(); });
    }
    for (std::size_t i = 0; i < count; ++i) {
      if (parts[i].account->state != State::kReady) return unavailable(shard);
    }
    unfit = first_unfit();
  }
  if (unfit != nullptr) {
    const Account& account = *unfit->account;
    if (!account.exhausted) {
      return deny(shard, "budget_refilling", std::chrono::seconds(1), &account);
    }
    if (account.others_used + account.used >= account.budget) {
      if (settings_.mode == AdmissionMode::kCredits) {
        return deny(shard, "credits_exhausted", std::chrono::seconds(0), &account);
      }
      const std::int64_t now_s =
          std::chrono::duration_cast<std::chrono::seconds>(clock_->now().time_since_epoch())
              .count();
      return deny(shard, "budget_exhausted",
                  std::chrono::seconds(std::max<std::int64_t>(1, account.period_end_s - now_s)),
                  &account);
    }
    // What is left of the budget is held by calls still running (here or elsewhere in the
    // fleet): it comes back as they settle.
    return deny(shard, "held_by_open_calls", std::chrono::seconds(1), &account);
  }
  Hold hold;
  hold.owner = &owner;
  hold.expires = now + settings_.hold_ttl;
  std::int64_t remaining = std::numeric_limits<std::int64_t>::max();
  for (std::size_t i = 0; i < count; ++i) {
    Account& account = *parts[i].account;
    account.held += parts[i].amount;
    if (parts[i].amount > 0) hold.parts[hold.count++] = parts[i];
    const std::int64_t low_water = std::max(account.largest * 4, account.grant / 4);
    if (!account.exhausted && left(account) < low_water) want_locked(account);
    remaining = std::min(remaining, std::max<std::int64_t>(0, left(account)));
  }
  if (hold.count > 0) {
    if (call.empty()) {
      // No call id: nothing can settle the hold, so it is held until it expires, and the call's
      // success counts its usage besides until then (the gate errs towards refusing).
      call = std::string("\0anonymous-", 11) + std::to_string(++shard.anonymous_holds);
    }
    shard.earliest_expiry = std::min(shard.earliest_expiry, hold.expires);
    auto [at, inserted] = shard.holds.try_emplace(std::move(call), hold);
    if (!inserted) {  // admitted twice under one call id: the newer hold replaces the older
      for (std::size_t i = 0; i < at->second.count; ++i) {
        at->second.parts[i].account->held -= at->second.parts[i].amount;
      }
      at->second = hold;
    }
  }
  ++shard.counters.allowed;
  AdmissionDecision decision;
  decision.verdict = AdmissionVerdict::kAllow;
  decision.reserved = unscaled_up(estimated.amount, scale_);
  decision.remaining = remaining / scale_;
  return decision;
}

void Admission::settle(const UsageEvent& event) noexcept {
  try {
    if (settings_.mode == AdmissionMode::kOff) return;
    const Actual used = actual(event).value_or(Actual{});
    const CustomerKey key = charge_by_value(event, config_);
    const bool named = !key.value.empty() && is_storable_text(key.value) && key.value.size() <= 500;
    const std::string call = hold_key(event.call_id);
    const std::uint64_t recent_id = std::hash<std::string>{}(call) | 1;  // never 0: a free slot
    // The hold's customer counts the usage. An event that names no usable customer (it is not
    // billed either) still closes its hold, in whichever shard it is.
    const auto take_hold = [&](Shard& shard) -> Account* {
      const auto hold = shard.holds.find(call);
      if (hold == shard.holds.end()) return nullptr;
      Account* owner = hold->second.owner;
      for (std::size_t i = 0; i < hold->second.count; ++i) {
        hold->second.parts[i].account->held -= hold->second.parts[i].amount;
      }
      shard.holds.erase(hold);
      ++shard.counters.holds_settled;
      return owner;
    };
    if (!named) {
      for (Shard& shard : shards_) {
        std::lock_guard lock(shard.mutex);
        if (take_hold(shard) != nullptr) {
          shard.changed.notify_all();
          return;
        }
      }
      return;
    }
    Shard& shard = shard_of(key.value);
    std::lock_guard lock(shard.mutex);
    Account* owner = take_hold(shard);
    if (owner == nullptr) {
      if (shard.recent.count(recent_id) != 0) return;  // settled already
      owner = &account_locked(shard, key.value, "");
      ++shard.counters.settled_without_hold;
    }
    if (!event.call_id.empty() && shard.recent.insert(recent_id).second) {
      // A ring of the shard's last ids (as 64-bit hashes: no string is copied).
      std::uint64_t& slot = shard.recent_ring[shard.recent_next++ % shard.recent_ring.size()];
      if (slot != 0) shard.recent.erase(slot);
      slot = recent_id;
    }
    add_used_locked(*owner, used.amount);
    for (std::size_t type = 0; type < kTokenTypeCount; ++type) {
      if (owner->typed[type] != nullptr) add_used_locked(*owner->typed[type], used.typed[type]);
    }
    shard.changed.notify_all();
  } catch (...) {
  }
}

void Admission::release(const UsageEvent& event) noexcept {
  try {
    if (settings_.mode == AdmissionMode::kOff) return;
    const CustomerKey key = charge_by_value(event, config_);
    const std::string call = hold_key(event.call_id);
    // The hold is in the shard of the customer the event names; a failure event may name none
    // (it is not billed), so the other shards are looked at too.
    Shard& home = shard_of(key.value);
    const auto release_in = [&](Shard& shard) {
      std::lock_guard lock(shard.mutex);
      const auto hold = shard.holds.find(call);
      if (hold == shard.holds.end()) return false;
      for (std::size_t i = 0; i < hold->second.count; ++i) {
        hold->second.parts[i].account->held -= hold->second.parts[i].amount;
      }
      shard.holds.erase(hold);
      ++shard.counters.holds_released;
      shard.changed.notify_all();
      return true;
    };
    if (release_in(home)) return;
    for (Shard& shard : shards_) {
      if (&shard != &home && release_in(shard)) return;
    }
  } catch (...) {
  }
}

void Admission::balance_changed(const std::string& customer_id) {
  {
    std::lock_guard lock(work_mutex_);
    balance_changes_.push_back(customer_id);
    ++balance_requested_;
  }
  work_.notify_one();
}

bool Admission::wait_for_balances(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(work_mutex_);
  const std::uint64_t wanted = balance_requested_;
  return balances_.wait_until(lock, deadline,
                              [&] { return stopping_ || balance_served_ >= wanted; });
}

AdmissionCounters Admission::counters() const {
  AdmissionCounters out;
  {
    std::lock_guard lock(work_mutex_);
    out = background_counters_;
  }
  for (const Shard& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    const ShardCounters& counted = shard.counters;
    out.allowed += counted.allowed;
    out.fail_open += counted.fail_open;
    for (const auto& [reason, times] : counted.denied) out.denied[reason] += times;
    out.holds_open += shard.holds.size();
    out.holds_settled += counted.holds_settled;
    out.holds_released += counted.holds_released;
    out.holds_expired += counted.holds_expired;
    out.settled_without_hold += counted.settled_without_hold;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The background thread

void Admission::run() {
  pthread_setname_np(pthread_self(), "sb-admission");
  auto next_report = Steady::now();
  auto next_sweep = Steady::now();
  for (;;) {
    std::deque<Account*> accounts;
    std::vector<std::string> changes;
    std::uint64_t served = 0;
    {
      std::unique_lock lock(work_mutex_);
      work_.wait_for(lock, std::chrono::milliseconds(50),
                     [&] { return stopping_ || !queue_.empty() || !balance_changes_.empty(); });
      if (stopping_) break;
      accounts.swap(queue_);
      changes.swap(balance_changes_);
      served = balance_requested_;
    }
    if (!changes.empty()) {
      for (Shard& shard : shards_) {
        std::lock_guard lock(shard.mutex);
        for (auto& [id, account] : shard.accounts) {
          if (account->customer_id.empty() ||
              std::find(changes.begin(), changes.end(), account->customer_id) == changes.end()) {
            continue;
          }
          account->balance_at = {};
          if (!account->wanted) {
            account->wanted = true;
            accounts.push_back(account.get());
          }
        }
      }
    }
    for (Account* account : accounts) serve(*account);
    if (!changes.empty()) {
      {
        std::lock_guard lock(work_mutex_);
        balance_served_ = std::max(balance_served_, served);
      }
      balances_.notify_all();
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

std::optional<std::int64_t> Admission::budget_for(Account& snapshot) {
  if (settings_.mode == AdmissionMode::kStatic) {
    const std::string type_name =
        snapshot.type < 0 ? std::string()
                          : to_string(kAllTokenTypes[static_cast<std::size_t>(snapshot.type)]);
    for (const std::string& name : {snapshot.key, snapshot.plan, std::string("*")}) {
      if (name.empty()) continue;
      if (snapshot.type < 0) {
        const auto found = settings_.budgets.find(name);
        if (found != settings_.budgets.end()) return scaled(found->second, scale_);
        continue;
      }
      const auto found = settings_.token_budgets.find(name);
      if (found == settings_.token_budgets.end()) continue;
      const auto amount = found->second.find(type_name);
      if (amount != found->second.end()) return scaled(amount->second, scale_);
    }
    return std::nullopt;
  }
  const auto now = clock_->steady_now();
  if (snapshot.state == State::kReady && snapshot.balance_at != Steady::time_point{} &&
      now - snapshot.balance_at < settings_.credit_balance_ttl) {
    return snapshot.budget;
  }
  {
    std::lock_guard lock(work_mutex_);
    ++background_counters_.balance_fetches;
  }
  const auto cents = fetch_balance(snapshot.key, snapshot.customer_id);
  if (!cents) {
    std::lock_guard lock(work_mutex_);
    ++background_counters_.balance_failures;
    return std::nullopt;
  }
  snapshot.balance_at = now;
  return scaled(std::max<std::int64_t>(0, *cents), scale_);
}

void Admission::serve(Account& account) {
  Shard& shard = *account.shard;
  Account snapshot;
  {
    std::lock_guard lock(shard.mutex);
    roll_period_locked(account);
    account.wanted = false;  // after the roll, which may want it again
    snapshot = account;
  }
  const auto budget = budget_for(snapshot);
  if (!budget) {
    {
      std::lock_guard lock(shard.mutex);
      account.customer_id = snapshot.customer_id;
      if (settings_.mode == AdmissionMode::kStatic) {
        account.state = State::kNoBudget;
      } else if (account.state != State::kReady) {
        account.state = State::kUnavailable;  // a known balance stays in force while Stripe is down
      }
    }
    shard.changed.notify_all();
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
    auto got = store_->take(snapshot.key, snapshot.period, chunk, *budget, false, now_ms());
    if (!got) {
      {
        std::lock_guard lock(work_mutex_);
        ++background_counters_.store_errors;
      }
      {
        std::lock_guard lock(shard.mutex);
        if (account.state != State::kReady) account.state = State::kUnavailable;
      }
      log_->warn("stripe_billing admission: {}", got.error().message);
      shard.changed.notify_all();
      return;
    }
    taken = *got;
    got_fresh = true;
    // Settled usage beyond everything the budget had left (estimates that were too low): taken
    // as this owner's grant all the same, so the fleet sees it, and counted. Never forgiven.
    const std::int64_t over = snapshot.used - (snapshot.grant + taken.granted);
    if (over > 0) {
      auto forced_take = store_->take(snapshot.key, snapshot.period, over, *budget, true, now_ms());
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
  if (forced > 0) {
    std::lock_guard lock(work_mutex_);
    background_counters_.overage_units += static_cast<std::uint64_t>(unscaled_up(forced, scale_));
  }
  {
    std::lock_guard lock(shard.mutex);
    account.customer_id = snapshot.customer_id;
    account.balance_at = snapshot.balance_at;
    if (account.period == snapshot.period) {
      account.grant += taken.granted + forced;
      // A budget that went down (credits spent elsewhere, an invoice applied): this owner's
      // grant shrinks to what is left beside the other owners' grants, never below what it holds
      // and used. The store hears of it at the next report.
      const std::int64_t others_granted =
          taken.fleet_total - (snapshot.grant + taken.granted + forced);
      const std::int64_t cap = *budget - std::max<std::int64_t>(0, others_granted);
      if (got_fresh && account.grant > cap) {
        account.grant = std::max(account.held + account.used, cap);
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
    }
  }
  if (forced > 0) {
    log_->warn("stripe_billing admission: {} used {} past its budget (recorded, billed)",
               log_safe(snapshot.key), unscaled_up(forced, scale_));
  }
  shard.changed.notify_all();
}

void Admission::expire_locked(Shard& shard, Steady::time_point now) {
  // Only when the earliest hold may have expired: a storm of refusals never rescans the holds.
  if (shard.holds.empty() || now < shard.earliest_expiry) return;
  Steady::time_point earliest = Steady::time_point::max();
  for (auto hold = shard.holds.begin(); hold != shard.holds.end();) {
    if (hold->second.expires <= now) {
      for (std::size_t i = 0; i < hold->second.count; ++i) {
        hold->second.parts[i].account->held -= hold->second.parts[i].amount;
      }
      ++shard.counters.holds_expired;
      hold = shard.holds.erase(hold);
    } else {
      earliest = std::min(earliest, hold->second.expires);
      ++hold;
    }
  }
  shard.earliest_expiry = earliest;
}

void Admission::sweep() {
  const auto now = clock_->steady_now();
  for (Shard& shard : shards_) {
    {
      std::lock_guard lock(shard.mutex);
      expire_locked(shard, now);
      for (auto& [id, account] : shard.accounts) {
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
    }
    shard.changed.notify_all();
  }
}

void Admission::report(bool give_back_idle, bool give_back_all) {
  std::vector<GrantReport> rows;
  std::vector<Account*> reported;
  const auto now = clock_->steady_now();
  for (Shard& shard : shards_) {
    std::lock_guard lock(shard.mutex);
    for (auto& [id, account] : shard.accounts) {
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
      rows.push_back({account->key, account->period, account->grant, account->used});
      reported.push_back(account.get());
    }
  }
  auto written = rows.empty() ? store_->heartbeat(now_ms()) : store_->report(rows, now_ms());
  if (!written) {
    {
      std::lock_guard lock(work_mutex_);
      ++background_counters_.store_errors;
    }
    for (Account* account : reported) {
      std::lock_guard lock(account->shard->mutex);
      account->dirty = true;
    }
  }
}

void Admission::stop() {
  {
    std::lock_guard lock(work_mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  work_.notify_all();
  balances_.notify_all();
  for (Shard& shard : shards_) {
    { std::lock_guard lock(shard.mutex); }  // a waiter has checked stopping_ or is waiting
    shard.changed.notify_all();
  }
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
  if (reason == "budget_exhausted" && !token_type.empty()) {
    message = "Your " + std::string(token_type) + " token budget for this period is spent.";
  } else if (reason == "budget_exhausted") {
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
