#include "batch.h"

namespace stripe_billing {

const char* to_string(Sink sink) noexcept {
  switch (sink) {
    case Sink::kUsageRecord:
      return "usage_record";
    case Sink::kMeterEvent:
      return "meter_event";
  }
  return "unknown";
}

const char* to_string(EventState state) noexcept {
  switch (state) {
    case EventState::kPending:
      return "pending";
    case EventState::kBatched:
      return "sending";
    case EventState::kDelivered:
      return "delivered";
    case EventState::kParked:
      return "parked";
    case EventState::kDead:
      return "dead";
  }
  return "unknown";
}

const char* to_string(BatchKind kind) noexcept {
  switch (kind) {
    case BatchKind::kUsageRecord:
      return "usage_record";
    case BatchKind::kMeterEvent:
      return "meter_event";
    case BatchKind::kMeterStream:
      return "meter_event_stream";
  }
  return "unknown";
}

Sink sink_of(BatchKind kind) noexcept {
  return kind == BatchKind::kUsageRecord ? Sink::kUsageRecord : Sink::kMeterEvent;
}

RequestKind request_kind(BatchKind kind) noexcept {
  switch (kind) {
    case BatchKind::kUsageRecord:
      return RequestKind::kUsageRecord;
    case BatchKind::kMeterEvent:
      return RequestKind::kMeterEvent;
    case BatchKind::kMeterStream:
      return RequestKind::kMeterStream;
  }
  return RequestKind::kUsageRecord;
}

}  // namespace stripe_billing
