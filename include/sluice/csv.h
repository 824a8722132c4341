/* CSV parsing for sources: the csv source's row reader, offered to other
 * sources whose input is CSV once they have found it (the email source's
 * zipped attachment), so that every CSV is read by the same rules
 * (docs/sources/csv.md: quoting, line numbers, bad rows, byte offsets).
 * Implemented by plugins/sources/csv. */
#ifndef SLUICE_CSV_H
#define SLUICE_CSV_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/plugin.h"
#include "sluice/reader.h"

/* The options that shape the parse, as entries of a source's option table.
 * A source using sl_csv_open lists them in its own table, so its users
 * configure the CSV exactly as for the csv source. */
/* clang-format off */
#define SL_CSV_PARSE_OPTIONS                                                                    \
    {"delimiter", SL_OPT_STRING, ",", 0, NULL, "field separator, one byte (\"\\t\" for tab)"},   \
    {"quote", SL_OPT_STRING, "\"", 0, NULL, "quote character, one byte"},                        \
    {"header", SL_OPT_BOOL, "true", 0, NULL, "the first row holds the column names"},            \
    {"columns", SL_OPT_LIST, NULL, 0, NULL,                                                      \
     "column names when header is false; with a header, columns that must exist"},               \
    {"max_row_bytes", SL_OPT_SIZE, "1MB", 0, NULL,                                               \
     "longest accepted row; a longer one is rejected (usually an unterminated quote)"},          \
    {"trim", SL_OPT_BOOL, "false", 0, NULL, "strip spaces and tabs around unquoted fields"},     \
    {"empty_is_null", SL_OPT_BOOL, "false", 0, NULL,                                             \
     "an empty unquoted cell is NULL, a quoted \"\" is an empty string (PostgreSQL's CSV "       \
     "convention, for warehouse loads)"},                                                        \
    {"skip_blank_lines", SL_OPT_BOOL, "true", 0, NULL,                                           \
     "skip empty lines (they still count for line numbers)"}
/* clang-format on */

typedef struct sl_csv sl_csv;

/* Start parsing CSV from r with the SL_CSV_PARSE_OPTIONS values of o (o's
 * table must list them): checks the options, skips a byte order mark, reads
 * the header and checks the required columns. Takes r over, also on failure
 * (sl_csv_free closes it). 0 with *out set, or <0 with err naming
 * sl_reader_name(r) and the line ("members.csv:1: duplicate column ..."). */
int sl_csv_open(sl_csv **out, sl_reader *r, const sl_opts *o, sl_error *err);
/* The source callbacks (see sl_source_plugin: next, checkpoint, resume,
 * columns). The checkpoint holds the stream offset, line, input name, size,
 * mtime and columns; resume checks them against this input. */
int sl_csv_next(sl_csv *c, sl_record *rec, uint64_t *next_pos, sl_error *err);
int sl_csv_checkpoint(sl_csv *c, uint64_t pos, uint64_t line, sl_buf *out, sl_error *err);
int sl_csv_resume(sl_csv *c, const char *checkpoint, sl_error *err);
const char *const *sl_csv_columns(sl_csv *c, size_t *n);
/* The reader (for its name, offset, progress). */
sl_reader *sl_csv_reader(sl_csv *c);
/* NULL is a no-op. */
void sl_csv_free(sl_csv *c);

#endif
