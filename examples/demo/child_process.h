// A child process of the demo. Its stdout and stderr go to a log file; it is killed with SIGKILL
// when the demo dies (PR_SET_PDEATHSIG) and by the destructor when still running, so no way out
// of the demo, an exception included, leaves one behind. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace demo {

using Deadline = std::chrono::steady_clock::time_point;

class ChildProcess {
 public:
  // Runs argv[0] (a path) with the demo's environment plus `environment`. Throws
  // std::runtime_error when it cannot.
  ChildProcess(std::string name, const std::vector<std::string>& argv,
               const std::map<std::string, std::string>& environment,
               const std::filesystem::path& log_file);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  const std::string& name() const { return name_; }
  const std::filesystem::path& log_file() const { return log_file_; }
  pid_t pid() const { return pid_; }
  void terminate();  // SIGTERM
  void kill_now();   // SIGKILL: no chance to clean up, as in a crash or an OOM kill
  // The exit status once it has exited (128 + N when signal N killed it); never blocks.
  std::optional<int> exit_status();
  // The exit status, or nullopt when it is still running at the deadline.
  std::optional<int> wait(Deadline deadline);
  // Blocks until `path` exists. Throws std::runtime_error when the child exits first or the
  // deadline passes.
  void wait_for_file(const std::filesystem::path& path, Deadline deadline);

 private:
  std::string name_;
  std::filesystem::path log_file_;
  pid_t pid_ = -1;
  int pidfd_ = -1;  // readable once the child has exited
  std::optional<int> status_;
};

}  // namespace demo
