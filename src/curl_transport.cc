// libcurl implementation of HttpTransport, used in production to reach api.stripe.com.
//
// Connections: the transport keeps a pool of Connection slots. A slot is one easy handle driven
// by its own multi handle; the multi handle owns the connection cache, so a slot keeps its
// TCP/TLS connection alive between requests. send() takes an idle slot (or makes one) and
// hands it back afterwards: concurrent callers each get their own, sequential callers reuse a
// warm connection.
//
// Why we drive a multi handle instead of calling curl_easy_perform: easy_perform only looks at
// the progress callback when its poll wakes up, which can be a second later. Driving the transfer
// ourselves lets abort_in_flight() wake every in-flight poll (curl_multi_wakeup), and the
// progress callback then aborts the transfer at once.
//
// Security: TLS peer and host verification are always on; plain http:// is refused unless the
// host is loopback (decided by curl's own URL parser, and the very same parsed URL is what curl
// connects to); redirects are not followed; the response body is capped at 16 MiB and the
// response headers at 1 MiB; error messages never quote request header values.
//
// Proxies: an https request goes through the proxy libcurl picks from the environment
// (https_proxy / HTTPS_PROXY, all_proxy / ALL_PROXY, no_proxy to bypass), as a CONNECT tunnel, so
// the proxy sees only TLS. A plain http request never uses a proxy, whatever the environment says:
// it goes only to loopback, and a proxy need not be on loopback, so it would read the API key in
// clear text.
//
// Threads: send() may run on any number of threads at once; abort_in_flight() from any thread.
// curl_global_init runs once per process (std::call_once); curl_global_cleanup is never called,
// since the host process may use libcurl itself. Nothing is logged.
#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "stripe_billing/http_transport.h"

namespace stripe_billing {
namespace {

constexpr std::size_t kMaxResponseBodyBytes = std::size_t{16} << 20;
constexpr std::size_t kMaxResponseHeaderBytes = std::size_t{1} << 20;
constexpr std::size_t kMaxIdleConnections = 16;
// Request header values (or their space-separated words) at least this long are scrubbed from
// error messages; secrets are long, and scrubbing "1" or "GET" would mangle every message.
constexpr std::size_t kMinRedactedLength = 8;
// curl_multi_poll shortens this to curl's own next timer, and abort_in_flight wakes it.
constexpr int kMaxPollMilliseconds = 1000;

// ---- Errors -------------------------------------------------------------------------------------

Error make_error(ErrorCode code, std::string message) {
  Error error;
  error.code = code;
  error.message = std::move(message);
  return error;
}

Error aborted_error() {
  return make_error(ErrorCode::kAborted, "transfer aborted: the transport is shutting down");
}

void replace_all(std::string& text, std::string_view secret) {
  static constexpr std::string_view kRedacted = "[redacted]";
  for (std::size_t at = text.find(secret); at != std::string::npos;
       at = text.find(secret, at + kRedacted.size())) {
    text.replace(at, secret.size(), kRedacted);
  }
}

// Belt and braces: curl's messages do not quote request headers, but the API key travels in one,
// so scrub every header value (and every long word of it, e.g. the token of "Bearer <token>").
std::string redact(std::string message, const Headers& request_headers) {
  for (const auto& header : request_headers) {
    std::string_view value = header.second;
    if (value.size() >= kMinRedactedLength) replace_all(message, value);
    for (std::size_t start = 0; start < value.size();) {
      std::size_t end = std::min(value.find(' ', start), value.size());
      std::string_view word = value.substr(start, end - start);
      if (word.size() >= kMinRedactedLength) replace_all(message, word);
      start = end + 1;
    }
  }
  return message;
}

// ---- Text helpers -------------------------------------------------------------------------------

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return ascii_lower(x) == ascii_lower(y);
         });
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), ascii_lower);
  return out;
}

std::string_view trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  std::size_t first = text.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(kSpace) - first + 1);
}

// RFC 9110 "token": what a method or a header name may be made of.
bool is_token(std::string_view text) {
  constexpr std::string_view kSymbols = "!#$%&'*+-.^_`|~";
  return !text.empty() && std::all_of(text.begin(), text.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           kSymbols.find(c) != std::string_view::npos;
  });
}

bool has_line_break_or_nul(std::string_view text) {
  return text.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

// ---- libcurl setup ------------------------------------------------------------------------------

CURLcode global_init_result() {
  static std::once_flag once;
  static CURLcode result = CURLE_FAILED_INIT;
  std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  return result;
}

// ---- URLs ---------------------------------------------------------------------------------------

struct CurlUrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
using CurlUrl = std::unique_ptr<CURLU, CurlUrlDeleter>;

struct CurlFreeDeleter {
  void operator()(char* text) const { curl_free(text); }
};

// Parsed by curl's own parser, so that what we check is what curl connects to. nullptr when
// curl rejects the URL or it has no scheme.
CurlUrl parse_url(std::string_view text) {
  if (global_init_result() != CURLE_OK) return nullptr;
  if (text.find('\0') != std::string_view::npos) return nullptr;
  CurlUrl url(curl_url());
  if (!url || curl_url_set(url.get(), CURLUPART_URL, std::string(text).c_str(), 0) != CURLUE_OK) {
    return nullptr;
  }
  return url;
}

// Copies one part of `url` into *out; false when the URL has no such part.
bool url_part(CURLU* url, CURLUPart part, std::string* out) {
  char* raw = nullptr;
  if (curl_url_get(url, part, &raw, 0) != CURLUE_OK || raw == nullptr) return false;
  std::unique_ptr<char, CurlFreeDeleter> owned(raw);
  *out = raw;
  return true;
}

bool is_loopback_ipv4(std::string_view host) {
  int octets = 0;
  int first = -1;
  while (true) {
    std::size_t dot = host.find('.');
    std::string_view octet = host.substr(0, dot);
    if (octet.empty() || octet.size() > 3 ||
        !std::all_of(octet.begin(), octet.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return false;
    }
    int value = std::stoi(std::string(octet));
    if (value > 255) return false;
    if (first < 0) first = value;
    ++octets;
    if (dot == std::string_view::npos) break;
    host.remove_prefix(dot + 1);
  }
  return octets == 4 && first == 127;
}

bool is_loopback_host(std::string_view host) {
  return iequals(host, "localhost") || host == "[::1]" || is_loopback_ipv4(host);
}

bool is_http_or_https(const std::string& scheme) {
  return iequals(scheme, "http") || iequals(scheme, "https");
}

// A URL with userinfo is never loopback, whatever its host: "http://127.0.0.1@evil.com/" is a
// classic disguise, and no legitimate caller of ours needs userinfo.
bool is_loopback(CURLU* url) {
  std::string scheme, host, ignored;
  if (!url_part(url, CURLUPART_SCHEME, &scheme) || !is_http_or_https(scheme)) return false;
  if (url_part(url, CURLUPART_USER, &ignored) || url_part(url, CURLUPART_PASSWORD, &ignored)) {
    return false;
  }
  return url_part(url, CURLUPART_HOST, &host) && is_loopback_host(host);
}

// ---- Request headers ----------------------------------------------------------------------------

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using HeaderList = std::unique_ptr<curl_slist, SlistDeleter>;

bool append(HeaderList& list, const std::string& line) {
  curl_slist* head = curl_slist_append(list.get(), line.c_str());
  if (head == nullptr) return false;
  if (!list) list.reset(head);  // curl appends in place: only the first append makes a new head
  return true;
}

// Error messages name the offending header but never quote its value.
Expected<HeaderList> build_header_list(const Headers& headers) {
  HeaderList list;
  for (const auto& [name, value] : headers) {
    if (!is_token(name) || has_line_break_or_nul(value)) {
      return make_error(ErrorCode::kNetwork,
                        "request header " + (is_token(name) ? "'" + name + "'" : std::string()) +
                            " is malformed (bad name, or CR/LF/NUL in its value)");
    }
    // "Name;" is curl's way of sending a header with an empty value.
    if (!append(list, value.empty() ? name + ";" : name + ": " + value)) {
      return make_error(ErrorCode::kNetwork, "out of memory building request headers");
    }
  }
  // Stops curl from sending "Expect: 100-continue" and waiting for the go-ahead on large bodies.
  if (!append(list, "Expect:")) {
    return make_error(ErrorCode::kNetwork, "out of memory building request headers");
  }
  return Expected<HeaderList>(std::move(list));
}

// ---- Callbacks ----------------------------------------------------------------------------------

// What the callbacks of one transfer write into.
struct Transfer {
  explicit Transfer(const std::atomic<bool>* aborted_flag) : aborted(aborted_flag) {}

  const std::atomic<bool>* aborted;
  HttpResponse response;
  std::size_t header_bytes = 0;
  bool body_too_large = false;
  bool headers_too_large = false;
  char error_buffer[CURL_ERROR_SIZE] = {};
};

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const std::size_t bytes = size * count;
  transfer->header_bytes += bytes;
  if (transfer->header_bytes > kMaxResponseHeaderBytes) {
    transfer->headers_too_large = true;
    return 0;
  }
  std::string_view line = trim(std::string_view(data, bytes));
  Headers& headers = transfer->response.headers;
  if (line.rfind("HTTP/", 0) == 0) {
    // A new status line: keep only the final response's headers (not 100 Continue's, nor a
    // proxy's CONNECT answer).
    headers.clear();
  } else if (!line.empty() && (data[0] == ' ' || data[0] == '\t')) {
    if (!headers.empty()) headers.back().second.append(" ").append(line);  // obsolete folding
  } else if (std::size_t colon = line.find(':'); colon != std::string_view::npos) {
    headers.emplace_back(lowercase(trim(line.substr(0, colon))),
                         std::string(trim(line.substr(colon + 1))));
  }
  return bytes;
}

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const std::size_t bytes = size * count;
  if (bytes > kMaxResponseBodyBytes - transfer->response.body.size()) {
    transfer->body_too_large = true;
    return 0;
  }
  transfer->response.body.append(data, bytes);
  return bytes;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<Transfer*>(user)->aborted->load() ? 1 : 0;
}

// ---- Connection ---------------------------------------------------------------------------------

// One easy handle and the multi handle that drives it and caches its connections.
class Connection {
 public:
  static std::unique_ptr<Connection> create() {
    CURLM* multi = curl_multi_init();
    CURL* easy = curl_easy_init();
    if (multi == nullptr || easy == nullptr) {
      if (easy != nullptr) curl_easy_cleanup(easy);
      if (multi != nullptr) curl_multi_cleanup(multi);
      return nullptr;
    }
    return std::unique_ptr<Connection>(new Connection(multi, easy));
  }

  ~Connection() {
    curl_easy_cleanup(easy_);
    curl_multi_cleanup(multi_);
  }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  CURL* easy() const { return easy_; }
  CURLM* multi() const { return multi_; }

 private:
  Connection(CURLM* multi, CURL* easy) : multi_(multi), easy_(easy) {}

  CURLM* multi_;
  CURL* easy_;
};

struct TransferResult {
  CURLcode code = CURLE_OK;
  CURLMcode multi_code = CURLM_OK;
};

// Runs the transfer set up on `connection`'s easy handle to its end. The progress callback
// aborts it when `aborted` is set; the check in the loop covers phases that do not call it.
TransferResult run(Connection& connection, const std::atomic<bool>& aborted) {
  CURLM* multi = connection.multi();
  TransferResult result;
  result.multi_code = curl_multi_add_handle(multi, connection.easy());
  if (result.multi_code != CURLM_OK) return result;
  while (true) {
    int running = 0;
    result.multi_code = curl_multi_perform(multi, &running);
    if (result.multi_code != CURLM_OK) break;
    int queued = 0;
    CURLMsg* message = nullptr;
    bool done = false;
    while (!done && (message = curl_multi_info_read(multi, &queued)) != nullptr) {
      if (message->msg == CURLMSG_DONE) {
        result.code = message->data.result;
        done = true;
      }
    }
    if (done) break;
    if (aborted.load()) {
      result.code = CURLE_ABORTED_BY_CALLBACK;
      break;
    }
    if (running == 0) {  // cannot happen: a finished transfer always leaves a DONE message
      result.code = CURLE_FAILED_INIT;
      break;
    }
    result.multi_code = curl_multi_poll(multi, nullptr, 0, kMaxPollMilliseconds, nullptr);
    if (result.multi_code != CURLM_OK) break;
  }
  curl_multi_remove_handle(multi, connection.easy());
  return result;
}

long clamp_milliseconds(std::chrono::milliseconds duration) {
  // 0 means "no timeout" to curl; the smallest real timeout is 1 ms.
  return static_cast<long>(std::clamp<std::chrono::milliseconds::rep>(
      duration.count(), 1, std::numeric_limits<long>::max()));
}

// ---- The transport ------------------------------------------------------------------------------

class CurlTransport final : public HttpTransport {
 public:
  explicit CurlTransport(CurlTransportOptions options) : options_(std::move(options)) {}

  Expected<HttpResponse> send(const HttpRequest& request) override {
    if (aborted_.load()) return aborted_error();
    if (global_init_result() != CURLE_OK) {
      return make_error(ErrorCode::kNetwork, "curl_global_init failed");
    }
    CurlUrl url = parse_url(request.url);
    if (!url) return make_error(ErrorCode::kNetwork, "malformed request URL");
    if (Expected<void> allowed = check_scheme(url.get()); !allowed) return allowed.error();
    if (!is_token(request.method)) {
      return make_error(ErrorCode::kNetwork, "malformed request method");
    }
    Expected<HeaderList> headers = build_header_list(request.headers);
    if (!headers) return headers.error();

    Lease lease(*this);
    if (!lease.connection()) {
      return make_error(ErrorCode::kNetwork, "out of memory creating a curl handle");
    }
    if (aborted_.load()) return aborted_error();  // after registering, so no wakeup is lost
    Transfer transfer(&aborted_);
    if (CURLcode code = configure(lease.connection()->easy(), request, url.get(),
                                  headers.value().get(), is_plain_http(url.get()), transfer);
        code != CURLE_OK) {
      return make_error(ErrorCode::kNetwork,
                        std::string("cannot set up the request: ") + curl_easy_strerror(code));
    }
    return finish(run(*lease.connection(), aborted_), lease.connection()->easy(), request,
                  transfer);
  }

  void abort_in_flight() override {
    aborted_.store(true);
    std::lock_guard<std::mutex> lock(mutex_);
    for (Connection* connection : in_flight_) curl_multi_wakeup(connection->multi());
  }

 private:
  // Takes a connection from the pool for one send() and gives it back at scope exit.
  class Lease {
   public:
    explicit Lease(CurlTransport& owner) : owner_(owner), connection_(owner.acquire()) {}
    ~Lease() {
      if (connection_) owner_.release(std::move(connection_));
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Connection* connection() const { return connection_.get(); }

   private:
    CurlTransport& owner_;
    std::unique_ptr<Connection> connection_;
  };

  std::unique_ptr<Connection> acquire() {
    std::unique_ptr<Connection> connection;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!idle_.empty()) {
        connection = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (!connection) connection = Connection::create();
    if (connection) {
      std::lock_guard<std::mutex> lock(mutex_);
      in_flight_.push_back(connection.get());
    }
    return connection;
  }

  void release(std::unique_ptr<Connection> connection) {
    // Drops the options pointing into this send()'s request, URL, headers and callbacks' state.
    curl_easy_reset(connection->easy());
    std::unique_ptr<Connection> surplus;  // destroyed outside the lock
    std::lock_guard<std::mutex> lock(mutex_);
    in_flight_.erase(std::find(in_flight_.begin(), in_flight_.end(), connection.get()));
    if (!aborted_.load() && idle_.size() < kMaxIdleConnections) {
      idle_.push_back(std::move(connection));
    } else {
      surplus = std::move(connection);
    }
  }

  static bool is_plain_http(CURLU* url) {
    std::string scheme;
    return url_part(url, CURLUPART_SCHEME, &scheme) && iequals(scheme, "http");
  }

  static Expected<void> check_scheme(CURLU* url) {
    std::string scheme;
    if (!url_part(url, CURLUPART_SCHEME, &scheme) || !is_http_or_https(scheme)) {
      return make_error(ErrorCode::kNetwork, "unsupported URL scheme: only http and https");
    }
    if (iequals(scheme, "http") && !is_loopback(url)) {
      return make_error(ErrorCode::kNetwork,
                        "refusing plain http:// to a non-loopback host; use https:// (http:// is "
                        "allowed only to 127.0.0.1, localhost or [::1])");
    }
    return {};
  }

  CURLcode configure(CURL* easy, const HttpRequest& request, CURLU* url, curl_slist* headers,
                     bool plain_http, Transfer& transfer) const {
    curl_easy_reset(easy);  // keeps the connection cache and TLS sessions, drops old options
    CURLcode code = CURLE_OK;
    auto check = [&code](CURLcode result) {
      if (code == CURLE_OK) code = result;
    };
    check(curl_easy_setopt(easy, CURLOPT_CURLU, url));
    check(curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L));
    check(curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https"));
    if (plain_http) {
      // "" overrides every proxy variable of the environment; "*" exempts every host besides.
      check(curl_easy_setopt(easy, CURLOPT_PROXY, ""));
      check(curl_easy_setopt(easy, CURLOPT_NOPROXY, "*"));
    }
    // Redirects are not followed; curl refuses an empty list here, so name the strictest one.
    check(curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L));
    check(curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "https"));
    check(curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L));
    check(curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L));
    check(curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                           clamp_milliseconds(options_.connect_timeout)));
    check(curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, clamp_milliseconds(request.timeout)));
    if (!options_.user_agent.empty()) {
      check(curl_easy_setopt(easy, CURLOPT_USERAGENT, options_.user_agent.c_str()));
    }
    check(curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers));
    check(set_method_and_body(easy, request));
    check(curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header));
    check(curl_easy_setopt(easy, CURLOPT_HEADERDATA, &transfer));
    check(curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body));
    check(curl_easy_setopt(easy, CURLOPT_WRITEDATA, &transfer));
    check(curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                           static_cast<curl_off_t>(kMaxResponseBodyBytes)));
    check(curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L));
    check(curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, on_progress));
    check(curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &transfer));
    check(curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer.error_buffer));
    return code;
  }

  static CURLcode set_method_and_body(CURL* easy, const HttpRequest& request) {
    if (request.method == "GET" && request.body.empty()) {
      return curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    }
    CURLcode code = CURLE_OK;
    if (request.method == "POST" || !request.body.empty()) {
      code = curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                              static_cast<curl_off_t>(request.body.size()));
      if (code == CURLE_OK) code = curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data());
    }
    if (code == CURLE_OK && request.method != "POST") {
      code = curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
    return code;
  }

  static Expected<HttpResponse> finish(TransferResult result, CURL* easy,
                                       const HttpRequest& request, Transfer& transfer) {
    if (result.multi_code != CURLM_OK) {
      return make_error(ErrorCode::kNetwork,
                        std::string("curl multi: ") + curl_multi_strerror(result.multi_code));
    }
    if (result.code == CURLE_OK) {
      long status = 0;
      curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
      transfer.response.status = static_cast<int>(status);
      return std::move(transfer.response);
    }
    if (result.code == CURLE_ABORTED_BY_CALLBACK) return aborted_error();
    if (transfer.body_too_large || result.code == CURLE_FILESIZE_EXCEEDED) {
      return make_error(ErrorCode::kNetwork, "response body exceeds the limit of " +
                                                 std::to_string(kMaxResponseBodyBytes) + " bytes");
    }
    if (transfer.headers_too_large) {
      return make_error(ErrorCode::kNetwork, "response headers exceed the limit of " +
                                                 std::to_string(kMaxResponseHeaderBytes) +
                                                 " bytes");
    }
    std::string message = curl_easy_strerror(result.code);
    if (transfer.error_buffer[0] != '\0') message.append(": ").append(transfer.error_buffer);
    const ErrorCode code =
        result.code == CURLE_OPERATION_TIMEDOUT ? ErrorCode::kTimeout : ErrorCode::kNetwork;
    return make_error(code, redact(std::move(message), request.headers));
  }

  const CurlTransportOptions options_;
  std::atomic<bool> aborted_{false};
  std::mutex mutex_;
  std::vector<std::unique_ptr<Connection>> idle_;  // warm connections, newest last
  std::vector<Connection*> in_flight_;             // woken by abort_in_flight()
};

}  // namespace

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) return value;
  }
  return {};
}

std::unique_ptr<HttpTransport> make_curl_transport(const CurlTransportOptions& options) {
  global_init_result();
  return std::make_unique<CurlTransport>(options);
}

bool is_loopback_url(std::string_view url) {
  CurlUrl parsed = parse_url(url);
  return parsed && is_loopback(parsed.get());
}

}  // namespace stripe_billing
