#include "stripe_billing/stripe_logger.h"

namespace stripe_billing {
namespace {

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now(); }
};

}  // namespace

std::shared_ptr<Clock> Clock::system() {
  static const auto clock = std::make_shared<SystemClock>();
  return clock;
}

}  // namespace stripe_billing
