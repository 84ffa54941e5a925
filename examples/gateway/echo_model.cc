#include "gateway/echo_model.h"

#include <chrono>
#include <sstream>

#include "gateway/random_id.h"

namespace gateway {
namespace {

std::string last_user_text(const nlohmann::json& messages) {
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

}  // namespace

std::int64_t count_words(std::string_view text) {
  std::istringstream words{std::string(text)};
  std::int64_t count = 0;
  for (std::string word; words >> word;) ++count;
  return count;
}

std::string message_text(const nlohmann::json& message) {
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

nlohmann::json echo_completion(const nlohmann::json& request) {
  const auto& messages = request.at("messages");
  std::int64_t prompt_tokens = 0;
  for (const auto& message : messages) prompt_tokens += count_words(message_text(message));
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

}  // namespace gateway
