// The arithmetic of AdmissionStore::take(), shared by the stores: what is left of the budget,
// what this owner gets of it, and who holds the last piece. The stores read the inputs and write
// the outcome in one transaction.
#pragma once

#include <cstdint>

#include "admission_store.h"

namespace stripe_billing {

struct TakeInputs {
  std::int64_t want = 0;
  std::int64_t budget = 0;
  bool force = false;
  std::int64_t fleet_total = 0;  // granted by live owners, used by dead ones
  std::int64_t fleet_used = 0;
  bool mine_crossing = false;  // this owner holds the last piece already
  bool crossing_free = true;   // nobody alive holds it
};

struct TakeOutcome {
  GrantTaken taken;
  bool set_crossing = false;  // record this owner as the holder of the last piece
};

TakeOutcome decide_take(const TakeInputs& in);

}  // namespace stripe_billing
