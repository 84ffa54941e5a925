#include "event_log.h"

#include "api_error.h"
#include "ids.h"
#include "rfc3339.h"

namespace stripe_emulator {

using nlohmann::json;

EventLog::EventLog(Clock clock) : clock_(std::move(clock)) {}

EmittedEvent EventLog::add_snapshot(const std::string& type, json object,
                                    std::size_t pending_webhooks) {
  EmittedEvent event{new_id("evt_test_", 24), type, "", nullptr};
  event.payload = dump({{"id", event.id},
                        {"object", "event"},
                        {"api_version", kEventApiVersion},
                        {"created", clock_()},
                        {"data", {{"object", std::move(object)}}},
                        {"livemode", false},
                        {"pending_webhooks", pending_webhooks},
                        {"request", {{"id", nullptr}, {"idempotency_key", nullptr}}},
                        {"type", type}});
  return keep(std::move(event));
}

EmittedEvent EventLog::add_thin(const std::string& type, json related_object, json data) {
  EmittedEvent event{new_id("evt_test_", 24), type, "", nullptr};
  json thin = {{"id", event.id},    {"object", "v2.core.event"},
               {"type", type},      {"created", to_rfc3339(clock_())},
               {"livemode", false}, {"context", nullptr},
               {"reason", nullptr}, {"related_object", std::move(related_object)}};
  event.payload = dump(thin);
  thin["data"] = std::move(data);
  event.v2_event = std::move(thin);
  return keep(std::move(event));
}

std::optional<EmittedEvent> EventLog::find(const std::string& id) const {
  std::lock_guard lock(mutex_);
  const auto found = events_.find(id);
  if (found == events_.end()) return std::nullopt;
  return found->second;
}

EmittedEvent EventLog::keep(EmittedEvent event) {
  std::lock_guard lock(mutex_);
  events_[event.id] = event;
  return event;
}

}  // namespace stripe_emulator
