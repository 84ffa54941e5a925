#include "admission_store.h"

#include <unistd.h>

#include <map>
#include <mutex>
#include <random>
#include <set>
#include <tuple>

#include "admission_take.h"

namespace stripe_billing {

TakeOutcome decide_take(const TakeInputs& in) {
  TakeOutcome out;
  const std::int64_t left = in.budget - in.fleet_total;
  std::int64_t granted = 0;
  if (in.force) {
    granted = in.want > 0 ? in.want : 0;
  } else if (left > 0) {
    granted = in.want < left ? in.want : left;
  }
  out.taken.granted = granted;
  out.taken.fleet_total = in.fleet_total + granted;
  out.taken.fleet_used = in.fleet_used;
  out.taken.exhausted = in.budget - out.taken.fleet_total <= 0;
  // The last piece goes to one owner: the first to meet the end while no live owner holds it.
  out.taken.crossing = in.mine_crossing || (out.taken.exhausted && in.crossing_free);
  out.set_crossing = out.taken.crossing && !in.mine_crossing;
  return out;
}

std::string admission_owner_name() {
  char host[64] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::string name;
  for (const char* c = host; *c != '\0' && name.size() < 40; ++c) {
    const bool plain = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                       (*c >= '0' && *c <= '9') || *c == '-' || *c == '.';
    name.push_back(plain ? *c : '_');
  }
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device device;
  std::uniform_int_distribution<int> pick(0, 35);
  name += "-" + std::to_string(::getpid()) + "-";
  for (int i = 0; i < 8; ++i) name.push_back(kAlphabet[pick(device)]);
  return name;
}

namespace {

// One process, nothing kept: the outbox is in memory too.
class MemoryAdmissionStore final : public AdmissionStore {
 public:
  MemoryAdmissionStore(std::string owner, std::int64_t dead_after_ms)
      : AdmissionStore(std::move(owner), dead_after_ms) {}

  Expected<GrantTaken> take(const std::string& customer, const std::string& period,
                            std::int64_t want, std::int64_t budget, bool force,
                            std::int64_t now_ms) override {
    std::lock_guard lock(mutex_);
    heartbeats_[owner_] = now_ms;
    TakeInputs in;
    in.want = want;
    in.budget = budget;
    in.force = force;
    for (const auto& [key, row] : grants_) {
      if (std::get<0>(key) != customer || std::get<1>(key) != period) continue;
      in.fleet_total += alive(std::get<2>(key), now_ms) ? row.granted : row.used;
      in.fleet_used += row.used;
    }
    const auto budget_key = std::make_pair(customer, period);
    const auto crossing = crossing_.find(budget_key);
    in.mine_crossing = crossing != crossing_.end() && crossing->second == owner_;
    in.crossing_free = crossing == crossing_.end() || !alive(crossing->second, now_ms);
    const TakeOutcome out = decide_take(in);
    grants_[{customer, period, owner_}].granted += out.taken.granted;
    if (out.set_crossing) crossing_[budget_key] = owner_;
    return out.taken;
  }

  Expected<void> report(const std::vector<GrantReport>& rows, std::int64_t now_ms) override {
    std::lock_guard lock(mutex_);
    heartbeats_[owner_] = now_ms;
    for (const GrantReport& row : rows) {
      Row& stored = grants_[{row.customer, row.period, owner_}];
      stored.granted = row.granted;
      stored.used = row.used;
    }
    return {};
  }

  Expected<void> heartbeat(std::int64_t now_ms) override {
    std::lock_guard lock(mutex_);
    heartbeats_[owner_] = now_ms;
    return {};
  }

  Expected<bool> remember_webhook(const StoredWebhook& event, std::int64_t) override {
    std::lock_guard lock(mutex_);
    if (!seen_.insert(event.id).second) return false;
    unprocessed_.push_back(event);
    return true;
  }

  Expected<void> webhook_processed(const std::string& id, std::int64_t) override {
    std::lock_guard lock(mutex_);
    for (auto it = unprocessed_.begin(); it != unprocessed_.end(); ++it) {
      if (it->id == id) {
        unprocessed_.erase(it);
        break;
      }
    }
    return {};
  }

  Expected<std::vector<StoredWebhook>> unprocessed_webhooks(int limit) override {
    std::lock_guard lock(mutex_);
    std::vector<StoredWebhook> out;
    for (const StoredWebhook& event : unprocessed_) {
      if (static_cast<int>(out.size()) >= limit) break;
      out.push_back(event);
    }
    return out;
  }

 private:
  struct Row {
    std::int64_t granted = 0;
    std::int64_t used = 0;
  };
  bool alive(const std::string& owner, std::int64_t now_ms) const {
    const auto beat = heartbeats_.find(owner);
    return owner == owner_ ||
           (beat != heartbeats_.end() && beat->second >= now_ms - dead_after_ms_);
  }

  std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, std::string>, Row> grants_;
  std::map<std::pair<std::string, std::string>, std::string> crossing_;
  std::map<std::string, std::int64_t> heartbeats_;
  std::set<std::string> seen_;
  std::vector<StoredWebhook> unprocessed_;
};

}  // namespace

std::unique_ptr<AdmissionStore> open_memory_admission_store(std::string owner,
                                                            std::int64_t dead_after_ms) {
  return std::make_unique<MemoryAdmissionStore>(std::move(owner), dead_after_ms);
}

Expected<std::unique_ptr<AdmissionStore>> open_admission_store(const FinalizedConfig& config,
                                                               std::string owner,
                                                               std::int64_t dead_after_ms) {
  if (config.uses_postgres())
    return open_pg_admission_store(config, std::move(owner), dead_after_ms);
  if (config.outbox_path() == ":memory:") {
    return open_memory_admission_store(std::move(owner), dead_after_ms);
  }
  return open_sqlite_admission_store(config.outbox_path(), std::move(owner), dead_after_ms);
}

}  // namespace stripe_billing
