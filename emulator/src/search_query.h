// Stripe's search query language for customers, the part a billing integration uses:
//   metadata['litellm_customer_id']:'alice'    email:'a@example.com'    -name:"Bob"
// Clauses are joined by spaces or AND, or all by OR (Stripe does not allow mixing). Values are
// quoted with ' or "; a backslash makes the next character literal (\' and \\). Fields: email,
// name, phone (":" exact and case-insensitive, "~" substring) and metadata['key'] (":" exact).
// Anything else is an invalid_request_error on param "query".
#pragma once

#include <string>
#include <vector>

#include "api_error.h"
#include "store.h"

namespace stripe_emulator {

class CustomerQuery {
 public:
  static Expected<CustomerQuery> parse(const std::string& text);
  bool matches(const Customer& customer) const;

 private:
  struct Clause {
    std::string field;         // email, name, phone or metadata
    std::string metadata_key;  // for metadata
    char op = ':';             // ':' or '~'
    std::string value;
    bool negated = false;
  };

  std::vector<Clause> clauses_;
  bool any_ = false;  // joined by OR
};

}  // namespace stripe_emulator
