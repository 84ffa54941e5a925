// The feeder child process (crash_feeder.cc) for the crash tests: started with an environment of
// the test's, killed with SIGKILL as a plan says, its output lines read as they arrive.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace stripe_billing::testing {

using Steady = std::chrono::steady_clock;

struct Submitted {
  std::string customer;
  std::int64_t quantity = 0;
};

// One run of the feeder: its output lines as they arrived, with when they arrived.
struct ChildRun {
  std::map<std::string, Submitted> submitted;
  std::map<std::string, Steady::time_point> accepted;
  Steady::time_point killed_at{};
  int exit_status = -1;
};

// When a feeder is killed: `after` its start, or after the first event it had accepted (so a
// slow build, whose start-up takes most of a short lifetime, still feeds between kills).
struct KillPlan {
  std::chrono::milliseconds after{0};
  bool from_first_accept = false;
};

// Starts the feeder; kills it with SIGKILL as `plan` says unless it ends first.
inline ChildRun run_feeder(const std::vector<std::string>& args, std::optional<KillPlan> plan,
                           std::vector<std::string> env_storage, const std::string& log) {
  const auto spawned = Steady::now();
  std::optional<Steady::time_point> kill_at;
  if (plan) {
    // One that never accepts anything is killed anyway, later.
    kill_at = spawned + plan->after +
              (plan->from_first_accept ? std::chrono::seconds(10) : std::chrono::seconds(0));
  }
  int pipe_fds[2];
  EXPECT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0600);
  std::vector<std::string> argv_storage = {CRASH_FEEDER_PATH};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& arg : argv_storage) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& entry : env_storage) envp.push_back(entry.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  EXPECT_EQ(posix_spawn(&pid, CRASH_FEEDER_PATH, &actions, nullptr, argv.data(), envp.data()), 0);
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);

  ChildRun run;
  std::string pending;
  bool killed = false;
  char buffer[65536];
  while (true) {
    int timeout_ms = -1;
    if (kill_at && !killed) {
      timeout_ms = static_cast<int>(std::max<std::int64_t>(
          0,
          std::chrono::duration_cast<std::chrono::milliseconds>(*kill_at - Steady::now()).count()));
    }
    pollfd fd{pipe_fds[0], POLLIN, 0};
    const int ready = poll(&fd, 1, timeout_ms);
    // Due even while output keeps arriving (poll then never times out).
    if (kill_at && !killed && (ready == 0 || Steady::now() >= *kill_at)) {
      kill(pid, SIGKILL);
      run.killed_at = Steady::now();
      killed = true;
      continue;
    }
    const ssize_t n = read(pipe_fds[0], buffer, sizeof buffer);
    if (n <= 0) break;
    const auto now = Steady::now();
    pending.append(buffer, static_cast<std::size_t>(n));
    std::size_t end;
    while ((end = pending.find('\n')) != std::string::npos) {
      std::istringstream line(pending.substr(0, end));
      pending.erase(0, end + 1);
      std::string word, call;
      line >> word >> call;
      if (word == "submit") {
        Submitted submitted;
        line >> submitted.customer >> submitted.quantity;
        run.submitted[call] = submitted;
      } else if (word == "accepted") {
        if (run.accepted.empty() && plan && plan->from_first_accept) kill_at = now + plan->after;
        run.accepted[call] = now;
      }
    }
  }
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  run.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  return run;
}

// This process's environment without its STRIPE_* variables, for a feeder to add its own to.
inline std::vector<std::string> environment_without_stripe() {
  std::vector<std::string> env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (std::strncmp(*entry, "STRIPE_", 7) != 0) env.emplace_back(*entry);
  }
  return env;
}

}  // namespace stripe_billing::testing
