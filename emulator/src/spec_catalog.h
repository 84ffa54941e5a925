// The operations the emulator knows, read from Stripe's OpenAPI request schemas (the 2022 subset
// and the emulator's extension file, both compiled in). For each operation it builds one object
// schema covering everything a request may carry, query parameters and form body alike, so a
// request is validated with one call. Immutable after construction; safe to share across threads.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stripe_emulator {

struct Operation {
  std::string method;         // GET, POST, ...
  std::string path_template;  // /v1/customers/{customer}
  std::string operation_id;   // GetCustomersCustomer
  nlohmann::json params_schema;
};

struct RouteMatch {
  const Operation* operation = nullptr;
  std::map<std::string, std::string> path_params;
};

class SpecCatalog {
 public:
  explicit SpecCatalog(const std::vector<std::string_view>& spec_texts);
  static const SpecCatalog& embedded();

  // The operation whose template matches `path`; literal segments win over placeholders, so
  // /v1/customers/search is not taken for /v1/customers/{customer}.
  std::optional<RouteMatch> match(std::string_view method, std::string_view path) const;
  const std::vector<Operation>& operations() const { return operations_; }

 private:
  std::vector<Operation> operations_;
};

}  // namespace stripe_emulator
