// Stripe's billing meters and the meter events sent to them, over v1, the v2 stream and v2 meter
// events, and what Stripe counts of them. It enforces what Stripe enforces:
//   - synchronously, on v1 and v2 meter events (400): a timestamp within the past 35 days and at
//     most 5 minutes ahead, a numeric value of at most 15 significant digits, an identifier not
//     used within the past 24 hours (answered with Stripe-Should-Retry: false). v1 errors name
//     the parameter; v2 ones carry a code instead (timestamp_too_far_in_past,
//     timestamp_in_future, payload_invalid_value, duplicate_meter_event);
//   - asynchronously, on all three: an event whose name has no active meter, whose payload lacks
//     the meter's customer key, names an unknown customer, lacks a numeric value or lacks one of
//     the meter's dimension payload keys (and, on the stream, whose timestamp is out of that
//     window) is accepted but not counted; it keeps the code of Stripe's meter error report. A
//     stream event whose identifier was used within 24 hours is ignored. A test may also fail an
//     accepted event later (reject), as Stripe's asynchronous validation can. Failed events await
//     an error report until take_unreported hands them out.
// Customers are looked up in the Store, which also gives the clock.
// Thread-safe: one mutex, every method is atomic; answers are copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "api_error.h"
#include "store.h"
#include "stripe_emulator/emulator.h"

namespace stripe_emulator {

struct Meter {
  std::string id;
  std::int64_t created = 0;
  std::string display_name;
  std::string event_name;
  std::string customer_key = "stripe_customer_id";
  std::string value_key = "value";
  std::string formula = "sum";  // sum | count | last
  std::string status = "active";
  std::vector<std::string> dimension_keys;  // dimension_payload_keys: every event must carry them
};

struct MeterEvent {
  MeterEventRecord record;
  std::int64_t created = 0;  // when the emulator received it
  bool reported = false;     // failed, and already in an error report
};

struct NewMeterEvent {
  std::string event_name;
  std::string identifier;  // empty: the emulator generates one, as Stripe does
  std::map<std::string, std::string> payload;
  std::optional<std::int64_t> timestamp;  // absent: now
};

struct MeterSummary {
  std::int64_t start_time = 0;
  std::int64_t end_time = 0;
  double aggregated_value = 0;
};

class MeterStore {
 public:
  explicit MeterStore(const Store& store);

  // Errors name the parameters of POST /v1/billing/meters.
  Expected<Meter> add_meter(Meter meter);
  std::optional<Meter> meter(const std::string& id) const;
  std::vector<Meter> meters() const;  // newest first

  // The payload key that names the customer of events called `event_name`: the active meter's,
  // or stripe_customer_id when no meter is active on that name.
  std::string customer_key(const std::string& event_name) const;

  Expected<MeterEvent> record_v1(NewMeterEvent event);
  // POST /v2/billing/meter_events: v1's synchronous checks, answered with v2 error codes.
  Expected<MeterEvent> record_v2_event(NewMeterEvent event);
  void record_v2(NewMeterEvent event);  // the stream
  // Cancels the event so that it is no longer counted; errors name cancel[identifier].
  Expected<MeterEvent> cancel(const std::string& event_name, const std::string& identifier);

  // One summary over [start_time, end_time), or with `window` seconds (3600, 86400) one per
  // window that has counted events, newest first.
  std::vector<MeterSummary> summaries(const Meter& meter, const std::string& customer_id,
                                      std::int64_t start_time, std::int64_t end_time,
                                      std::optional<std::int64_t> window) const;

  // Fails the counted (not cancelled, not failed) event `identifier` with `code`: it stops
  // counting. False when there is no such event.
  bool reject(const std::string& identifier, const std::string& code);
  // The failed events `wanted` picks that were in no report yet, oldest first, now marked
  // reported.
  std::vector<MeterEvent> take_unreported(
      const std::function<bool(const MeterEventRecord&)>& wanted);

  std::vector<MeterEventRecord> events() const;  // oldest first
  std::map<std::string, double> totals_by_customer(const std::string& event_name,
                                                   const std::string& group_key,
                                                   const std::string& group_value) const;
  // {customer, value of keys[0], …} -> the meter's aggregate (see Emulator).
  std::map<std::vector<std::string>, double> totals_by_dimension(
      const std::string& event_name, const std::string& customer_id,
      const std::vector<std::string>& keys) const;

 private:
  enum class Api { kV1, kV2 };
  // The synchronous refusal of `event`, worded for `api`; the caller holds the mutex.
  std::optional<ApiError> synchronous_error(const NewMeterEvent& event, std::int64_t now,
                                            Api api) const;
  const Meter* active_meter(const std::string& event_name) const;
  bool seen_recently(const std::string& identifier, std::int64_t now) const;
  MeterEvent& keep(NewMeterEvent event, const std::string& source, std::int64_t now);
  std::string error_report_code(const MeterEventRecord& record, std::int64_t now) const;
  std::vector<const MeterEvent*> counted(const Meter& meter, const std::string& customer_id) const;

  const Store& store_;
  mutable std::mutex mutex_;
  std::map<std::string, Meter> meters_;
  std::vector<std::string> meter_order_;
  std::vector<MeterEvent> events_;                           // oldest first
  std::unordered_map<std::string, std::int64_t> last_seen_;  // identifier -> when last recorded
};

}  // namespace stripe_emulator
