#include "search_query.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <string_view>

namespace stripe_emulator {
namespace {

ApiError query_error(const std::string& problem) {
  return errors::invalid_request("Search query is malformed: " + problem +
                                     ". See https://stripe.com/docs/search#search-query-language.",
                                 "query");
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

class Scanner {
 public:
  explicit Scanner(std::string_view text) : text_(text) {}

  bool at_end() const { return at_ >= text_.size(); }
  std::size_t position() const { return at_; }
  void rewind(std::size_t position) { at_ = position; }
  char peek() const { return at_end() ? '\0' : text_[at_]; }
  bool take(char c) {
    if (peek() != c) return false;
    ++at_;
    return true;
  }
  bool skip_spaces() {
    const auto start = at_;
    while (!at_end() && text_[at_] == ' ') ++at_;
    return at_ > start;
  }
  std::string word() {
    const auto start = at_;
    while (!at_end() &&
           (std::isalnum(static_cast<unsigned char>(text_[at_])) || text_[at_] == '_')) {
      ++at_;
    }
    return std::string(text_.substr(start, at_ - start));
  }
  std::optional<std::string> quoted() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') return std::nullopt;
    ++at_;
    std::string value;
    while (!at_end() && text_[at_] != quote) {
      if (text_[at_] == '\\' && at_ + 1 < text_.size()) ++at_;
      value += text_[at_++];
    }
    if (!take(quote)) return std::nullopt;
    return value;
  }

 private:
  std::string_view text_;
  std::size_t at_ = 0;
};

std::string at(const Scanner& scanner) {
  return "at position " + std::to_string(scanner.position());
}

}  // namespace

Expected<CustomerQuery> CustomerQuery::parse(const std::string& text) {
  static const std::vector<std::string> kTextFields = {"email", "name", "phone"};
  CustomerQuery query;
  std::optional<bool> joined_by_or;
  Scanner scanner(text);
  scanner.skip_spaces();
  while (!scanner.at_end()) {
    Clause clause;
    clause.negated = scanner.take('-');
    clause.field = scanner.word();
    if (clause.field == "metadata") {
      auto key = scanner.take('[') ? scanner.quoted() : std::nullopt;
      if (!key || !scanner.take(']')) return query_error("expected metadata['key'] " + at(scanner));
      clause.metadata_key = *key;
    } else if (std::find(kTextFields.begin(), kTextFields.end(), clause.field) ==
               kTextFields.end()) {
      return query_error("'" + clause.field + "' is not a supported search field for customers");
    }
    if (scanner.take(':')) {
      clause.op = ':';
    } else if (clause.field != "metadata" && scanner.take('~')) {
      clause.op = '~';
    } else {
      return query_error("expected ':' " + at(scanner));
    }
    auto value = scanner.quoted();
    if (!value) return query_error("expected a quoted value " + at(scanner));
    clause.value = *value;
    query.clauses_.push_back(std::move(clause));

    if (!scanner.skip_spaces() && !scanner.at_end()) {
      return query_error("expected a space between clauses " + at(scanner));
    }
    if (scanner.at_end()) break;
    const auto next_clause = scanner.position();
    const auto connective = lower(scanner.word());
    const bool is_or = connective == "or";
    if (connective == "and" || is_or) {
      if (!scanner.skip_spaces() || scanner.at_end()) {
        return query_error("expected a clause " + at(scanner));
      }
    } else {
      scanner.rewind(next_clause);  // clauses separated by a space are joined by AND
    }
    if (joined_by_or.value_or(is_or) != is_or) {
      return query_error("AND and OR cannot be combined in one query");
    }
    joined_by_or = is_or;
  }
  if (query.clauses_.empty()) return query_error("the query is empty");
  query.any_ = joined_by_or.value_or(false);
  return query;
}

bool CustomerQuery::matches(const Customer& customer) const {
  const auto clause_holds = [&](const Clause& clause) {
    bool holds = false;
    if (clause.field == "metadata") {
      const auto found = customer.metadata.find(clause.metadata_key);
      holds = found != customer.metadata.end() && found->second == clause.value;
    } else {
      const auto& field = clause.field == "email"  ? customer.email
                          : clause.field == "name" ? customer.name
                                                   : customer.phone;
      holds = clause.op == ':' ? lower(field) == lower(clause.value)
                               : lower(field).find(lower(clause.value)) != std::string::npos;
    }
    return holds != clause.negated;
  };
  return any_ ? std::any_of(clauses_.begin(), clauses_.end(), clause_holds)
              : std::all_of(clauses_.begin(), clauses_.end(), clause_holds);
}

}  // namespace stripe_emulator
