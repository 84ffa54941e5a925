#include "credit_endpoints.h"

#include <vector>

#include "form_values.h"
#include "resources.h"

namespace stripe_emulator {
namespace {

using nlohmann::json;

// filter[type]=applicability_scope: every grant (all of them apply to metered prices);
// filter[type]=credit_grant: the one grant filter[credit_grant] names, which must be the
// customer's.
Answer balance_summary(const CreditStore& credits, const Store& store, const ApiCall& call) {
  const auto customer = text(call.params, "customer");
  if (!store.customer(customer)) {
    return to_answer(errors::resource_missing("customer", customer, "customer"));
  }
  const auto& filter = call.params.at("filter");
  auto grants = credits.grants_of(customer);
  if (text(filter, "type") == "credit_grant") {
    const auto id = text(filter, "credit_grant");
    if (id.empty()) return to_answer(errors::parameter_missing("filter[credit_grant]"));
    const auto grant = credits.grant(id);
    if (!grant || grant->customer != customer) {
      return to_answer(
          errors::resource_missing("billing.credit_grant", id, "filter[credit_grant]"));
    }
    grants = {*grant};
  }
  return ok(credit_balance_summary(customer, grants));
}

Answer retrieve_grant(const CreditStore& credits, const ApiCall& call) {
  const auto& id = call.path_params.at("id");
  const auto grant = credits.grant(id);
  if (!grant) return to_answer(errors::resource_missing("billing.credit_grant", id, "id"));
  return ok(*grant);
}

}  // namespace

std::map<std::string, Endpoint> make_credit_endpoints(const CreditStore& credits,
                                                      const Store& store) {
  return {
      {"GetBillingCreditBalanceSummary",
       [&credits, &store](const ApiCall& call) { return balance_summary(credits, store, call); }},
      {"GetBillingCreditGrantsId", bound(credits, retrieve_grant)},
  };
}

}  // namespace stripe_emulator
