// The v1 billing credit operations the emulator serves, by Stripe's operationId (see endpoints.h
// for the contract they share): a customer's credit balance summary and a credit grant. Grants
// and the invoices that apply them are made by test controls (Emulator::create_credit_grant,
// consume_credits), not over the API.
#pragma once

#include <map>
#include <string>

#include "credit_store.h"
#include "endpoints.h"
#include "store.h"

namespace stripe_emulator {

std::map<std::string, Endpoint> make_credit_endpoints(const CreditStore& credits,
                                                      const Store& store);

}  // namespace stripe_emulator
