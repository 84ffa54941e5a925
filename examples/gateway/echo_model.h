// The built-in `echo` model: it answers with the last user message and counts tokens as
// whitespace-separated words, so whoever sends a request knows exactly what will be billed.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace gateway {

std::int64_t count_words(std::string_view text);

// A message's text: its `content` string, or the `text` of its content parts joined by spaces.
std::string message_text(const nlohmann::json& message);

// An OpenAI chat.completion for a request whose `model` and `messages` are already checked.
// usage.prompt_tokens counts the words of every message, usage.completion_tokens those of the
// reply.
nlohmann::json echo_completion(const nlohmann::json& request);

}  // namespace gateway
