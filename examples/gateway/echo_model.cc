#include "gateway/echo_model.h"

#include <cctype>
#include <chrono>
#include <sstream>

#include "gateway/random_id.h"

namespace gateway {
namespace {

using nlohmann::json;

std::string last_user_text(const json& messages) {
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    if (it->value("role", "") == "user") return message_text(*it);
  }
  return "";
}

std::int64_t epoch_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t prompt_words(const json& messages) {
  std::int64_t words = 0;
  for (const auto& message : messages) words += count_words(message_text(message));
  return words;
}

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// The reply cut before the whitespace that precedes each word but the first, so that the pieces
// concatenate to it: "  a b\n" is "  a", " b\n".
std::vector<std::string> reply_pieces(const std::string& reply) {
  std::vector<std::string> pieces;
  std::size_t last_word_char = reply.size();
  for (std::size_t i = reply.size(); i > 0; --i) {
    if (!is_space(reply[i - 1])) {
      last_word_char = i - 1;
      break;
    }
  }
  std::string piece;
  for (std::size_t i = 0; i < reply.size(); ++i) {
    const bool word_ended = i > 0 && is_space(reply[i]) && !is_space(reply[i - 1]);
    if (word_ended && last_word_char != reply.size() && i < last_word_char) {
      pieces.push_back(std::move(piece));
      piece.clear();
    }
    piece += reply[i];
  }
  if (!piece.empty()) pieces.push_back(std::move(piece));
  return pieces;
}

}  // namespace

std::int64_t count_words(std::string_view text) {
  std::istringstream words{std::string(text)};
  std::int64_t count = 0;
  for (std::string word; words >> word;) ++count;
  return count;
}

std::string message_text(const json& message) {
  const auto content = message.find("content");
  if (content == message.end()) return "";
  if (content->is_string()) return content->get<std::string>();
  std::string text;
  if (!content->is_array()) return text;
  for (const auto& part : *content) {
    if (part.is_object() && part.value("type", "") == "text") {
      text += (text.empty() ? "" : " ") + part.value("text", "");
    }
  }
  return text;
}

EchoStyle echo_style(std::string_view model_name) {
  return model_name.rfind("claude-", 0) == 0 ? EchoStyle::kAnthropic : EchoStyle::kOpenAi;
}

const char* echo_provider(EchoStyle style) {
  return style == EchoStyle::kAnthropic ? "anthropic" : "openai";
}

std::int64_t PromptCache::cached_words(const Node& root, const json& messages,
                                       std::size_t end) const {
  const Node* node = &root;
  std::int64_t words = 0;
  for (std::size_t i = 0; i < end; ++i) {
    const auto next = node->next.find(messages[i].dump());
    if (next == node->next.end()) break;
    node = next->second.get();
    words += count_words(message_text(messages[i]));
  }
  return words >= kMinCachedTokens ? words : 0;
}

std::size_t PromptCache::missing_entries(const Node& root, const json& messages,
                                         std::size_t end) const {
  const Node* node = &root;
  for (std::size_t i = 0; i < end; ++i) {
    const auto next = node->next.find(messages[i].dump());
    if (next == node->next.end()) return end - i;
    node = next->second.get();
  }
  return 0;
}

void PromptCache::remember(Node& root, const json& messages, std::size_t end) {
  Node* node = &root;
  for (std::size_t i = 0; i < end; ++i) {
    auto& next = node->next[messages[i].dump()];
    if (!next) {
      next = std::make_unique<Node>();
      ++entries_;
    }
    node = next.get();
  }
}

CacheUse PromptCache::use(const std::string& model, const json& messages, EchoStyle style) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::size_t cacheable =
      style == EchoStyle::kOpenAi ? messages.size() : (messages.empty() ? 0 : messages.size() - 1);
  std::int64_t cacheable_words = 0;
  for (std::size_t i = 0; i < cacheable; ++i) {
    cacheable_words += count_words(message_text(messages[i]));
  }
  CacheUse use;
  if (style == EchoStyle::kAnthropic && cacheable_words < kMinCachedTokens) return use;
  use.read = cached_words(roots_[model], messages, cacheable);
  if (style == EchoStyle::kAnthropic) use.written = cacheable_words - use.read;
  const std::size_t missing = missing_entries(roots_[model], messages, cacheable);
  if (missing > kMaxEntries) return use;  // too long to remember at all
  if (entries_ + missing > kMaxEntries) {
    roots_.clear();
    entries_ = 0;
  }
  remember(roots_[model], messages, cacheable);
  return use;
}

json echo_completion(const json& request) {
  const auto& messages = request.at("messages");
  const std::int64_t prompt_tokens = prompt_words(messages);
  const std::string reply = last_user_text(messages);
  const std::int64_t completion_tokens = count_words(reply);
  return {
      {"id", random_id("chatcmpl-")},
      {"object", "chat.completion"},
      {"created", epoch_seconds()},
      {"model", request.at("model")},
      {"choices",
       {{{"index", 0},
         {"message", {{"role", "assistant"}, {"content", reply}}},
         {"finish_reason", "stop"}}}},
      {"usage",
       {{"prompt_tokens", prompt_tokens},
        {"completion_tokens", completion_tokens},
        {"total_tokens", prompt_tokens + completion_tokens}}},
  };
}

json echo_completion(const json& request, EchoStyle style, CacheUse cache) {
  json completion = echo_completion(request);
  json& usage = completion["usage"];
  usage["prompt_tokens_details"] = {{"cached_tokens", cache.read}};
  if (style == EchoStyle::kAnthropic) {
    usage["prompt_tokens_details"]["cache_creation_tokens"] = cache.written;
    usage["cache_read_input_tokens"] = cache.read;
    usage["cache_creation_input_tokens"] = cache.written;
  }
  if (request.contains("reasoning_effort")) {
    const std::int64_t reasoning = usage["completion_tokens"].get<std::int64_t>();
    usage["completion_tokens"] = 2 * reasoning;
    usage["total_tokens"] = usage["prompt_tokens"].get<std::int64_t>() + 2 * reasoning;
    usage["completion_tokens_details"] = {{"reasoning_tokens", reasoning}};
  }
  return completion;
}

std::vector<json> completion_chunks(const json& completion) {
  const json base = {{"id", completion.at("id")},
                     {"object", "chat.completion.chunk"},
                     {"created", completion.at("created")},
                     {"model", completion.at("model")}};
  const auto chunk = [&base](json delta, json finish_reason) {
    json chunk = base;
    chunk["choices"] = {{{"index", 0},
                         {"delta", std::move(delta)},
                         {"logprobs", nullptr},
                         {"finish_reason", std::move(finish_reason)}}};
    chunk["usage"] = nullptr;
    return chunk;
  };
  const json& choice = completion.at("choices").at(0);
  std::vector<json> chunks;
  chunks.push_back(chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
  for (auto& piece : reply_pieces(choice.at("message").value("content", ""))) {
    chunks.push_back(chunk({{"content", std::move(piece)}}, nullptr));
  }
  chunks.push_back(chunk(json::object(), choice.at("finish_reason")));
  json usage = base;
  usage["choices"] = json::array();
  usage["usage"] = completion.at("usage");
  chunks.push_back(std::move(usage));
  return chunks;
}

}  // namespace gateway
