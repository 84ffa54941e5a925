// Exactly once for a fleet through crashes: three replica processes (crash_feeder) on one
// PostgreSQL outbox, sync mode, feed usage while the emulator injects 500s (10 %), throttling
// 429s (5 %), hangs (2 %) and dropped connections; random replicas — whichever holds the engine
// lease among them — are SIGKILLed at least 20 times and restarted; once the faults stop a last
// process must see the store drained. Then Stripe's totals equal, per customer, the rows the store
// delivered (nothing twice), every event a replica accepted is among them (nothing lost), and the
// emulator's request log shows the fleet within the configured account rate over every 1 s window
// (10 % at most over it). Skipped, visibly, without STRIPE_TEST_PG_URL.
#include <gtest/gtest.h>

#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "feeder_process.h"
#include "pg_test_support.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using stripe_emulator::Fault;
using stripe_emulator::FaultKind;
using testing::ChildRun;
using testing::KillPlan;
using testing::Steady;

constexpr int kReplicas = 3;
constexpr int kKillsPerReplica = 7;
constexpr int kCustomers = 30;
constexpr int kRate = 60;  // the account's requests per second, for the whole fleet
constexpr int kDrainBoundSeconds = 60;

class FleetCrashTest : public testing::EmulatorTest {
 protected:
  void SetUp() override {
    STRIPE_SKIP_WITHOUT_PG();
    schema_ = std::make_unique<testing::PgTestSchema>(*testing::test_pg_url());
    for (int i = 0; i < kCustomers; ++i) {
      const std::string key = "cust-" + std::to_string(i);
      items_[key] = add_customer(key);
    }
  }

  std::vector<std::string> child_environment() const {
    std::vector<std::string> env = testing::environment_without_stripe();
    const std::map<std::string, std::string> settings = {
        {"STRIPE_API_KEY", testing::kEmulatorKey},
        {"STRIPE_PRICE_ID", price_},
        {"STRIPE_API_BASE", emulator_.base_url()},
        {"STRIPE_CHARGE_BY", "user_id"},
        {"STRIPE_OUTBOX_URL", schema_->url()},
        {"STRIPE_OUTBOX_SCHEMA", schema_->name()},
        {"STRIPE_FLEET_LEASE_S", "2"},
        {"STRIPE_DURABILITY", "sync"},
        {"STRIPE_AGGREGATION_WINDOW_MS", "200"},
        {"STRIPE_TIMEOUT_MS", "400"},
        {"STRIPE_CONNECT_TIMEOUT_MS", "400"},
        {"STRIPE_MAX_BACKOFF_S", "1"},
        {"STRIPE_RATE_LIMIT", std::to_string(kRate)},
    };
    for (const auto& [name, value] : settings) env.push_back(name + "=" + value);
    return env;
  }

  struct Row {
    std::string customer;
    std::int64_t quantity = 0;
    int state = 0;
  };
  std::map<std::string, Row> ledger() const {
    std::map<std::string, Row> rows;
    const testing::PgRows read = schema_->query(
        "SELECT call_id, customer_key, quantity, state FROM " + schema_->name() + ".events");
    for (const auto& row : read.rows) {
      rows[row[0]] = Row{row[1], std::stoll(row[2]), std::stoi(row[3])};
    }
    return rows;
  }

  std::unique_ptr<testing::PgTestSchema> schema_;
  std::map<std::string, std::string> items_;  // customer key -> subscription item
};

TEST_F(FleetCrashTest, ThreeReplicasLoseNothingBillNothingTwiceAndKeepTheAccountRate) {
  Fault lock{FaultKind::kStatus, 429, "/v", {}};
  lock.code = stripe_emulator::TooManyRequestsCode::kLockTimeout;
  emulator_.set_random_faults({{Fault{FaultKind::kStatus, 500, "/v", {}}, 0.10},
                               {Fault{FaultKind::kStatus, 429, "/v", {}}, 0.05},
                               {lock, 0.01},
                               {Fault{FaultKind::kHang, 0, "/v", std::chrono::seconds(2)}, 0.02},
                               {Fault{FaultKind::kCloseConnection, 0, "/v", {}}, 0.01},
                               {Fault{FaultKind::kCloseAfterCommit, 0, "/v", {}}, 0.01}},
                              /*seed=*/20261202);
  const std::vector<std::string> env = child_environment();
  std::mutex mutex;
  std::vector<ChildRun> runs;
  std::vector<std::thread> replicas;
  for (int replica = 0; replica < kReplicas; ++replica) {
    replicas.emplace_back([&, replica] {
      std::mt19937 random(static_cast<unsigned>(100 + replica));
      std::uniform_int_distribution<int> lifetime_ms(400, 1500);
      for (int kill = 0; kill < kKillsPerReplica; ++kill) {
        // Every third kill counts from the start (start-up, the schema check, taking the lease).
        const KillPlan plan{std::chrono::milliseconds(lifetime_ms(random)), kill % 3 != 0};
        const std::string run = std::to_string(replica) + "." + std::to_string(kill);
        ChildRun child =
            testing::run_feeder({"--run", run, "--events", "100000", "--customers",
                                 std::to_string(kCustomers), "--rate", "400"},
                                plan, env, dir_.file("feeder-" + std::to_string(replica) + ".log"));
        EXPECT_EQ(child.exit_status, -SIGKILL) << "run " << run << " ended by itself";
        std::lock_guard lock_runs(mutex);
        runs.push_back(std::move(child));
      }
    });
  }
  for (std::thread& replica : replicas) replica.join();
  emulator_.set_random_faults({}, 0);
  emulator_.release_hangs();
  const auto drain_started = Steady::now();
  const ChildRun drain =
      testing::run_feeder({"--drain", "--drain-seconds", std::to_string(kDrainBoundSeconds)},
                          std::nullopt, env, dir_.file("feeder-drain.log"));
  const double drain_seconds = std::chrono::duration<double>(Steady::now() - drain_started).count();
  ASSERT_EQ(drain.exit_status, 0) << "the store did not drain within " << kDrainBoundSeconds
                                  << " s";

  const auto rows = ledger();
  std::map<std::string, std::int64_t> delivered;
  for (const auto& [call, row] : rows) {
    EXPECT_EQ(row.state, 2) << call << " is not delivered (state " << row.state << ")";
    if (row.state == 2) delivered[row.customer] += row.quantity;
  }
  std::size_t accepted = 0;
  for (const ChildRun& run : runs) {
    for (const auto& [call, when] : run.accepted) {
      ++accepted;
      EXPECT_EQ(rows.count(call), 1u) << "accepted in sync mode but lost: " << call;
    }
    for (const auto& [call, submitted] : run.submitted) {
      auto row = rows.find(call);
      if (row == rows.end()) continue;
      EXPECT_EQ(row->second.quantity, submitted.quantity) << call;
      EXPECT_EQ(row->second.customer, submitted.customer) << call;
    }
  }
  ASSERT_GT(accepted, 1000u) << "the replicas fed too little to prove anything";
  for (const auto& [customer, item] : items_) {
    EXPECT_EQ(emulator_.total_usage(item), delivered[customer]) << customer;
  }
  // Every request of the fleet (lookups, refused and hung ones included) counts against the
  // account: over any 1 s window at most 10 % over the configured rate.
  std::deque<Steady::time_point> window;
  std::size_t peak = 0, requests = 0;
  for (const auto& request : emulator_.requests()) {
    if (request.path.rfind("/v1/", 0) != 0 && request.path.rfind("/v2/", 0) != 0) continue;
    ++requests;
    window.push_back(request.received_at);
    while (request.received_at - window.front() >= std::chrono::seconds(1)) window.pop_front();
    peak = std::max(peak, window.size());
  }
  EXPECT_LE(static_cast<double>(peak), kRate * 1.10) << "peak requests in 1 s";
  std::printf(
      "[ fleet crash ] %d replicas, %zu kills, %zu events accepted, %zu rows, %zu requests, "
      "peak %zu in 1 s (rate %d), drained in %.1f s\n",
      kReplicas, runs.size(), accepted, rows.size(), requests, peak, kRate, drain_seconds);
}

}  // namespace
}  // namespace stripe_billing
