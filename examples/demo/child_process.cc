#include "child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace demo {
namespace {

std::runtime_error system_error(const std::string& what) {
  return std::runtime_error(what + ": " + std::strerror(errno));
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

std::vector<std::string> merged_environment(const std::map<std::string, std::string>& extra) {
  std::vector<std::string> entries;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string text = *entry;
    if (extra.count(text.substr(0, text.find('='))) == 0) entries.push_back(text);
  }
  for (const auto& [name, value] : extra) entries.push_back(name + "=" + value);
  return entries;
}

int milliseconds_until(Deadline deadline) {
  const auto left =
      std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::max<std::chrono::milliseconds::rep>(left.count(), 0));
}

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

ChildProcess::ChildProcess(std::string name, const std::vector<std::string>& argv,
                           const std::map<std::string, std::string>& environment,
                           const std::filesystem::path& log_file)
    : name_(std::move(name)), log_file_(log_file) {
  if (access(argv.at(0).c_str(), X_OK) != 0) throw system_error("cannot run " + argv[0]);
  // Everything the child needs is prepared here: between fork and exec it may only make system
  // calls.
  std::vector<std::string> arguments = argv;
  std::vector<std::string> variables = merged_environment(environment);
  const auto argument_pointers = pointers(arguments);
  const auto variable_pointers = pointers(variables);
  const pid_t parent = getpid();
  const std::string log_path = log_file.string();

  pid_ = fork();
  if (pid_ < 0) throw system_error("fork");
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the demo died before prctl
    const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0 || dup2(log, STDOUT_FILENO) < 0 || dup2(log, STDERR_FILENO) < 0) _exit(127);
    execve(argument_pointers[0], argument_pointers.data(), variable_pointers.data());
    _exit(127);
  }
  // Not glibc's pidfd_open(): its 2.36 header declares it without C linkage.
  pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
  if (pidfd_ < 0) {
    const auto error = system_error("pidfd_open");
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    throw error;
  }
}

ChildProcess::~ChildProcess() {
  if (!exit_status()) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  close(pidfd_);
}

void ChildProcess::terminate() {
  if (!exit_status()) kill(pid_, SIGTERM);
}

void ChildProcess::kill_now() {
  if (!exit_status()) kill(pid_, SIGKILL);
}

std::optional<int> ChildProcess::exit_status() {
  int status = 0;
  if (!status_ && waitpid(pid_, &status, WNOHANG) == pid_) {
    status_ = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
  }
  return status_;
}

std::optional<int> ChildProcess::wait(Deadline deadline) {
  pollfd exited{pidfd_, POLLIN, 0};
  while (!exit_status() && poll(&exited, 1, milliseconds_until(deadline)) != 0) {
  }
  return exit_status();
}

void ChildProcess::wait_for_file(const std::filesystem::path& path, Deadline deadline) {
  const FileDescriptor inotify(inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (inotify.get() < 0 || inotify_add_watch(inotify.get(), path.parent_path().c_str(),
                                             IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
    throw system_error("inotify on " + path.parent_path().string());
  }
  while (!std::filesystem::exists(path)) {
    if (const auto status = exit_status()) {
      throw std::runtime_error(name_ + " exited with status " + std::to_string(*status) +
                               " before writing " + path.string());
    }
    const int timeout = milliseconds_until(deadline);
    if (timeout == 0) throw std::runtime_error("timed out waiting for " + name_ + " to start");
    pollfd events[] = {{inotify.get(), POLLIN, 0}, {pidfd_, POLLIN, 0}};
    poll(events, 2, timeout);
    char drained[4096];
    while (read(inotify.get(), drained, sizeof drained) > 0) {
    }
  }
}

}  // namespace demo
