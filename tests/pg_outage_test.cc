// PostgreSQL going away under a running gateway: a TCP relay of the test's own between the library
// and the test server is cut (every connection dropped, new ones refused) and restored. The host
// keeps being served, accepted usage is held in memory and stored once PostgreSQL is back, errors
// are logged at most once a minute, and nothing is lost or billed twice. Skipped, visibly,
// without STRIPE_TEST_PG_URL.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "pg_test_support.h"
#include "test_support.h"

namespace stripe_billing {
namespace {

using testing::CapturedLog;
using testing::eventually;
using testing::in_seconds;

// Relays 127.0.0.1:port() to the server; cut() drops every connection and refuses new ones until
// restore().
class TcpRelay {
 public:
  TcpRelay(std::string host, int port) : host_(std::move(host)), target_port_(port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(listener_, 64), 0);
    socklen_t length = sizeof address;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~TcpRelay() {
    stop_ = true;
    thread_.join();
    for (auto& [a, b] : pairs_) {
      ::close(a);
      ::close(b);
    }
    ::close(listener_);
  }
  int port() const { return port_; }
  void cut() { cut_ = true; }
  void restore() { cut_ = false; }

 private:
  int connect_target() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(target_port_));
    ::inet_pton(AF_INET, host_.c_str(), &address.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

  void run() {
    while (!stop_) {
      if (cut_) {
        for (auto& [a, b] : pairs_) {
          ::close(a);
          ::close(b);
        }
        pairs_.clear();
      }
      std::vector<pollfd> fds{{listener_, POLLIN, 0}};
      for (auto& [a, b] : pairs_) {
        fds.push_back({a, POLLIN, 0});
        fds.push_back({b, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        const int server = cut_ || client < 0 ? -1 : connect_target();
        if (server < 0) {
          if (client >= 0) ::close(client);
        } else {
          pairs_.emplace_back(client, server);
        }
      }
      std::vector<std::size_t> closed;
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const std::size_t pair = (i - 1) / 2;
        const int from = fds[i].fd;
        const int to = (i % 2 == 1) ? pairs_[pair].second : pairs_[pair].first;
        char buffer[65536];
        const ssize_t n = ::read(from, buffer, sizeof buffer);
        if (n <= 0 || ::send(to, buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) {
          closed.push_back(pair);
        }
      }
      std::sort(closed.begin(), closed.end());
      closed.erase(std::unique(closed.begin(), closed.end()), closed.end());
      for (auto it = closed.rbegin(); it != closed.rend(); ++it) {
        ::close(pairs_[*it].first);
        ::close(pairs_[*it].second);
        pairs_.erase(pairs_.begin() + static_cast<std::ptrdiff_t>(*it));
      }
    }
  }

  const std::string host_;
  const int target_port_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> cut_{false};
  std::vector<std::pair<int, int>> pairs_;  // relay thread only
  std::thread thread_;
};

class PgOutageTest : public testing::EmulatorTest {
 protected:
  void SetUp() override {
    STRIPE_SKIP_WITHOUT_PG();
    schema_ = std::make_unique<testing::PgTestSchema>(*testing::test_pg_url());
    // Where the test server is, from its connection string.
    PQconninfoOption* options = PQconninfoParse(schema_->url().c_str(), nullptr);
    ASSERT_NE(options, nullptr);
    std::string host = "127.0.0.1", port = "5432", user, dbname;
    for (PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
      if (option->val == nullptr) continue;
      const std::string key = option->keyword;
      if (key == "host" || key == "hostaddr") host = option->val;
      if (key == "port") port = option->val;
      if (key == "user") user = option->val;
      if (key == "dbname") dbname = option->val;
    }
    PQconninfoFree(options);
    if (host == "localhost") host = "127.0.0.1";
    relay_ = std::make_unique<TcpRelay>(host, std::stoi(port));
    relayed_url_ =
        "postgresql://" + user + "@127.0.0.1:" + std::to_string(relay_->port()) + "/" + dbname;
  }

  Config outage_config(const char* durability) const {
    Config config = EmulatorTest::config();
    config.outbox_url = relayed_url_;
    config.outbox_schema = schema_->name();
    config.durability = durability;
    config.sync_timeout_ms = "300";
    return config;
  }

  std::uint64_t reason(const StripeLogger& logger, const std::string& name) const {
    const auto reasons = logger.stats().rejected;
    const auto it = reasons.find(name);
    return it == reasons.end() ? 0 : it->second;
  }

  std::unique_ptr<testing::PgTestSchema> schema_;
  std::unique_ptr<TcpRelay> relay_;
  std::string relayed_url_;
};

TEST_F(PgOutageTest, AsyncIntakeHoldsUsageWhilePostgresIsAwayAndStoresItAfter) {
  const std::string item = add_customer("alice");
  CapturedLog log;
  auto logger = make_logger(outage_config("async"), log.logger());
  ASSERT_NE(logger, nullptr);
  for (int i = 0; i < 20; ++i)
    logger->log_success_event(for_customer("before-" + std::to_string(i), 3));
  ASSERT_TRUE(
      eventually([&] { return emulator_.total_usage(item) == 60; }, std::chrono::seconds(20)));

  relay_->cut();
  for (int i = 0; i < 50; ++i)
    logger->log_success_event(for_customer("during-" + std::to_string(i), 3));
  // The writer tried, failed, and holds the rows (counted, not lost).
  ASSERT_TRUE(eventually([&] { return reason(*logger, "outbox_unreachable") >= 2; },
                         std::chrono::seconds(20)));
  EXPECT_EQ(logger->stats().lost, 0u);
  EXPECT_EQ(emulator_.total_usage(item), 60);

  relay_->restore();
  ASSERT_TRUE(
      eventually([&] { return emulator_.total_usage(item) == 210; }, std::chrono::seconds(30)))
      << emulator_.total_usage(item);
  EXPECT_EQ(logger->stats().lost, 0u);
  EXPECT_EQ(logger->stats().accepted, 70u);
  // Loud, but once a minute: one line of the writer, at most one of the engine.
  const std::string text = log.text();
  std::size_t writer_lines = 0;
  for (std::size_t at = text.find("cannot store"); at != std::string::npos;
       at = text.find("cannot store", at + 1)) {
    ++writer_lines;
  }
  EXPECT_GE(writer_lines, 1u);
  EXPECT_LE(writer_lines, 3u);
}

TEST_F(PgOutageTest, ASyncCallWaitsAtMostItsTimeoutAndTheEventIsStoredOnceBack) {
  const std::string item = add_customer("alice");
  auto logger = make_logger(outage_config("sync"));
  ASSERT_NE(logger, nullptr);
  logger->log_success_event(for_customer("first", 5));
  ASSERT_TRUE(
      eventually([&] { return emulator_.total_usage(item) == 5; }, std::chrono::seconds(20)));

  relay_->cut();
  logger->log_success_event(for_customer("second", 7));
  // It returned (after STRIPE_SYNC_TIMEOUT_MS) without its commit, counted.
  EXPECT_EQ(reason(*logger, "sync_wait_timeout"), 1u);
  EXPECT_EQ(emulator_.total_usage(item), 5);

  relay_->restore();
  ASSERT_TRUE(
      eventually([&] { return emulator_.total_usage(item) == 12; }, std::chrono::seconds(30)))
      << emulator_.total_usage(item);
  // Reported again (the host retried the callback): still billed once.
  logger->log_success_event(for_customer("second", 7));
  ASSERT_TRUE(logger->flush(in_seconds(20)));
  EXPECT_EQ(emulator_.total_usage(item), 12);
  EXPECT_EQ(logger->stats().lost, 0u);
}

}  // namespace
}  // namespace stripe_billing
