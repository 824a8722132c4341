/* Value parsing shared by steps and sinks: type inference of text cells (the
 * Braze importer's rules), strict parsers for forced casts, and small text
 * helpers for messages. Pure functions: no global state, no allocation except
 * where stated. */
#ifndef SLUICE_VALUES_H
#define SLUICE_VALUES_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/record.h"

/* Rules for sl_infer_classify; each can be switched off on its own. */
#define SL_INFER_NUMBERS 0x01
#define SL_INFER_BOOLEANS 0x02
#define SL_INFER_ARRAYS 0x04
#define SL_INFER_ALL (SL_INFER_NUMBERS | SL_INFER_BOOLEANS | SL_INFER_ARRAYS)

/* A decoded scalar. */
typedef struct sl_value {
    int64_t i;
    double f;
    int b;
} sl_value;

/* Decimal texts longer than this stay strings (a double could not hold them). */
#define SL_INFER_MAX_DECIMAL 64

/* Classify one cell's text s[0..len) (need not be NUL-terminated), decided
 * on the text stripped of surrounding ASCII whitespace (" 12" is 12), as the
 * original Braze importer does:
 *   SL_T_INT    `-?(0|[1-9][0-9]*)` fitting int64           -> out->i
 *   SL_T_FLOAT  `-?(0|[1-9][0-9]*)\.[0-9]*`, `-?\.[0-9]+`,
 *               finite (Python's float(): "5." and ".5" too) -> out->f
 *   SL_T_BOOL   true/false in any case                       -> out->b
 *   SL_T_JSON   `[...]` that parses as a JSON array, or as a Python list
 *               literal (strings in '' or "", True/False/None, ints,
 *               floats, nested lists)                        -> compact text in *json
 *   SL_T_STRING anything else (leading zeros, 1e5, +7, NaN, dates...)
 * Empty text and the null literal are the caller's business (see sl_is_blank
 * and sl_is_null_literal). `json` (caller-owned, reset first) is only written
 * for SL_T_JSON and may be NULL: the array is then validated but not kept.
 * Only the array case allocates. */
sl_type sl_infer_classify(const char *s, size_t len, unsigned rules, sl_value *out, sl_buf *json);

/* 1 if s is empty or only ASCII whitespace (space, tab, CR, LF, VT, FF). */
int sl_is_blank(const char *s, size_t len);
/* 1 if s, trimmed of ASCII whitespace, equals lit ignoring ASCII case. An
 * empty or NULL lit never matches. */
int sl_is_null_literal(const char *s, size_t len, const char *lit);

/* 1 if s[0..len) is valid UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), else 0 with the offset of the first
 * byte of the bad sequence in *bad_at (may be NULL). */
int sl_utf8_valid(const char *s, size_t len, size_t *bad_at);

/* Strict parsers for forced types. Surrounding ASCII whitespace is allowed,
 * anything else must be part of the value. 0 ok, -1 not that type. */
/* [+-]?[0-9]+ fitting int64; leading zeros allowed ("007" -> 7). */
int sl_parse_int_strict(const char *s, size_t len, int64_t *out);
/* [+-]?(digits[.digits]|.digits)([eE][+-]?digits)?, finite; no hex, inf, nan. */
int sl_parse_float_strict(const char *s, size_t len, double *out);
/* true/false/yes/no/1/0 in any case. */
int sl_parse_bool_word(const char *s, size_t len, int *out);

/* Format a double as the shortest text that reads back to the same value
 * ("0.5", "3", "1e+300"). Returns the length written to dst (cap >= 32). */
size_t sl_format_double(char *dst, size_t cap, double v);

/* A one-line excerpt of untrusted text for error messages: at most max bytes
 * of s, control characters and runs of whitespace shown as one space, "..."
 * appended when cut. Always NUL-terminates dst (cap > 0). Returns dst. */
char *sl_excerpt(char *dst, size_t cap, const char *s, size_t len, size_t max);

#endif
