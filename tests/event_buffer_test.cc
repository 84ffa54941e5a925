// The intake's hand-off buffer: events in chunks, handed over by swapping, chunks reused.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "intake.h"

namespace stripe_billing {
namespace {

using Spares = std::vector<std::unique_ptr<EventBuffer::Chunk>>;

HandedEvent event_number(std::size_t n) {
  HandedEvent event;
  event.call_id = "call-" + std::to_string(n);
  event.tokens.total = static_cast<std::int64_t>(n);
  return event;
}

std::vector<std::string> ids_of(EventBuffer& buffer) {
  std::vector<std::string> ids;
  buffer.for_each([&](HandedEvent& event) { ids.push_back(event.call_id); });
  return ids;
}

TEST(EventBufferTest, KeepsEveryEventInOrderAcrossChunks) {
  // More than two chunks' worth, and not a multiple of a chunk.
  const std::size_t count = 2 * EventBuffer::kChunk + 17;
  EventBuffer buffer;
  Spares spares;
  for (std::size_t n = 0; n < count; ++n) buffer.push(event_number(n), spares);
  ASSERT_EQ(buffer.size(), count);
  const auto ids = ids_of(buffer);
  ASSERT_EQ(ids.size(), count);
  for (std::size_t n = 0; n < count; ++n) ASSERT_EQ(ids[n], "call-" + std::to_string(n)) << n;
}

TEST(EventBufferTest, SwapHandsOverEverythingAndLeavesTheOtherSide) {
  EventBuffer host, writer;
  Spares spares;
  for (std::size_t n = 0; n < EventBuffer::kChunk + 1; ++n) host.push(event_number(n), spares);
  writer.swap(host);
  EXPECT_TRUE(host.empty());
  EXPECT_EQ(writer.size(), EventBuffer::kChunk + 1);
  host.push(event_number(99), spares);
  EXPECT_EQ(ids_of(host), std::vector<std::string>{"call-99"});
  EXPECT_EQ(writer.size(), EventBuffer::kChunk + 1);
}

TEST(EventBufferTest, RecycleKeepsAFewChunksAndReturnsTheRestToBeFreed) {
  EventBuffer buffer;
  Spares spares;
  for (std::size_t n = 0; n < 4 * EventBuffer::kChunk; ++n) buffer.push(event_number(n), spares);
  buffer.destroy_events();
  auto unused = buffer.recycle(spares, 2);
  EXPECT_TRUE(buffer.empty());
  EXPECT_EQ(ids_of(buffer).size(), 0u);
  EXPECT_EQ(spares.size(), 2u);
  EXPECT_EQ(unused.size(), 2u);
  for (const auto& chunk : spares) EXPECT_TRUE(chunk->empty());

  // The kept chunks are taken again before anything new is allocated.
  const auto* first_spare = spares.back().get();
  buffer.push(event_number(1), spares);
  EXPECT_EQ(spares.size(), 1u);
  EXPECT_EQ(ids_of(buffer), std::vector<std::string>{"call-1"});
  buffer.destroy_events();
  auto none = buffer.recycle(spares, 2);
  EXPECT_TRUE(none.empty());
  ASSERT_EQ(spares.size(), 2u);
  EXPECT_EQ(spares.back().get(), first_spare);
}

TEST(EventBufferTest, TrimFreesAllButTheFirstChunks) {
  EventBuffer buffer;
  Spares spares;
  for (std::size_t n = 0; n < 3 * EventBuffer::kChunk; ++n) buffer.push(event_number(n), spares);
  buffer.destroy_events();
  buffer.trim(1);
  auto unused = buffer.recycle(spares, 8);
  EXPECT_TRUE(unused.empty());
  EXPECT_EQ(spares.size(), 1u);  // only the one chunk trim left
}

}  // namespace
}  // namespace stripe_billing
