/* http_pages source: the pure parts (window, offsets, positions, the ledger of
 * failed pages, URLs), exposed for unit tests. Plugins never include this;
 * the plugin itself is sl_source_http_pages. See docs/sources/http_pages.md. */
#ifndef SLUICE_HTTP_PAGES_H
#define SLUICE_HTTP_PAGES_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/error.h"

/* A time filter [since, before): since < 0 means no lower bound, before < 0
 * no upper bound. Whole unix seconds. */
typedef struct hp_window {
    double since, before;
} hp_window;

/* The window a run pulls: [cursor - overlap, run start) when a cursor exists
 * (cursor >= 0), else (-inf, run start). Seconds are truncated, so a member
 * changed in the run's first second is covered by the next run's overlap. */
hp_window hp_window_for(double cursor, double run_started, int64_t overlap_ms);

/* ISO 8601 UTC with an explicit offset: 2024-05-01T10:00:00+00:00. */
int hp_format_time(double t, char *out, size_t cap);
/* Accepts that form, 'Z', or any +hh:mm / -hh:mm offset. 0 ok, -1 invalid. */
int hp_parse_time(const char *s, double *out);

/* Pages of `total` records at page_size each (0 for an empty window). */
uint64_t hp_page_count(int64_t total, int64_t page_size);
/* Offset of page k: k * page_size (never the page number). */
int64_t hp_page_offset(uint64_t page, int64_t page_size);

/* Record positions: (pass, page, index in page), ordered as emitted.
 * pass 0 = the previous run's failed pages (page = ledger index), passes
 * 1..15 = walks over the window. */
#define HP_POS_PASS_BITS 4
#define HP_POS_PAGE_BITS 36
#define HP_POS_INDEX_BITS 24
#define HP_MAX_PASS ((1u << HP_POS_PASS_BITS) - 1)
#define HP_MAX_PAGE ((UINT64_C(1) << HP_POS_PAGE_BITS) - 1)
#define HP_MAX_INDEX ((UINT64_C(1) << HP_POS_INDEX_BITS) - 1)
uint64_t hp_pos_encode(unsigned pass, uint64_t page, uint64_t index);
void hp_pos_decode(uint64_t pos, unsigned *pass, uint64_t *page, uint64_t *index);

/* One page that failed after its retries: enough to fetch it again. */
typedef struct hp_failed {
    hp_window w;
    int64_t offset, count;
    char *error; /* owned; URL and status, never a secret */
    int attempts;
} hp_failed;

typedef struct hp_ledger {
    hp_failed *v;
    size_t n, cap;
} hp_ledger;

void hp_ledger_free(hp_ledger *l);
/* Add (copying error); an entry for the same window, offset and count is
 * updated instead (attempts added up). 0 or SL_ERR_NOMEM. */
int hp_ledger_add(hp_ledger *l, hp_window w, int64_t offset, int64_t count, const char *error,
                  int attempts);
/* [{"since":"…"|null,"before":"…"|null,"offset":N,"count":N,"error":"…","attempts":N}] */
int hp_ledger_to_json(const hp_ledger *l, sl_buf *out);
/* Parse what hp_ledger_to_json wrote into l (appended). 0 or <0 with err. */
int hp_ledger_from_json(hp_ledger *l, const char *json, sl_error *err);

/* Append "name=value" to a URL being built (percent-encoding both; '?' or
 * '&' chosen by whether url already holds a '?'). */
int hp_url_param(sl_buf *url, const char *name, const char *value);

/* Parse a rate "10/s", "90/m", "3000/3s", "5/h" or a number per second.
 * "" or "unlimited" is 0. 0 ok, -1 invalid. */
int hp_parse_rate(const char *s, double *per_sec);

/* Interned field names: records borrow them for the whole run. */
#define HP_MAX_NAMES 4096 /* distinct field names across a run */
typedef struct hp_names {
    char **v; /* NUL-terminated copies, owned */
    uint32_t *len;
    size_t n, cap;
} hp_names;

void hp_names_free(hp_names *n);
/* Index of name [name, name+len), added when new; hint is the index to try
 * first (the key's place in the previous item). -1 when the table holds
 * HP_MAX_NAMES names or memory runs out. */
long hp_names_intern(hp_names *n, const char *name, size_t len, size_t hint);

/* A parsed page (page.c): one pass over a copy of the body. */
enum { HP_V_NULL = 0, HP_V_STR, HP_V_INT, HP_V_REAL, HP_V_TRUE, HP_V_FALSE, HP_V_JSON };

typedef struct hp_val {
    uint32_t name;     /* index in hp_names */
    uint8_t type;      /* HP_V_* */
    uint32_t off, len; /* STR (unescaped), JSON (compact text), INT/REAL (text): bytes in buf */
    union {
        int64_t i;
        double f;
    } n;
} hp_val;

/* One item of the records array: vals[first .. first+n) when it is an object. */
typedef struct hp_item {
    uint32_t first, n;
    int32_t key; /* index in vals of the key field, or -1 */
    uint8_t object;
} hp_item;

typedef struct hp_page_doc {
    char *buf; /* the body, rewritten in place by the scan; owned */
    size_t len, cap;
    hp_val *vals;
    size_t nvals, vcap;
    hp_item *items;
    size_t nitems, icap;
    /* repeated keys in an item: per name, the item (gen) and value that holds it */
    uint32_t *stamp, *slot;
    size_t scap, slcap, stamp_init;
    uint32_t gen;
    int has_records; /* the records path holds an array */
    int has_total;   /* the total path holds an integer >= 0 */
    int64_t total;
    int has_next;                /* the next path holds a non-empty string */
    uint32_t next_off, next_len; /* in buf, NUL-terminated */
} hp_page_doc;

/* What to find in a page: dotted paths ("" = the page itself, for records;
 * NULL or "" = not wanted, for total and next) and the index of the key
 * field's name (-1 none). */
typedef struct hp_paths {
    const char *records, *total, *next;
    long key_name;
} hp_paths;

#define HP_PARSE_SYNTAX (-100) /* not JSON: why says what and at which byte */
#define HP_PARSE_NAMES (-101)  /* more than HP_MAX_NAMES distinct field names */

/* Parse body into d (buffers reused across pages). 0 ok (then see
 * has_records / has_total / has_next), HP_PARSE_SYNTAX, HP_PARSE_NAMES or
 * SL_ERR_NOMEM. On failure d holds no items. */
int hp_page_parse(hp_page_doc *d, const char *body, size_t len, const hp_paths *paths,
                  hp_names *names, char *why, size_t whycap);
void hp_page_doc_reset(hp_page_doc *d);
void hp_page_doc_free(hp_page_doc *d);

#endif
