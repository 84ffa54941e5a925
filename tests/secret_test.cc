#include "stripe_billing/secret.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <type_traits>
#include <utility>

namespace stripe_billing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kEllipsis = "\xE2\x80\xA6";

template <typename T, typename = void>
struct IsStreamable : std::false_type {};
template <typename T>
struct IsStreamable<T, std::void_t<decltype(std::declval<std::ostream&>() << std::declval<T>())>>
    : std::true_type {};

std::string e(const std::string& text) { return kEllipsis + text; }

TEST(SecretTest, RedactsSecretTestKeyToPrefixAndLastFourCharacters) {
  EXPECT_EQ(Secret::redact_key("sk_test_51NzQvRkLmYb_De7Fh3Jx9PaTuWcGswxyz"),
            "sk_test_" + e("wxyz"));
}

TEST(SecretTest, KeepsEachKnownPrefix) {
  EXPECT_EQ(Secret::redact_key("sk_live_0123456789abcd"), "sk_live_" + e("abcd"));
  EXPECT_EQ(Secret::redact_key("rk_test_0123456789abcd"), "rk_test_" + e("abcd"));
  EXPECT_EQ(Secret::redact_key("rk_live_0123456789abcd"), "rk_live_" + e("abcd"));
  EXPECT_EQ(Secret::redact_key("pk_test_0123456789abcd"), "pk_test_" + e("abcd"));
  EXPECT_EQ(Secret::redact_key("pk_live_0123456789abcd"), "pk_live_" + e("abcd"));
}

TEST(SecretTest, KeyShorterThanTwelveCharactersBecomesEllipsisAlone) {
  EXPECT_EQ(Secret::redact_key("sk_test_abc"), kEllipsis);
  EXPECT_EQ(Secret::redact_key("hunter2"), kEllipsis);
  EXPECT_EQ(Secret::redact_key(""), kEllipsis);
}

TEST(SecretTest, UnknownShapeShowsEllipsisAndLastTwoCharacters) {
  EXPECT_EQ(Secret::redact_key("whsec_0123456789abcdef"), e("ef"));
  EXPECT_EQ(Secret::redact_key("sk-proj-0123456789xy"), e("xy"));
}

TEST(SecretTest, KnownPrefixWithShortBodyDoesNotSpellOutTheBody) {
  // 12 characters: prefix + 4; showing "the last four" would show the whole key.
  EXPECT_EQ(Secret::redact_key("sk_test_abcd"), e("cd"));
  EXPECT_EQ(Secret::redact_key("sk_test_abcdefg"), e("fg"));
}

TEST(SecretTest, RedactedFormNeverContainsTheKey) {
  const std::string body = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
  for (const std::string prefix : {"sk_test_", "rk_live_", "", "x"}) {
    for (std::size_t length = 1; length <= body.size(); ++length) {
      const std::string key = prefix + body.substr(0, length);
      EXPECT_THAT(Secret::redact_key(key), Not(HasSubstr(key))) << "length " << key.size();
    }
  }
}

TEST(SecretTest, MasksUnprintableCharactersInTheTail) {
  EXPECT_EQ(Secret::redact_key("sk_test_0123456789ab\n"), "sk_test_" + e("9ab?"));
  EXPECT_EQ(Secret::redact_key("sk_test_0123456789a b"), "sk_test_" + e("9a?b"));
  EXPECT_EQ(Secret::redact_key("not-a-key-at-all\t"), e("l?"));
}

TEST(SecretTest, RedactedMemberUsesRedactKey) {
  const Secret secret("sk_test_51NzQvRkLmYb_De7Fh3Jx9PaTuWcGswxyz");
  EXPECT_EQ(secret.redacted(), "sk_test_" + e("wxyz"));
}

TEST(SecretTest, RevealReturnsTheValue) {
  const Secret secret("sk_test_51NzQvRkLmYb_De7Fh3Jx9PaTuWcGswxyz");
  EXPECT_EQ(secret.reveal(), "sk_test_51NzQvRkLmYb_De7Fh3Jx9PaTuWcGswxyz");
  EXPECT_FALSE(secret.empty());
}

TEST(SecretTest, DefaultSecretIsEmpty) {
  EXPECT_TRUE(Secret().empty());
  EXPECT_EQ(Secret().reveal(), "");
}

TEST(SecretTest, CannotBeWrittenToAStream) {
  EXPECT_FALSE(IsStreamable<const Secret&>::value);
  EXPECT_TRUE(IsStreamable<const std::string&>::value);  // the detector itself works
}

}  // namespace
}  // namespace stripe_billing
