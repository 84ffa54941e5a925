// The v1 billing meter operations the emulator serves, by Stripe's operationId (see endpoints.h
// for the contract they share): meters, meter events, their summaries and cancellations.
#pragma once

#include <map>
#include <string>

#include "endpoints.h"
#include "meter_store.h"
#include "store.h"

namespace stripe_emulator {

std::map<std::string, Endpoint> make_meter_endpoints(MeterStore& meters, const Store& store);

}  // namespace stripe_emulator
