// The fleet bound (docs/admission.md): three processes (admission_feeder) on one PostgreSQL
// store, each with many threads admitting for one customer with a static budget, hold no more
// between them than the budget plus one capped reservation, and use nearly all of it. Skipped,
// visibly, without STRIPE_TEST_PG_URL.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "pg_test_support.h"
#include "test_support.h"

extern char** environ;

namespace stripe_billing {
namespace {

using Steady = std::chrono::steady_clock;
using testing::PgTestSchema;

// One feeder: its pid, its stdin (the start byte) and its stdout (lines), read with a deadline.
class Feeder {
 public:
  Feeder(const std::vector<std::string>& args, std::vector<std::string> env,
         const std::string& log) {
    int out[2];
    int in[2];
    EXPECT_EQ(pipe2(out, O_CLOEXEC), 0);
    EXPECT_EQ(pipe2(in, O_CLOEXEC), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0600);
    std::vector<std::string> argv_storage = {ADMISSION_FEEDER_PATH};
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& arg : argv_storage) argv.push_back(arg.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& entry : env) envp.push_back(entry.data());
    envp.push_back(nullptr);
    spawned_ =
        posix_spawn(&pid_, ADMISSION_FEEDER_PATH, &actions, nullptr, argv.data(), envp.data()) == 0;
    EXPECT_TRUE(spawned_) << ADMISSION_FEEDER_PATH;
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    close(in[0]);
    stdout_ = out[0];
    stdin_ = in[1];
  }
  ~Feeder() {
    if (stdin_ >= 0) close(stdin_);
    close(stdout_);
    if (spawned_ && !reaped_) {
      kill(pid_, SIGKILL);  // only a test that failed leaves one running
      wait();
    }
  }
  Feeder(const Feeder&) = delete;
  Feeder& operator=(const Feeder&) = delete;

  // The next line of output, or nullopt at the end of the output or past `deadline`.
  std::optional<std::string> line(Steady::time_point deadline) {
    for (;;) {
      const std::size_t end = pending_.find('\n');
      if (end != std::string::npos) {
        std::string out = pending_.substr(0, end);
        pending_.erase(0, end + 1);
        return out;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now()).count();
      if (left <= 0) return std::nullopt;
      pollfd fd{stdout_, POLLIN, 0};
      if (poll(&fd, 1, static_cast<int>(left)) <= 0) continue;
      char buffer[4096];
      const ssize_t n = read(stdout_, buffer, sizeof buffer);
      if (n <= 0) return std::nullopt;
      pending_.append(buffer, static_cast<std::size_t>(n));
    }
  }
  bool start() {
    const char go = 'g';
    const bool written = write(stdin_, &go, 1) == 1;
    close(stdin_);
    stdin_ = -1;
    return written;
  }
  int wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }

 private:
  pid_t pid_ = 0;
  bool spawned_ = false;
  bool reaped_ = false;
  int stdout_ = -1;
  int stdin_ = -1;
  std::string pending_;
};

struct Admitted {
  long long reserved = -1;
  unsigned long long calls = 0;
  long long largest = 0;
  unsigned long long wrong_sizes = 0;
  unsigned long long odd = 0;
};

class AdmissionFleetTest : public testing::EmulatorTest {
 protected:
  void SetUp() override {
    STRIPE_SKIP_WITHOUT_PG();
    schema_ = std::make_unique<PgTestSchema>(*testing::test_pg_url());
  }

  std::vector<std::string> child_environment(std::int64_t budget, int cap) const {
    std::vector<std::string> env;
    for (char** entry = environ; *entry != nullptr; ++entry) {
      if (std::strncmp(*entry, "STRIPE_", 7) != 0) env.emplace_back(*entry);
    }
    const std::vector<std::pair<std::string, std::string>> settings = {
        {"STRIPE_API_KEY", testing::kEmulatorKey},
        {"STRIPE_PRICE_ID", price_},
        {"STRIPE_API_BASE", emulator_.base_url()},
        {"STRIPE_OUTBOX_URL", schema_->url()},
        {"STRIPE_OUTBOX_SCHEMA", schema_->name()},
        {"STRIPE_ADMISSION", "static"},
        {"STRIPE_BUDGETS", "alice=" + std::to_string(budget) + ",*=1000"},  // *: warm-ups
        {"STRIPE_ADMISSION_MAX_OUTPUT", std::to_string(cap)},
        {"STRIPE_ADMISSION_WAIT_MS", "5000"},
    };
    for (const auto& [name, value] : settings) env.push_back(name + "=" + value);
    return env;
  }

  // Three feeders started together; what each admitted.
  std::vector<Admitted> run_fleet(std::int64_t budget, int cap, int threads) {
    const auto env = child_environment(budget, cap);
    std::vector<std::unique_ptr<Feeder>> feeders;
    for (int i = 0; i < 3; ++i) {
      feeders.push_back(std::make_unique<Feeder>(
          std::vector<std::string>{"--threads", std::to_string(threads), "--cap",
                                   std::to_string(cap), "--seed", std::to_string(i + 1)},
          env, dir_.file("feeder-" + std::to_string(i) + ".log")));
    }
    const auto deadline = Steady::now() + std::chrono::seconds(30);
    for (auto& feeder : feeders) {
      const auto ready = feeder->line(deadline);
      EXPECT_EQ(ready.value_or("(nothing)"), "ready");
    }
    for (auto& feeder : feeders) EXPECT_TRUE(feeder->start());
    std::vector<Admitted> out;
    for (auto& feeder : feeders) {
      Admitted admitted;
      const auto line = feeder->line(deadline);
      EXPECT_TRUE(line.has_value()) << "a feeder said nothing";
      if (line) {
        std::istringstream words(*line);
        std::string word;
        words >> word >> admitted.reserved >> admitted.calls >> admitted.largest >>
            admitted.wrong_sizes >> admitted.odd;
        EXPECT_EQ(word, "admitted") << *line;
      }
      EXPECT_EQ(feeder->wait(), 0);
      out.push_back(admitted);
    }
    return out;
  }

  // `shared`: the budget is many grants (chunks of an eighth) and lasts long enough for more
  // than one process to get some of it.
  void expect_bound(std::int64_t budget, int cap, int threads, bool shared) {
    const std::vector<Admitted> fleet = run_fleet(budget, cap, threads);
    ASSERT_EQ(fleet.size(), 3u);
    long long sum = 0;
    long long largest = 0;
    int admitting = 0;
    for (const Admitted& one : fleet) {
      if (one.calls > 0) ++admitting;
      std::printf("feeder admitted %lld in %llu calls (largest %lld)\n", one.reserved, one.calls,
                  one.largest);
      EXPECT_GE(one.reserved, 0);
      EXPECT_EQ(one.wrong_sizes, 0u);
      EXPECT_EQ(one.odd, 0u);
      sum += one.reserved;
      largest = std::max(largest, one.largest);
    }
    const long long one_reservation = 2LL * cap;
    EXPECT_LE(largest, one_reservation);
    EXPECT_LE(sum, budget + largest) << "the fleet admitted past the bound";
    // Each process may leave less than one reservation of its grant unused.
    EXPECT_GE(sum, budget - 3 * one_reservation) << "the budget was not used";
    if (shared) {
      EXPECT_GE(admitting, 2) << "one process took the whole budget";
    }
    // After the clean stops each owner's row holds what its open calls reserve, never more
    // than the budget between them (the crossing owner's holds may pass its grant).
    const auto rows =
        schema_->query("SELECT COUNT(*), COALESCE(SUM(granted),0), COALESCE(SUM(used),0) FROM " +
                       schema_->name() + ".admission_grants WHERE customer='alice'");
    ASSERT_EQ(rows.rows.size(), 1u);
    EXPECT_GE(std::stoi(rows.rows[0][0]), admitting);
    const long long granted = std::stoll(rows.rows[0][1]);
    EXPECT_LE(granted, budget);
    EXPECT_LE(granted, sum);
    EXPECT_GE(granted, sum - largest);
    EXPECT_EQ(rows.rows[0][2], "0");
  }

  std::unique_ptr<PgTestSchema> schema_;
};

TEST_F(AdmissionFleetTest, ThreeProcessesNeverExceedTheBudgetByMoreThanOneReservation) {
  expect_bound(1'000'000, 256, 16, true);
}

// Eight times the largest reservation is more than the budget: one grant may take all of it.
TEST_F(AdmissionFleetTest, ASmallBudgetOfFewGrants) { expect_bound(1'000, 64, 16, false); }

TEST_F(AdmissionFleetTest, AnOddBudgetOfManyGrants) { expect_bound(123'457, 64, 12, true); }

}  // namespace
}  // namespace stripe_billing
