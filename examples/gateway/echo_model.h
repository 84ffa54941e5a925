// The built-in `echo` model: it answers with the last user message and counts tokens as
// whitespace-separated words, so whoever sends a request knows exactly what will be billed.
//
// Two styles, by the model_name the client sends (examples/gateway/README.md has worked
// examples):
//   - OpenAI style (any name not starting with `claude-`): usage.prompt_tokens counts every word;
//     usage.prompt_tokens_details.cached_tokens says how many of them the prompt cache served
//     (inside prompt_tokens, as OpenAI reports it).
//   - Anthropic style (model_name `claude-…`), reported the way LiteLLM reports Anthropic:
//     prompt_tokens = input + cache_read_input_tokens + cache_creation_input_tokens, with
//     prompt_tokens_details.cached_tokens = cache_read_input_tokens.
// A request with `reasoning_effort` (any value) also "reasons": completion_tokens_details.
// reasoning_tokens = the reply's words, included in completion_tokens (so completion = 2 × reply).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace gateway {

std::int64_t count_words(std::string_view text);

// A message's text: its `content` string, or the `text` of its content parts joined by spaces.
std::string message_text(const nlohmann::json& message);

enum class EchoStyle { kOpenAi, kAnthropic };
EchoStyle echo_style(std::string_view model_name);  // kAnthropic for `claude-…`
const char* echo_provider(EchoStyle style);         // "openai" or "anthropic"

// What the prompt cache did for one request, in tokens (words).
struct CacheUse {
  std::int64_t read = 0;     // prompt tokens served from the cache
  std::int64_t written = 0;  // prompt tokens written to the cache (Anthropic style only)
};

// The echo model's prompt cache. Deterministic: no clock, no randomness, so a fresh gateway that
// is sent the same requests in the same order reports the same numbers. The rule, per model name
// (each model_name has its own cache; a message is "the same" when its JSON is identical):
//
//   OpenAI style: every leading run of messages m1..mk (k = 1..n) of every request is
//   remembered. A request's cached_tokens = the words of its longest leading run m1..mk that an
//   earlier request also began with, when that is at least kMinCachedTokens words; else 0. So
//   repeating a request exactly serves all its prompt tokens from the cache, and a new last
//   message after the same system prompt serves the system prompt's words (if there are at
//   least kMinCachedTokens of them).
//
//   Anthropic style: the cache breakpoint sits before the last message. The cacheable prefix
//   P = m1..m(n-1) (empty for a single message). When P has fewer than kMinCachedTokens words
//   nothing is read or written. Otherwise cache_read = the words of the longest leading run
//   m1..mk (k ≤ n-1) remembered from an earlier request, when at least kMinCachedTokens words
//   (else 0), cache_write = words(P) - cache_read, and P's leading runs are remembered. The last
//   message is always plain input: input = prompt - read - write.
//
// Memory is bounded: when the remembered runs (one entry per distinct leading run) would exceed
// kMaxEntries, the cache forgets everything first (still deterministic). Thread-safe.
class PromptCache {
 public:
  static constexpr std::int64_t kMinCachedTokens = 4;
  static constexpr std::size_t kMaxEntries = 100000;

  CacheUse use(const std::string& model, const nlohmann::json& messages, EchoStyle style);

 private:
  struct Node {
    std::map<std::string, std::unique_ptr<Node>> next;  // by the message's JSON
  };
  // Words of the longest remembered leading run of messages[0, end).
  std::int64_t cached_words(const Node& root, const nlohmann::json& messages,
                            std::size_t end) const;
  std::size_t missing_entries(const Node& root, const nlohmann::json& messages,
                              std::size_t end) const;
  void remember(Node& root, const nlohmann::json& messages, std::size_t end);

  std::mutex mutex_;
  std::map<std::string, Node> roots_;  // by model name
  std::size_t entries_ = 0;
};

// An OpenAI chat.completion for a request whose `model` and `messages` are already checked.
// usage.prompt_tokens counts the words of every message, usage.completion_tokens those of the
// reply. Without a cache (this overload) the usage has only the three counts.
nlohmann::json echo_completion(const nlohmann::json& request);
// With what the prompt cache did, reported in the request's style (see the top of this file).
nlohmann::json echo_completion(const nlohmann::json& request, EchoStyle style, CacheUse cache);

// The chat.completion.chunk objects of a streamed `completion` (OpenAI's stream format): a first
// chunk with the role, one per word of the reply (with the whitespace before it, so the contents
// concatenate to the reply), one with finish_reason, and a last one with empty `choices` and the
// usage, as OpenAI sends when stream_options.include_usage is true (every other chunk then has
// "usage": null).
std::vector<nlohmann::json> completion_chunks(const nlohmann::json& completion);

}  // namespace gateway
