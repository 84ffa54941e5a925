// The request builders and the text helpers around them, fed hostile ids (`../x`, `a&b=c`, NUL
// bytes, non-UTF-8, long strings) through FuzzedDataProvider; the last byte of the input picks the
// builder. Invariants:
// - encode_form/percent_encode: only unreserved characters, `%XX` and the `=`/`&` separators,
//   one `=` per field, and decoding gives back every key and value;
// - encode_path_segment/usage_record_path: no `/` or `.` inside the segment, which decodes back;
// - usage_record_fields: exactly quantity, timestamp, action=increment;
// - hashed_id: `h` + 32 lowercase hex digits; log_safe: printable ASCII, escapes reversible in
//   shape, bounded; is_valid_utf8 agrees with an independent validator;
// - meter_event_identifier: deterministic, at most 100 characters of [A-Za-z0-9_.:-], the plain
//   `<call id>:<dimension>` whenever that qualifies;
// - meter_event_form/meter_stream_event: one field per payload key, no duplicate field, values
//   unchanged; the stream JSON round-trips;
// - parse_rfc3339(to_rfc3339(t)) == t for years 1000..9999; parse_rfc3339 never reads past its
//   text and stays in range;
// - customer_search_query: the quoted value unescapes to the value and nothing follows it.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "customer_resolver.h"
#include "fuzz_support.h"
#include "meter_event.h"
#include "stripe_billing/config.h"
#include "stripe_billing/stripe_client.h"
#include "usage_record.h"

namespace stripe_billing::fuzz {
namespace {

bool is_unreserved(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // lowercase hex is not what the encoder writes
}

// Decodes percent-encoding, checking that the text holds only unreserved characters and %XX.
std::string decode_checked(std::string_view encoded) {
  std::string out;
  for (std::size_t i = 0; i < encoded.size(); ++i) {
    const char c = encoded[i];
    if (c == '%') {
      FUZZ_CHECK(i + 2 < encoded.size(), encoded);
      const int high = hex_value(encoded[i + 1]), low = hex_value(encoded[i + 2]);
      FUZZ_CHECK(high >= 0 && low >= 0, encoded);
      out.push_back(static_cast<char>(high * 16 + low));
      i += 2;
    } else {
      FUZZ_CHECK(is_unreserved(c), encoded);
      out.push_back(c);
    }
  }
  return out;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  while (true) {
    const std::size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

// The form `encoded` must carry exactly `fields`, in order.
void check_form(const FormFields& fields, const std::string& encoded) {
  if (fields.empty()) {
    FUZZ_CHECK(encoded.empty(), encoded);
    return;
  }
  const std::vector<std::string_view> parts = split(encoded, '&');
  FUZZ_CHECK(parts.size() == fields.size(), encoded);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::vector<std::string_view> halves = split(parts[i], '=');
    FUZZ_CHECK(halves.size() == 2, parts[i]);  // exactly one '='
    FUZZ_CHECK(decode_checked(halves[0]) == fields[i].first, fields[i].first);
    FUZZ_CHECK(decode_checked(halves[1]) == fields[i].second, fields[i].second);
  }
}

void check_encoders(FuzzedDataProvider& in) {
  FormFields fields;
  const std::size_t count = in.ConsumeIntegralInRange<std::size_t>(0, 8);
  for (std::size_t i = 0; i < count && in.remaining_bytes() > 0; ++i) {
    std::string key = in.ConsumeRandomLengthString(256);
    fields.emplace_back(std::move(key), in.ConsumeRandomLengthString(1024));
  }
  check_form(fields, encode_form(fields));

  const std::string text = in.ConsumeRandomLengthString(1024);
  FUZZ_CHECK(decode_checked(percent_encode(text)) == text, text);
  const std::string segment = encode_path_segment(text);
  FUZZ_CHECK(segment.find_first_of("/.") == std::string::npos, segment);
  FUZZ_CHECK(decode_checked(segment) == text, text);
}

void check_usage_record(FuzzedDataProvider& in) {
  const std::string id = in.ConsumeRandomLengthString(1024);
  const std::string path = usage_record_path(id);
  const std::string_view prefix = "/v1/subscription_items/", suffix = "/usage_records";
  FUZZ_CHECK(path.size() >= prefix.size() + suffix.size() && path.rfind(prefix, 0) == 0 &&
                 path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0,
             path);
  const std::string middle =
      path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
  FUZZ_CHECK(middle.find_first_of("/.") == std::string::npos, path);
  FUZZ_CHECK(decode_checked(middle) == id, path);

  const auto quantity = in.ConsumeIntegral<std::int64_t>();
  const auto timestamp = in.ConsumeIntegral<std::int64_t>();
  const FormFields fields = usage_record_fields(quantity, timestamp);
  const FormFields expected = {{"quantity", std::to_string(quantity)},
                               {"timestamp", std::to_string(timestamp)},
                               {"action", "increment"}};
  FUZZ_CHECK(fields == expected, encode_form(fields));
  check_form(fields, encode_form(fields));
}

void check_text_helpers(FuzzedDataProvider& in) {
  const std::size_t max = in.ConsumeIntegralInRange<std::size_t>(0, 400);
  const std::string text = in.ConsumeRemainingBytesAsString();

  const std::string hash = hashed_id(text);
  FUZZ_CHECK(hash.size() == 33 && hash[0] == 'h', hash);
  for (char c : hash.substr(1)) FUZZ_CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'), hash);
  FUZZ_CHECK(hashed_id(text) == hash, hash);

  FUZZ_CHECK(is_valid_utf8(text) == valid_utf8(text),
             std::string("is_valid_utf8 says ") + (is_valid_utf8(text) ? "valid" : "invalid") +
                 " for " + text);

  // log_safe: escapes first, then at most a truncation marker "…(N bytes)" after `max` bytes.
  const std::string safe = log_safe(text, max);
  const std::string marker = "\xE2\x80\xA6(" + std::to_string(text.size()) + " bytes)";
  std::string_view body = safe;
  const bool truncated =
      body.size() >= marker.size() && body.substr(body.size() - marker.size()) == marker;
  if (truncated) body.remove_suffix(marker.size());
  constexpr std::size_t kLongestEscape = 4;  // \xHH
  FUZZ_CHECK(body.size() < max + kLongestEscape, safe);
  std::size_t escaped_length = 0;  // what the escaped text would measure without truncation
  for (unsigned char c : text) {
    escaped_length += c >= 0x20 && c < 0x7F && c != '\\' && c != '"' ? 1 : kLongestEscape;
  }
  FUZZ_CHECK(truncated == (escaped_length > body.size()), safe);
  for (std::size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    FUZZ_CHECK(c >= 0x20 && c < 0x7F && c != '"', safe);
    if (c == '\\') {
      FUZZ_CHECK(i + 3 < body.size() && body[i + 1] == 'x', safe);
      for (char h : body.substr(i + 2, 2)) {
        FUZZ_CHECK((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f'), safe);
      }
      i += 3;
    }
  }
}

bool identifier_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-';
}

void check_identifier(FuzzedDataProvider& in) {
  const std::string call_id = in.ConsumeRandomLengthString(300);
  const std::string dimension = in.ConsumeRandomLengthString(40);
  const std::string id = meter_event_identifier(call_id, dimension);
  FUZZ_CHECK(!id.empty() && id.size() <= 100, id);
  for (char c : id) FUZZ_CHECK(identifier_char(c), id);
  FUZZ_CHECK(meter_event_identifier(call_id, dimension) == id, id);
  const std::string plain = call_id + ":" + dimension;
  bool usable = plain.size() <= 100;
  for (char c : plain) usable = usable && identifier_char(c);
  FUZZ_CHECK(usable ? id == plain : id.rfind("sbh-h", 0) == 0 && id.size() == 37, id);
}

std::optional<FinalizedConfig> finalize_env(const std::map<std::string, std::string>& env) {
  Expected<FinalizedConfig> config = finalize_config(config_from_env([&env](const std::string& n) {
    const auto it = env.find(n);
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  }));
  if (!config) return std::nullopt;
  return std::move(*config);
}

// A meter configuration with fuzzed payload keys when finalize_config accepts them, else the
// defaults plus a model key.
std::optional<FinalizedConfig> meter_config(FuzzedDataProvider& in) {
  std::map<std::string, std::string> env = {{"STRIPE_API_KEY", std::string(kFuzzApiKey)},
                                            {"STRIPE_METER_EVENT_NAME", "llm_tokens"},
                                            {"STRIPE_OUTBOX_PATH", ":memory:"}};
  env["STRIPE_BILLING_MODE"] = in.ConsumeBool() ? "meter_events" : "meter_event_stream";
  if (in.ConsumeBool()) env["STRIPE_QUANTITY"] = "split";
  std::map<std::string, std::string> fallback = env;
  fallback["STRIPE_METER_MODEL_KEY"] = "model";
  for (const char* variable : {"STRIPE_METER_CUSTOMER_KEY", "STRIPE_METER_VALUE_KEY",
                               "STRIPE_METER_TOKEN_TYPE_KEY", "STRIPE_METER_MODEL_KEY"}) {
    if (in.ConsumeBool()) env[variable] = in.ConsumeRandomLengthString(120);
  }
  if (auto config = finalize_env(env)) return config;
  return finalize_env(fallback);
}

void check_meter_event(FuzzedDataProvider& in) {
  const std::optional<FinalizedConfig> config = meter_config(in);
  FUZZ_CHECK(config.has_value(), "the fallback meter configuration is refused");
  // The token type is the dimension's, as the dispatcher sends it; everything else is hostile.
  const auto& dimensions = config->dimensions();
  MeterEvent event;
  event.token_type =
      dimensions[in.ConsumeIntegralInRange<std::size_t>(0, dimensions.size() - 1)].token_type;
  event.event_name = in.ConsumeRandomLengthString(120);
  event.identifier = in.ConsumeRandomLengthString(120);
  event.customer_id = in.ConsumeRandomLengthString(120);
  event.model = in.ConsumeRandomLengthString(120);
  event.value = in.ConsumeIntegral<std::int64_t>();
  event.timestamp = in.ConsumeIntegralInRange<std::int64_t>(0, 253'402'300'799);

  const FormFields form = meter_event_form(event, *config);
  const bool sends_token_type = !event.token_type.empty();
  const bool sends_model = !config->meter_model_key().empty() && !event.model.empty();
  FUZZ_CHECK(form.size() == 5 + sends_token_type + sends_model, encode_form(form));
  std::set<std::string> names;
  for (const auto& field : form) {
    FUZZ_CHECK(names.insert(field.first).second, "duplicate form field " + field.first);
  }
  FUZZ_CHECK(form[2].second == std::to_string(event.timestamp), encode_form(form));
  check_form(form, encode_form(form));

  const nlohmann::json stream = meter_stream_event(event, *config);
  const nlohmann::json& payload = stream.at("payload");
  FUZZ_CHECK(payload.size() == 2 + sends_token_type + sends_model,
             stream.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  FUZZ_CHECK(payload.at(config->meter_customer_key()) == event.customer_id, "customer");
  FUZZ_CHECK(payload.at(config->meter_value_key()) == std::to_string(event.value), "value");
  FUZZ_CHECK(parse_rfc3339(stream.at("timestamp").get<std::string>()) == event.timestamp,
             stream.at("timestamp").get<std::string>());
  if (valid_utf8(event.event_name) && valid_utf8(event.identifier) &&
      valid_utf8(event.customer_id) && valid_utf8(event.token_type) && valid_utf8(event.model)) {
    std::string text;
    must_not_throw("meter_stream_event(...).dump()", [&] { text = stream.dump(); });
    FUZZ_CHECK(nlohmann::json::parse(text) == stream, text);
  }
}

void check_rfc3339(FuzzedDataProvider& in) {
  // 1000-01-01T00:00:00Z to 9999-12-31T23:59:59Z: four-digit years, what RFC 3339 can write.
  const auto t = in.ConsumeIntegralInRange<std::int64_t>(-30'610'224'000, 253'402'300'799);
  const std::string text = to_rfc3339(t);
  FUZZ_CHECK(text.size() == 20 && text[10] == 'T' && text.back() == 'Z', text);
  FUZZ_CHECK(parse_rfc3339(text) == t, text + " for " + std::to_string(t));

  const std::string any = in.ConsumeRemainingBytesAsString();
  const std::optional<std::int64_t> parsed = parse_rfc3339(any);
  if (parsed) {
    // Year 0000 minus a day of offset to year 9999 plus one: whatever the fields say.
    FUZZ_CHECK(*parsed >= -62'167'219'200 - 86'400 && *parsed <= 253'402'300'800 + 86'400, any);
  }
}

void check_search_query(FuzzedDataProvider& in) {
  std::string key = in.ConsumeRandomLengthString(40);
  bool key_ok = !key.empty();
  for (char c : key) key_ok = key_ok && (identifier_char(c) && c != '.' && c != ':');
  if (!key_ok) key = "litellm_customer_id";  // finalize_config allows only [A-Za-z0-9_-]
  const std::string value = in.ConsumeRemainingBytesAsString();
  const std::string query = customer_search_query(key, value);
  const std::string opening = "metadata['" + key + "']:'";
  FUZZ_CHECK(query.rfind(opening, 0) == 0 && query.size() > opening.size() && query.back() == '\'',
             query);
  std::string unescaped;
  const std::string_view quoted =
      std::string_view(query).substr(opening.size(), query.size() - opening.size() - 1);
  for (std::size_t i = 0; i < quoted.size(); ++i) {
    if (quoted[i] == '\\') {
      FUZZ_CHECK(i + 1 < quoted.size(), query);
      unescaped.push_back(quoted[++i]);
    } else {
      FUZZ_CHECK(quoted[i] != '\'', query);  // an unescaped quote would end the value early
      unescaped.push_back(quoted[i]);
    }
  }
  FUZZ_CHECK(unescaped == value, query);

  bool customer = value.size() > 4 && value.rfind("cus_", 0) == 0;
  for (char c : value.substr(std::min<std::size_t>(4, value.size()))) {
    customer = customer && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                            (c >= '0' && c <= '9') || c == '_');
  }
  FUZZ_CHECK(is_customer_id(value) == customer, value);
}

}  // namespace
}  // namespace stripe_billing::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace stripe_billing::fuzz;
  FuzzedDataProvider in(data, size);
  must_not_throw("request builders", [&] {
    switch (in.ConsumeIntegralInRange<int>(0, 6)) {
      case 0:
        check_encoders(in);
        break;
      case 1:
        check_usage_record(in);
        break;
      case 2:
        check_text_helpers(in);
        break;
      case 3:
        check_identifier(in);
        break;
      case 4:
        check_meter_event(in);
        break;
      case 5:
        check_rfc3339(in);
        break;
      case 6:
        check_search_query(in);
        break;
    }
  });
  return 0;
}
