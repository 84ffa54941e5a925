// The sync mode's intent log, beside the outbox (`<outbox>.journal`, mode 0600). A commit in
// sync mode is one append of the group's rows and one fdatasync of this file: a sequential write,
// so callers wait for the disk's sync and nothing else. The rows go into the outbox afterwards,
// in large transactions; once the outbox holds every row the journal holds, it is emptied. At
// start, rows a crash left here are stored in the outbox (those stored already are duplicates
// there, and ignored) before anything else runs.
//
// The file is a header (a magic number and the current generation), then records
// [generation][length][checksum][rows]. A torn or damaged record, or one of an earlier generation,
// ends the readable part (a torn one was never acknowledged: its fdatasync had not returned). The
// file is kept written through to 16 MB, so appends overwrite and their syncs carry no metadata;
// starting over writes a new generation into the header, it truncates nothing.
//
// Not thread-safe: one writer appends and resets; recover() runs before it starts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "batch.h"
#include "stripe_billing/error.h"

namespace stripe_billing {

class Journal {
 public:
  static Expected<std::unique_ptr<Journal>> open(const std::string& path);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // The rows of every whole record, in order; what follows the first damaged record is ignored.
  Expected<std::vector<NewEvent>> recover();
  // Appends one record and syncs it to the disk; when this returns, the rows survive a crash.
  Expected<void> append(const std::vector<NewEvent>& rows);
  // Empties the journal (the outbox holds everything it held).
  Expected<void> reset();
  std::uint64_t size() const noexcept { return size_; }  // of the current generation

 private:
  Journal(std::string path, int fd, std::uint64_t file_size);
  Expected<void> write_at(const std::string& data, std::uint64_t offset);

  std::string path_;
  int fd_;
  std::uint64_t file_size_;
  std::uint64_t size_ = 0;
  std::uint32_t generation_ = 0;
  std::string buffer_;  // reused by append()
};

// The format, for tests: the file's header, one record of `rows`, and the rows of the file's own
// whole records in `data`.
std::string encode_journal_header(std::uint32_t generation);
std::string encode_journal_record(const std::vector<NewEvent>& rows, std::uint32_t generation);
std::vector<NewEvent> decode_journal(const std::string& data);

}  // namespace stripe_billing
