// The libcurl transport against a real HTTP server (httplib) on 127.0.0.1.
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "stripe_billing/http_transport.h"

namespace stripe_billing {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kBodyCap = std::size_t{16} << 20;
constexpr char kUserAgent[] = "stripe-billing-test/1.0";
constexpr char kSecret[] = "sk_test_51Super_Secret_Key_That_Must_Never_Leak";

// A port nothing listens on: bind an ephemeral port, then close it.
int unused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// Sets environment variables for one test and restores them afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_.empty()) {
      ::unsetenv(name_.c_str());
    } else {
      ::setenv(name_.c_str(), old_.c_str(), 1);
    }
  }

 private:
  std::string name_;
  std::string old_;
};

// A loopback TCP listener standing in for a proxy: it counts connections, keeps what each one
// sends up to the end of its request head, answers 502 and closes. A connection is counted before
// it is answered, so once a request has its answer the count includes it.
class FakeProxy {
 public:
  FakeProxy() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listener_, 8) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      ADD_FAILURE() << "cannot listen on 127.0.0.1";
      return;
    }
    port_ = ntohs(address.sin_port);
    server_ = std::thread([this] { serve(); });
  }
  ~FakeProxy() {
    ::shutdown(listener_, SHUT_RDWR);  // wakes accept()
    if (server_.joinable()) server_.join();
    ::close(listener_);
  }
  FakeProxy(const FakeProxy&) = delete;
  FakeProxy& operator=(const FakeProxy&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int connections() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return connections_;
  }
  std::string received() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return received_;
  }

 private:
  void serve() {
    while (true) {
      const int client = ::accept(listener_, nullptr, nullptr);
      if (client < 0) return;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ++connections_;
      }
      std::string head;
      char buffer[4096];
      while (head.find("\r\n\r\n") == std::string::npos) {
        const ssize_t got = ::recv(client, buffer, sizeof buffer, 0);
        if (got <= 0) break;
        head.append(buffer, static_cast<std::size_t>(got));
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        received_ += head;
      }
      static constexpr char kAnswer[] =
          "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      if (::send(client, kAnswer, sizeof kAnswer - 1, MSG_NOSIGNAL) < 0) {
        // The client left first; what it sent is recorded all the same.
      }
      ::close(client);
    }
  }

  int listener_ = -1;
  int port_ = 0;
  std::thread server_;
  mutable std::mutex mutex_;
  int connections_ = 0;
  std::string received_;
};

class CurlTransportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // httplib writes to sockets the client has already dropped (timeouts, aborts).
    std::signal(SIGPIPE, SIG_IGN);
    // Proxies come from the environment; the tests that want one set it themselves.
    for (const char* name : {"http_proxy", "https_proxy", "all_proxy", "HTTPS_PROXY", "ALL_PROXY",
                             "no_proxy", "NO_PROXY"}) {
      ::unsetenv(name);
    }
  }

  void SetUp() override {
    // Enough workers for eight kept-alive client connections plus blocked handlers.
    server_.new_task_queue = [] { return new httplib::ThreadPool(16); };
    server_.set_keep_alive_max_count(1'000);  // no reconnect bursts mid-test
    server_.set_tcp_nodelay(true);            // else Nagle delays each kept-alive response by 40 ms
    install_routes();
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    listener_ = std::thread([this] { server_.listen_after_bind(); });
    // stop() is a no-op until the server runs, so teardown must not race its start.
    while (!server_.is_running()) std::this_thread::yield();
    CurlTransportOptions options;
    options.connect_timeout = milliseconds(2'000);
    options.user_agent = kUserAgent;
    transport_ = make_curl_transport(options);
  }

  void TearDown() override {
    release_blocked_handlers();
    transport_.reset();  // closes kept-alive connections, else the server waits them out
    server_.stop();
    listener_.join();
  }

  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

  static HttpRequest get(std::string url) {
    HttpRequest request;
    request.method = "GET";
    request.url = std::move(url);
    request.timeout = milliseconds(5'000);
    return request;
  }

  // Blocks the caller until a /block handler has been entered `count` times.
  void wait_for_blocked_handlers(int count) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return blocked_entered_ >= count; });
  }

  void release_blocked_handlers() {
    std::lock_guard<std::mutex> lock(mutex_);
    released_ = true;
    changed_.notify_all();
  }

  httplib::Request last_request() {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_request_;
  }

  httplib::Server server_;
  int port_ = 0;
  std::unique_ptr<HttpTransport> transport_;
  std::atomic<int> requests_seen_{0};

 private:
  void install_routes() {
    // Runs before the body is read: counts every request, records those no route handles.
    server_.set_pre_routing_handler([this](const httplib::Request& request, httplib::Response&) {
      ++requests_seen_;
      record(request);
      return httplib::Server::HandlerResponse::Unhandled;
    });
    server_.Get("/echo", [this](const httplib::Request& request, httplib::Response& response) {
      record(request);
      response.set_header("X-Reply-Header", "Value-1");
      response.set_content("hello", "text/plain");
    });
    server_.Post("/echo", [this](const httplib::Request& request, httplib::Response& response) {
      record(request);
      response.status = 201;
      response.set_content(request.body, "application/json");
    });
    server_.Get(R"(/status/(\d+))",
                [](const httplib::Request& request, httplib::Response& response) {
                  response.status = std::stoi(request.matches[1]);
                  response.set_content("status body", "text/plain");
                });
    server_.Get("/redirect", [](const httplib::Request&, httplib::Response& response) {
      response.set_redirect("/echo", 302);
    });
    server_.Get("/port", [](const httplib::Request& request, httplib::Response& response) {
      response.set_content(std::to_string(request.remote_port), "text/plain");
    });
    server_.Get("/block", [this](const httplib::Request&, httplib::Response& response) {
      std::unique_lock<std::mutex> lock(mutex_);
      ++blocked_entered_;
      changed_.notify_all();
      changed_.wait(lock, [&] { return released_; });
      response.set_content("late", "text/plain");
    });
    server_.Get("/big", [](const httplib::Request&, httplib::Response& response) {
      response.set_content(std::string(kBodyCap + 1, 'x'), "application/octet-stream");
    });
    server_.Get("/big-chunked", [](const httplib::Request&, httplib::Response& response) {
      response.set_chunked_content_provider(
          "application/octet-stream",
          [chunk = std::string(std::size_t{1} << 20, 'x'), sent = std::size_t{0}](
              std::size_t, httplib::DataSink& sink) mutable {
            if (sent > kBodyCap) {
              sink.done();
              return true;
            }
            sent += chunk.size();
            return sink.write(chunk.data(), chunk.size());
          });
    });
  }

  void record(const httplib::Request& request) {
    std::lock_guard<std::mutex> lock(mutex_);
    last_request_ = request;
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  int blocked_entered_ = 0;
  bool released_ = false;
  httplib::Request last_request_;
  std::thread listener_;
};

TEST_F(CurlTransportTest, GetSendsTheRequestHeadersAndUserAgent) {
  HttpRequest request = get(url("/echo"));
  request.headers = {{"X-Custom", "custom value"}, {"Stripe-Version", "2024-06-20"}};

  Expected<HttpResponse> response = transport_->send(request);

  ASSERT_TRUE(response) << response.error().message;
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "hello");
  httplib::Request received = last_request();
  EXPECT_EQ(received.method, "GET");
  EXPECT_EQ(received.get_header_value("X-Custom"), "custom value");
  EXPECT_EQ(received.get_header_value("Stripe-Version"), "2024-06-20");
  EXPECT_EQ(received.get_header_value("User-Agent"), kUserAgent);
}

TEST_F(CurlTransportTest, PostDeliversTheBodyAndContentType) {
  HttpRequest request = get(url("/echo"));
  request.method = "POST";
  request.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
  request.body = "event_name=llm_tokens&payload%5Bvalue%5D=42";

  Expected<HttpResponse> response = transport_->send(request);

  ASSERT_TRUE(response) << response.error().message;
  EXPECT_EQ(response->status, 201);
  EXPECT_EQ(response->body, request.body);
  httplib::Request received = last_request();
  EXPECT_EQ(received.method, "POST");
  EXPECT_EQ(received.body, request.body);
  EXPECT_EQ(received.get_header_value("Content-Type"), "application/x-www-form-urlencoded");
}

TEST_F(CurlTransportTest, LargePostIsSentWithoutExpectContinue) {
  HttpRequest request = get(url("/echo"));
  request.method = "POST";
  request.headers = {{"Content-Type", "application/octet-stream"}};
  request.body = std::string(2 << 20, 'b');

  Expected<HttpResponse> response = transport_->send(request);

  ASSERT_TRUE(response) << response.error().message;
  EXPECT_EQ(response->status, 201);
  EXPECT_EQ(response->body.size(), request.body.size());
  EXPECT_FALSE(last_request().has_header("Expect"));
}

TEST_F(CurlTransportTest, ResponseHeaderNamesAreLowercased) {
  Expected<HttpResponse> response = transport_->send(get(url("/echo")));

  ASSERT_TRUE(response) << response.error().message;
  bool found = false;
  for (const auto& [name, value] : response->headers) {
    EXPECT_EQ(name.find_first_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), std::string::npos) << name;
    if (name == "x-reply-header") found = value == "Value-1";
  }
  EXPECT_TRUE(found);
}

TEST_F(CurlTransportTest, HeaderLookupIsCaseInsensitive) {
  Expected<HttpResponse> response = transport_->send(get(url("/echo")));

  ASSERT_TRUE(response) << response.error().message;
  EXPECT_EQ(response->header("X-REPLY-HEADER"), "Value-1");
  EXPECT_EQ(response->header("x-reply-header"), "Value-1");
  EXPECT_EQ(response->header("Content-Length"), "5");
  EXPECT_EQ(response->header("X-Absent"), "");
}

TEST_F(CurlTransportTest, ErrorStatusesAreResponsesNotErrors) {
  for (int status : {404, 500}) {
    Expected<HttpResponse> response =
        transport_->send(get(url("/status/" + std::to_string(status))));

    ASSERT_TRUE(response) << response.error().message;
    EXPECT_EQ(response->status, status);
    EXPECT_EQ(response->body, "status body");
  }
}

TEST_F(CurlTransportTest, RedirectsAreNotFollowed) {
  Expected<HttpResponse> response = transport_->send(get(url("/redirect")));

  ASSERT_TRUE(response) << response.error().message;
  EXPECT_EQ(response->status, 302);
  EXPECT_EQ(response->header("location"), "/echo");
  EXPECT_EQ(requests_seen_.load(), 1);
}

TEST_F(CurlTransportTest, TotalTimeoutFailsWithKTimeout) {
  HttpRequest request = get(url("/block"));
  request.timeout = milliseconds(200);

  Expected<HttpResponse> response = transport_->send(request);

  ASSERT_FALSE(response);
  EXPECT_EQ(response.error().code, ErrorCode::kTimeout) << response.error().message;
}

TEST_F(CurlTransportTest, ConnectionRefusedFailsWithKNetwork) {
  const int port = unused_port();
  ASSERT_GT(port, 0);

  Expected<HttpResponse> response =
      transport_->send(get("http://127.0.0.1:" + std::to_string(port) + "/echo"));

  ASSERT_FALSE(response);
  EXPECT_EQ(response.error().code, ErrorCode::kNetwork);
  EXPECT_FALSE(response.error().message.empty());
}

TEST_F(CurlTransportTest, AbortInFlightStopsABlockedRequestPromptly) {
  HttpRequest request = get(url("/block"));
  request.timeout = milliseconds(5'000);
  std::unique_ptr<Expected<HttpResponse>> result;
  Clock::time_point returned;
  std::thread sender([&] {
    result = std::make_unique<Expected<HttpResponse>>(transport_->send(request));
    returned = Clock::now();
  });
  wait_for_blocked_handlers(1);

  const Clock::time_point aborted = Clock::now();
  transport_->abort_in_flight();
  sender.join();

  ASSERT_FALSE(*result);
  EXPECT_EQ(result->error().code, ErrorCode::kAborted) << result->error().message;
  EXPECT_LT(returned - aborted, milliseconds(500));
}

TEST_F(CurlTransportTest, SendsAfterAbortFailFastWithoutIo) {
  transport_->abort_in_flight();

  Expected<HttpResponse> response = transport_->send(get(url("/echo")));

  ASSERT_FALSE(response);
  EXPECT_EQ(response.error().code, ErrorCode::kAborted);
  EXPECT_EQ(requests_seen_.load(), 0);
}

TEST_F(CurlTransportTest, PlainHttpToANonLoopbackHostIsRefusedWithoutIo) {
  // Were the transport to try, curl would hand the request to this "proxy": our server.
  ScopedEnv proxy("http_proxy", url("").c_str());

  Expected<HttpResponse> response =
      transport_->send(get("http://example.com/v1/billing/meter_events"));

  ASSERT_FALSE(response);
  EXPECT_EQ(response.error().code, ErrorCode::kNetwork);
  EXPECT_NE(response.error().message.find("https://"), std::string::npos)
      << response.error().message;
  EXPECT_EQ(requests_seen_.load(), 0);
}

// Plain http goes only to loopback; a proxy from the environment need not be on loopback, and
// would read the key in clear text.
TEST_F(CurlTransportTest, PlainHttpIsNeverSentThroughAProxy) {
  for (const char* variable : {"http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"}) {
    FakeProxy proxy;
    ScopedEnv environment(variable, proxy.url().c_str());
    HttpRequest request = get(url("/echo"));
    request.headers = {{"Authorization", std::string("Bearer ") + kSecret}};

    Expected<HttpResponse> response = transport_->send(request);

    ASSERT_TRUE(response) << variable << ": " << response.error().message;
    EXPECT_EQ(response->status, 200) << variable << " sent it to the proxy";
    EXPECT_EQ(last_request().get_header_value("Authorization"), std::string("Bearer ") + kSecret);
    EXPECT_EQ(proxy.connections(), 0) << variable;
    EXPECT_EQ(proxy.received(), "") << variable;
  }
}

TEST_F(CurlTransportTest, HttpsGoesThroughTheProxyFromTheEnvironmentAsATunnel) {
  FakeProxy proxy;
  ScopedEnv environment("https_proxy", proxy.url().c_str());
  HttpRequest request = get("https://localhost:9/echo");
  request.headers = {{"Authorization", std::string("Bearer ") + kSecret}};

  Expected<HttpResponse> response = transport_->send(request);

  ASSERT_FALSE(response) << "the fake proxy refuses every tunnel";
  EXPECT_EQ(response.error().code, ErrorCode::kNetwork);
  EXPECT_EQ(proxy.received().rfind("CONNECT localhost:9 HTTP/1.1\r\n", 0), 0u) << proxy.received();
  EXPECT_EQ(proxy.received().find(kSecret), std::string::npos);
}

TEST_F(CurlTransportTest, ReusesTheConnectionForSequentialRequests) {
  Expected<HttpResponse> first = transport_->send(get(url("/port")));
  Expected<HttpResponse> second = transport_->send(get(url("/port")));

  ASSERT_TRUE(first) << first.error().message;
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(first->body, second->body);
}

TEST_F(CurlTransportTest, EightThreadsSendingConcurrentlyAllSucceed) {
  constexpr int kThreads = 8;
  constexpr int kRequestsPerThread = 10;
  std::atomic<int> succeeded{0};
  // httplib listens with a backlog of 5: eight simultaneous connects would have some SYNs
  // dropped and retried a second later. So the threads open their connections one after the
  // other, then all send at once.
  std::mutex mutex;
  std::condition_variable connected;
  int connections = 0;
  auto send_one = [&](int thread, int index) {
    HttpRequest request = get(url("/echo"));
    request.method = "POST";
    request.headers = {{"Content-Type", "text/plain"}};
    request.body = "thread=" + std::to_string(thread) + "&request=" + std::to_string(index);
    Expected<HttpResponse> response = transport_->send(request);
    if (response && response->status == 201 && response->body == request.body) ++succeeded;
  };
  std::vector<std::thread> senders;
  for (int t = 0; t < kThreads; ++t) {
    senders.emplace_back([&, t] {
      {
        std::unique_lock<std::mutex> lock(mutex);
        connected.wait(lock, [&] { return connections == t; });
      }
      send_one(t, 0);
      {
        std::lock_guard<std::mutex> lock(mutex);
        ++connections;
        connected.notify_all();
      }
      for (int i = 1; i < kRequestsPerThread; ++i) send_one(t, i);
    });
  }
  for (std::thread& sender : senders) sender.join();

  EXPECT_EQ(succeeded.load(), kThreads * kRequestsPerThread);
  EXPECT_EQ(requests_seen_.load(), kThreads * kRequestsPerThread);
}

TEST_F(CurlTransportTest, ResponseBodyOverTheCapIsAnError) {
  Expected<HttpResponse> response = transport_->send(get(url("/big")));

  ASSERT_FALSE(response);
  EXPECT_EQ(response.error().code, ErrorCode::kNetwork);
  EXPECT_NE(response.error().message.find("exceeds"), std::string::npos)
      << response.error().message;
}

TEST_F(CurlTransportTest, StreamedResponseBodyOverTheCapIsAnError) {
  Expected<HttpResponse> response = transport_->send(get(url("/big-chunked")));

  ASSERT_FALSE(response);
  EXPECT_EQ(response.error().code, ErrorCode::kNetwork);
  EXPECT_NE(response.error().message.find("exceeds"), std::string::npos)
      << response.error().message;
}

TEST_F(CurlTransportTest, MalformedHeaderIsRefusedWithoutQuotingIt) {
  HttpRequest request = get(url("/echo"));
  request.headers = {{"Authorization", std::string("Bearer ") + kSecret + "\r\nX-Injected: 1"}};

  Expected<HttpResponse> response = transport_->send(request);

  ASSERT_FALSE(response);
  EXPECT_EQ(response.error().code, ErrorCode::kNetwork);
  EXPECT_EQ(response.error().message.find(kSecret), std::string::npos);
  EXPECT_EQ(requests_seen_.load(), 0);
}

TEST_F(CurlTransportTest, AuthorizationValueNeverAppearsInErrorMessages) {
  const int port = unused_port();
  ASSERT_GT(port, 0);
  HttpRequest timing_out = get(url("/block"));
  timing_out.timeout = milliseconds(100);
  const std::vector<HttpRequest> failing = {
      get("http://127.0.0.1:" + std::to_string(port) + "/"),        // refused
      get("http://example.com/"),                                   // plain http refused
      get("https://127.0.0.1:" + std::to_string(port_) + "/echo"),  // TLS to a plain server
      timing_out,
  };

  for (HttpRequest request : failing) {
    request.headers = {{"Authorization", std::string("Bearer ") + kSecret}};
    Expected<HttpResponse> response = transport_->send(request);

    ASSERT_FALSE(response) << request.url;
    EXPECT_EQ(response.error().message.find(kSecret), std::string::npos)
        << response.error().message;
  }
}

TEST(IsLoopbackUrl, AcceptsOnlyHttpUrlsWhoseHostIsLoopback) {
  struct Case {
    const char* url;
    bool loopback;
  };
  const Case cases[] = {
      {"http://127.0.0.1/", true},
      {"http://127.0.0.1:12111/v1/billing/meter_events", true},
      {"https://127.0.0.1", true},
      {"http://127.1.2.3:80/", true},
      {"http://localhost", true},
      {"HTTP://LocalHost:8080/x", true},
      {"http://[::1]:12111/", true},
      {"http://[::1]", true},
      {"http://127.0.0.1@evil.com/", false},     // userinfo: the host is evil.com
      {"http://127.0.0.1:80@evil.com/", false},  // userinfo with a colon
      {"http://127.0.0.1\\@evil.com/", false},   // backslash is not a delimiter to curl
      {"http://user@127.0.0.1/", false},         // any userinfo is refused
      {"http://localhost.evil.com/", false},
      {"http://127.0.0.1.evil.com/", false},
      {"http://evil.com/127.0.0.1", false},
      {"http://evil.com/?host=127.0.0.1", false},
      {"http://evil.com#@127.0.0.1", false},
      {"http://128.0.0.1/", false},
      {"http://[::2]/", false},
      {"ftp://127.0.0.1/", false},
      {"127.0.0.1", false},
      {"localhost:8080", false},
      {"", false},
      {"http://127.0.0.1:99999999/", false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(is_loopback_url(c.url), c.loopback) << c.url;
  }
}

TEST(HttpResponseHeader, FindsTheFirstHeaderOfThatNameIgnoringCase) {
  HttpResponse response;
  response.headers = {{"request-id", "req_1"}, {"Retry-After", "3"}, {"request-id", "req_2"}};

  EXPECT_EQ(response.header("Request-Id"), "req_1");
  EXPECT_EQ(response.header("retry-after"), "3");
  EXPECT_EQ(response.header("absent"), "");
}

}  // namespace
}  // namespace stripe_billing
