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

// Secrets inside other text: a key pasted into the wrong setting, or quoted in a message.

std::string found_in(const std::string& text) {
  const auto span = Secret::find_secret_in(text);
  return span ? text.substr(span->position, span->length) : std::string("(none)");
}

TEST(FindSecretInTest, FindsEachSecretPrefixAtTheStart) {
  for (const std::string secret :
       {"sk_live_0123_456789abcd", "sk_test_0123_456789abcd", "rk_live_0123_456789abcd",
        "rk_test_0123_456789abcd", "whsec_0123_456789abcdef"}) {
    EXPECT_EQ(found_in(secret), secret);
  }
}

TEST(FindSecretInTest, FindsAKeyAfterAnyCharacterThatIsNotALetterOrDigit) {
  EXPECT_EQ(found_in("llm.sk_test_0123_456789abcd"), "sk_test_0123_456789abcd");
  EXPECT_EQ(found_in("alice=rk_live_0123_456789abcd,bob=cus_1"), "rk_live_0123_456789abcd");
  EXPECT_EQ(found_in("https://example.com/whsec_0123_4567?x"), "whsec_0123_4567");
  EXPECT_EQ(found_in("price_sk_test_0123_456789abcd"), "sk_test_0123_456789abcd");
  EXPECT_EQ(found_in("staging sk_live_0123_456789abcd\n"), "sk_live_0123_456789abcd");
}

TEST(FindSecretInTest, IgnoresAPrefixInsideAWord) {
  EXPECT_EQ(found_in("mask_test_value"), "(none)");
  EXPECT_EQ(found_in("risk_live_events"), "(none)");
  EXPECT_EQ(found_in("work_test_1"), "(none)");
}

TEST(FindSecretInTest, IgnoresAPrefixWithNoLetterOrDigitAfterIt) {
  EXPECT_EQ(found_in("sk_test_"), "(none)");
  EXPECT_EQ(found_in("sk_test__"), "(none)");
  EXPECT_EQ(found_in("sk_test_" + e("wxyz")), "(none)") << "an already redacted key";
}

TEST(FindSecretInTest, IgnoresPublishableKeysAndOrdinaryIds) {
  EXPECT_EQ(found_in("pk_test_0123_456789abcd"), "(none)");
  EXPECT_EQ(found_in("price_1PxyzMetered cus_123 si_456 llm_tokens"), "(none)");
}

TEST(FindSecretInTest, SearchesFromTheGivenPosition) {
  const std::string text = "sk_test_0123_4567 and rk_test_0123_4567";
  const auto second = Secret::find_secret_in(text, 1);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->position, text.find("rk_test_"));
}

TEST(RedactSecretsInTest, ReplacesEachSecretByItsRedactedFormAndKeepsTheRest) {
  EXPECT_EQ(Secret::redact_secrets_in(
                "a=sk_test_0123_456789abcd,b=whsec_0123_456789abcdef c sk_live_0123_456789wxyz"),
            "a=sk_test_" + e("abcd") + ",b=" + e("ef") + " c sk_live_" + e("wxyz"));
}

TEST(RedactSecretsInTest, RedactsAKeyGluedToAWordToo) {
  EXPECT_EQ(Secret::redact_secrets_in("xsk_test_0123_456789abcdef"), "xsk_test_" + e("cdef"));
}

TEST(RedactSecretsInTest, LeavesAPrefixInsideAWordAloneWhenNoKeyFollows) {
  EXPECT_EQ(Secret::redact_secrets_in("meter=risk_test_events"), "meter=risk_test_events");
}

TEST(RedactSecretsInTest, LeavesTextWithoutSecretsAsItIs) {
  const std::string text = "STRIPE_PRICE_ID must be price_ followed by letters; got \"prod_1\"";
  EXPECT_EQ(Secret::redact_secrets_in(text), text);
}

TEST(RedactSecretsInTest, RedactingTwiceChangesNothingMore) {
  const std::string once = Secret::redact_secrets_in("x sk_test_0123_456789abcd y");
  EXPECT_EQ(Secret::redact_secrets_in(once), once);
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
