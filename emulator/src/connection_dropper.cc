#include "connection_dropper.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdlib>
#include <memory>

namespace stripe_emulator {
namespace {

struct Endpoint {
  std::string addr;
  int port = -1;
};

using NameGetter = int (*)(int, sockaddr*, socklen_t*);

Endpoint endpoint_of(int fd, NameGetter get_name) {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (get_name(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return {};
  char text[INET6_ADDRSTRLEN] = {};
  if (storage.ss_family == AF_INET) {
    const auto* ipv4 = reinterpret_cast<const sockaddr_in*>(&storage);
    inet_ntop(AF_INET, &ipv4->sin_addr, text, sizeof(text));
    return {text, ntohs(ipv4->sin_port)};
  }
  if (storage.ss_family == AF_INET6) {
    const auto* ipv6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    inet_ntop(AF_INET6, &ipv6->sin6_addr, text, sizeof(text));
    return {text, ntohs(ipv6->sin6_port)};
  }
  return {};
}

bool is_connection(int fd, const ConnectionEndpoints& connection) {
  const auto local = endpoint_of(fd, ::getsockname);
  if (local.port != connection.local_port) return false;
  const auto remote = endpoint_of(fd, ::getpeername);
  return remote.port == connection.remote_port && remote.addr == connection.remote_addr;
}

}  // namespace

bool drop_connection(const ConnectionEndpoints& connection) {
  const std::unique_ptr<DIR, int (*)(DIR*)> descriptors(opendir("/proc/self/fd"), closedir);
  if (!descriptors) return false;
  while (const auto* entry = readdir(descriptors.get())) {
    char* end = nullptr;
    const auto fd = static_cast<int>(std::strtol(entry->d_name, &end, 10));
    if (*end != '\0' || end == entry->d_name || fd == dirfd(descriptors.get())) continue;
    if (is_connection(fd, connection)) return ::shutdown(fd, SHUT_RDWR) == 0;
  }
  return false;
}

}  // namespace stripe_emulator
