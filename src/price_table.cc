#include "price_table.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include "usage_record.h"  // log_safe

namespace stripe_billing {
namespace {

__extension__ typedef __int128 int128;

constexpr std::int64_t kNanosPerUnit = 1'000'000'000;
constexpr std::int64_t kMaxWhole = 1'000'000;  // the largest price or factor a table may hold

constexpr int128 pow10(int exponent) {
  int128 value = 1;
  for (int i = 0; i < exponent; ++i) value *= 10;
  return value;
}

std::string quoted(const std::string& text) { return "'" + log_safe(text, 80) + "'"; }

std::string where(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null() || mark.line < 0) return "";
  return "line " + std::to_string(mark.line + 1) + ": ";
}

const char* kPriceRule =
    "must be a decimal from 0 to 1000000 with at most 9 decimal places (no sign, no exponent)";

}  // namespace

std::optional<Decimal> Decimal::parse(std::string_view text) {
  if (text.empty() || text.size() > 32) return std::nullopt;
  const std::size_t dot = text.find('.');
  const std::string_view whole = text.substr(0, dot);
  const std::string_view fraction =
      dot == std::string_view::npos ? std::string_view() : text.substr(dot + 1);
  if (whole.empty()) return std::nullopt;                                      // ".5"
  if (dot != std::string_view::npos && fraction.empty()) return std::nullopt;  // "1."
  if (fraction.size() > 9) return std::nullopt;
  std::int64_t whole_value = 0;
  for (char c : whole) {
    if (c < '0' || c > '9') return std::nullopt;
    whole_value = whole_value * 10 + (c - '0');
    if (whole_value > kMaxWhole) return std::nullopt;  // also keeps the loop from overflowing
  }
  std::int64_t fraction_nanos = 0;
  for (std::size_t i = 0; i < 9; ++i) {
    const char c = i < fraction.size() ? fraction[i] : '0';
    if (c < '0' || c > '9') return std::nullopt;
    fraction_nanos = fraction_nanos * 10 + (c - '0');
  }
  if (whole_value == kMaxWhole && fraction_nanos != 0) return std::nullopt;
  return Decimal{whole_value * kNanosPerUnit + fraction_nanos};
}

std::string Decimal::to_string() const {
  std::string text = std::to_string(nanos / kNanosPerUnit);
  std::int64_t fraction = nanos % kNanosPerUnit;
  if (fraction < 0) fraction = -fraction;
  if (fraction == 0) return text;
  std::string digits = std::to_string(fraction);
  digits.insert(0, 9 - digits.size(), '0');
  while (!digits.empty() && digits.back() == '0') digits.pop_back();
  return text + "." + digits;
}

Expected<PriceTable> PriceTable::from_text(const std::string& text, const std::string& origin) {
  const std::string label = "price table " + origin;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return Error{ErrorCode::kInvalidConfig,
                 label + ": not valid YAML or JSON at line " + std::to_string(e.mark.line + 1) +
                     ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg,
                 std::nullopt};
  }
  if (!root.IsMap()) {
    return Error{ErrorCode::kInvalidConfig,
                 label + ": must be an object with `models` (and optionally `markup`)",
                 std::nullopt};
  }
  std::vector<std::string> problems;
  PriceTable table;
  bool have_models = false;
  std::set<std::string> top_keys;
  std::set<std::string> seen_models;
  for (const auto& entry : root) {
    const YAML::Node& key = entry.first;
    const YAML::Node& value = entry.second;
    const std::string name = key.IsScalar() ? key.Scalar() : std::string();
    if (!top_keys.insert(name).second) {
      problems.push_back(where(key) + "key " + quoted(name) + " appears twice");
      continue;
    }
    if (name == "markup") {
      std::optional<Decimal> markup =
          value.IsScalar() ? Decimal::parse(value.Scalar()) : std::nullopt;
      if (!markup || markup->nanos == 0) {
        problems.push_back(where(value) + "markup " + kPriceRule + ", above 0" +
                           (value.IsScalar() ? " (got " + quoted(value.Scalar()) + ")" : ""));
      } else {
        table.markup_ = markup;
      }
      continue;
    }
    if (name != "models") {
      problems.push_back(where(key) + "unknown key " + quoted(name) +
                         " (the keys are `models` and `markup`)");
      continue;
    }
    have_models = true;
    if (!value.IsMap()) {
      problems.push_back(where(value) + "models must be an object of model: {token type: price}");
      continue;
    }
    for (const auto& model_entry : value) {
      const YAML::Node& model_key = model_entry.first;
      const YAML::Node& prices = model_entry.second;
      if (!model_key.IsScalar() || model_key.Scalar().empty() || model_key.Scalar().size() > 1000 ||
          !is_valid_utf8(model_key.Scalar())) {
        problems.push_back(where(model_key) +
                           "a model key is not a model name (a non-empty string)");
        continue;
      }
      const std::string model = model_key.Scalar();
      const std::string at = "models." + quoted(model);
      if (!seen_models.insert(model).second) {
        problems.push_back(where(model_key) + at + " appears twice");
        continue;
      }
      if (!prices.IsMap() || prices.size() == 0) {
        problems.push_back(where(prices) + at +
                           " must be an object of token type: USD per 1M tokens "
                           "(input, output, cached_input, cache_read, cache_write)");
        continue;
      }
      ModelPrices model_prices;
      bool model_ok = true;
      for (const auto& price_entry : prices) {
        const std::string type_name =
            price_entry.first.IsScalar() ? price_entry.first.Scalar() : std::string();
        const std::optional<TokenType> type = token_type_from_string(type_name);
        if (!type) {
          problems.push_back(where(price_entry.first) + at + ": unknown token type " +
                             quoted(type_name) +
                             " (input, output, cached_input, cache_read, cache_write)");
          model_ok = false;
          continue;
        }
        auto& slot = model_prices.per_million[static_cast<std::size_t>(*type)];
        if (slot) {
          problems.push_back(where(price_entry.first) + at + "." + type_name + " appears twice");
          model_ok = false;
          continue;
        }
        const YAML::Node& price = price_entry.second;
        slot = price.IsScalar() ? Decimal::parse(price.Scalar()) : std::nullopt;
        if (!slot) {
          problems.push_back(where(price) + at + "." + type_name + " " + kPriceRule +
                             (price.IsScalar() ? " (got " + quoted(price.Scalar()) + ")" : ""));
          model_ok = false;
        }
      }
      if (model_ok) table.models_.emplace(model, model_prices);
    }
  }
  if (!have_models) problems.push_back("`models` is missing");
  if (!problems.empty()) {
    std::string message = label + ": ";
    for (std::size_t i = 0; i < problems.size(); ++i) {
      message += (i == 0 ? "" : "; ") + problems[i];
    }
    return Error{ErrorCode::kInvalidConfig, message, std::nullopt};
  }
  return table;
}

Expected<PriceTable> PriceTable::from_file(const std::string& path) {
  auto text = read_table_file(path, "price table");
  if (!text) return std::move(text).error();
  return from_text(*text, path);
}

const ModelPrices* PriceTable::find(std::string_view model) const {
  auto it = models_.find(model);
  return it == models_.end() ? nullptr : &it->second;
}

// amount = S × markup × units / 10^27 micro-units, where S = Σ tokens × price_nanos:
//   tokens × (price_nanos / 10^9 USD per 10^6 tokens) × (markup_nanos / 10^9)
//          × (units_nanos / 10^9 units per USD) × 10^6 micro-units per unit
//   = tokens × price_nanos × markup_nanos × units_nanos / 10^27.
// S × markup × units can reach 10^64, past 128 bits, so the product is taken in pieces that
// each fit (see the bounds), and rounded half-up once, at the end.
std::optional<std::int64_t> priced_amount_micros(const BillableTokens& tokens,
                                                 const ModelPrices& prices, Decimal markup,
                                                 Decimal units_per_usd) {
  if (markup.nanos < 0 || units_per_usd.nanos < 0) return std::nullopt;
  int128 sum = 0;  // S ≤ 5 × (2^63 × 10^15) < 5 × 10^34
  for (TokenType type : kAllTokenTypes) {
    const std::int64_t count = tokens[type];
    if (count == 0) continue;
    if (count < 0) return std::nullopt;
    const auto& price = prices.per_million[static_cast<std::size_t>(type)];
    if (!price) return std::nullopt;  // tokens of a type with no price: the call is unpriced
    if (price->nanos < 0 || price->nanos > kMaxWhole * kNanosPerUnit) return std::nullopt;
    sum += static_cast<int128>(count) * price->nanos;
  }
  const int128 m = markup.nanos;         // < 2^63
  const int128 u = units_per_usd.nanos;  // < 2^63
  const int128 e18 = pow10(18);
  const int128 e27 = pow10(27);
  // S × m = x_hi × 10^18 + x_lo.  a = S / 10^18 < 5 × 10^16, so a × m < 5 × 10^35; b × m < 10^37.
  const int128 a = sum / e18;
  const int128 b = sum % e18;
  const int128 x_hi = a * m + (b * m) / e18;
  const int128 x_lo = (b * m) % e18;
  // N = S × m × u = x_hi × u × 10^18 + x_lo × u. If x_hi × u > 10^28, N / 10^27 > 10^19 > int64.
  const int128 limit = pow10(28);
  if (u != 0 && x_hi > limit / u) return std::nullopt;
  const int128 y = x_hi * u;  // ≤ 10^28
  const int128 z = x_lo * u;  // < 10^18 × 2^63 < 10^38
  // N = c × 10^27 + (d × 10^18 + z), with y = c × 10^9 + d.
  const int128 c = y / pow10(9);
  const int128 d = y % pow10(9);
  const int128 rest = d * e18 + z;  // < 10^27 + 10^38 < 2^127
  int128 quotient = c + rest / e27;
  const int128 remainder = rest % e27;
  if (remainder * 2 >= e27) quotient += 1;  // half-up
  if (quotient > std::numeric_limits<std::int64_t>::max()) return std::nullopt;
  return static_cast<std::int64_t>(quotient);
}

}  // namespace stripe_billing
