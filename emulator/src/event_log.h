// The events the emulator emits, in Stripe's two shapes, kept so they can be fetched and
// delivered again:
//   snapshot (v1) events, delivered whole: {"id":"evt_test_…","object":"event","api_version",
//     "created":<unix>,"data":{"object":<the object>},"livemode":false,"pending_webhooks":N,
//     "request":{"id":null,"idempotency_key":null},"type"}
//   thin (v2) events, delivered without data: {"id":"evt_test_…","object":"v2.core.event","type",
//     "created":"<RFC 3339>","livemode":false,"context":null,"reason":null,"related_object"};
//     GET /v2/core/events/{id} answers the same with "data".
// Thread-safe: one mutex; answers are copies.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace stripe_emulator {

// The API version snapshot events are rendered in.
inline constexpr char kEventApiVersion[] = "2025-02-24.acacia";

struct EmittedEvent {
  std::string id;
  std::string type;
  std::string payload;      // the body every delivery of it carries
  nlohmann::json v2_event;  // a thin event's full form (with data); null for snapshot events
};

class EventLog {
 public:
  using Clock = std::function<std::int64_t()>;
  explicit EventLog(Clock clock);

  // `pending_webhooks`: the endpoints it is about to be delivered to.
  EmittedEvent add_snapshot(const std::string& type, nlohmann::json object,
                            std::size_t pending_webhooks);
  // `related_object`: {"id","type","url"} or null.
  EmittedEvent add_thin(const std::string& type, nlohmann::json related_object,
                        nlohmann::json data);
  std::optional<EmittedEvent> find(const std::string& id) const;

 private:
  EmittedEvent keep(EmittedEvent event);

  Clock clock_;
  mutable std::mutex mutex_;
  std::map<std::string, EmittedEvent> events_;
};

}  // namespace stripe_emulator
