// Drops the TCP connection a request arrived on, so the client gets not one byte of an answer,
// as when a proxy or the network fails. cpp-httplib 0.11 gives handlers no access to their
// socket, so it is found among the process's descriptors (/proc/self/fd) by its two endpoints and
// shut down in both directions; httplib's own write then fails and httplib closes the descriptor
// as usual. Call it only from the thread handling that request: that thread owns the connection
// until the handler returns, so the descriptor cannot be closed and reused meanwhile.
#pragma once

#include <string>

namespace stripe_emulator {

struct ConnectionEndpoints {
  std::string local_addr;
  int local_port = -1;
  std::string remote_addr;
  int remote_port = -1;
};

// False when no such connection was found (then nothing was done).
bool drop_connection(const ConnectionEndpoints& connection);

}  // namespace stripe_emulator
