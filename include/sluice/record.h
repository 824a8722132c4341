/* The record model shared by every source, step and sink.
 *
 * A record is an ordered list of typed fields. String (and raw JSON) values
 * live in the record's own byte arena `data`, NUL-terminated, addressed by
 * offset so the arena can grow. Field names are borrowed: they must outlive
 * the run (a source's header, a plugin's config). Records and batches are
 * pooled and reset between uses, so steady-state processing does not allocate.
 */
#ifndef SLUICE_RECORD_H
#define SLUICE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/json.h"

typedef enum sl_type {
    SL_T_NULL = 0,
    SL_T_STRING,
    SL_T_INT,
    SL_T_FLOAT,
    SL_T_BOOL,
    SL_T_JSON, /* raw JSON text (array/object), already validated */
} sl_type;

const char *sl_type_name(sl_type t);

/* Field flags */
#define SL_FIELD_OMIT 0x01  /* present in the input but not to be sent (e.g. empty cell) */
#define SL_FIELD_FIXED 0x02 /* type decided (e.g. by a cast): later inference leaves it alone */
#define SL_FIELD_NUMTEXT                                                                           \
    0x04 /* INT/FLOAT whose input text (toff/tlen) is a valid JSON                                 \
            number: writers copy it instead of formatting the double */

typedef struct sl_field {
    const char *name; /* borrowed, see above */
    uint32_t name_len;
    uint8_t type;  /* sl_type */
    uint8_t flags; /* SL_FIELD_* */
    union {
        struct {
            uint32_t off, len; /* into record->data */
        } s;
        int64_t i;
        double f;
        int b;
    } v;
    uint32_t toff, tlen; /* SL_FIELD_NUMTEXT: the number as written in the input */
} sl_field;

typedef enum sl_rec_status {
    SL_REC_OK = 0,   /* to be delivered */
    SL_REC_SKIP,     /* dropped on purpose by a step (counted as skipped) */
    SL_REC_REJECTED, /* bad input (source/step): goes to dead letters, not sent */
    SL_REC_FAILED,   /* the sink refused it: goes to dead letters */
} sl_rec_status;

typedef struct sl_record {
    sl_field *fields;
    uint32_t nfields, fcap;
    sl_buf data;        /* string arena, owned */
    uint64_t pos;       /* source position where the record starts (e.g. byte offset) */
    uint64_t line;      /* 1-based input line/row where it starts, 0 if meaningless */
    uint64_t next_line; /* line where the input continues after it (set by sources
                           together with *next_pos; 0 = line + 1) */
    uint8_t status;     /* sl_rec_status */
    int8_t stage;       /* where it was rejected: -1 source, 0..n-1 step index, 127 sink */
    const char *action; /* borrowed static string ("upsert", "new", "lapsed"...), or NULL */
    /* The record's input line as read, when a source offers it in the one
     * dialect sinks may pass through unchanged: RFC 4180 CSV with ',' and
     * '"', an empty unquoted cell meaning NULL, fields in header order, no
     * line terminator. raw_len 0 = none. The engine drops it when the
     * pipeline has steps (they may change the fields). */
    uint32_t raw_off, raw_len;
    sl_buf reason; /* why it was rejected/failed (human sentence), owned */
} sl_record;

#define SL_STAGE_SOURCE (-1)
#define SL_STAGE_SINK 127

void sl_record_init(sl_record *r);
void sl_record_free(sl_record *r);
/* Clear fields, status and reason; keeps capacity. */
void sl_record_reset(sl_record *r);

/* Append a field; returns it (value unset, type NULL) or NULL when out of memory. */
sl_field *sl_record_add(sl_record *r, const char *name, uint32_t name_len);
int sl_record_add_str(sl_record *r, const char *name, uint32_t name_len, const char *s, size_t len);
int sl_record_add_int(sl_record *r, const char *name, uint32_t name_len, int64_t v);
int sl_record_add_float(sl_record *r, const char *name, uint32_t name_len, double v);
int sl_record_add_bool(sl_record *r, const char *name, uint32_t name_len, int v);
int sl_record_add_null(sl_record *r, const char *name, uint32_t name_len);
int sl_record_add_json(sl_record *r, const char *name, uint32_t name_len, const char *json,
                       size_t len);
/* Replace a field's value with a new string/JSON stored in the arena. */
int sl_field_set_str(sl_record *r, sl_field *f, const char *s, size_t len);
int sl_field_set_json(sl_record *r, sl_field *f, const char *json, size_t len);

/* First field with that name, or NULL. */
sl_field *sl_record_get(const sl_record *r, const char *name);
static inline const char *sl_field_str(const sl_record *r, const sl_field *f)
{
    return r->data.data + f->v.s.off;
}

/* Mark the record rejected (status REJECTED unless already FAILED) at stage,
 * with a reason. Returns 0. */
int sl_record_reject(sl_record *r, int stage, const char *fmt, ...) SL_PRINTF(3, 4);

/* Write the record as one JSON object {"name": value, ...}, fields flagged
 * OMIT excluded. Used for dead letters and --dry-run samples. */
int sl_record_to_json(const sl_record *r, sl_buf *out);
/* Write one field's value (not its name) as JSON. The one place that maps
 * sl_type to JSON, shared by every JSON-speaking sink. */
void sl_jw_field(sl_jw *w, const sl_record *r, const sl_field *f);

/* Rebuild a record from such a JSON object (dead-letter retry). Field names
 * must outlive the record: each is passed through intern(ud, name), which
 * returns a stable copy (or NULL when out of memory). */
typedef const char *(*sl_intern_fn)(void *ud, const char *name);
int sl_record_from_json(sl_record *r, const char *json, sl_intern_fn intern, void *ud,
                        sl_error *err);

/* Copy src into dst (dst reset first). Names stay borrowed. */
int sl_record_copy(sl_record *dst, const sl_record *src);

/* A batch: what one sink call (one HTTP request, one SQL transaction) carries. */
typedef struct sl_batch {
    sl_record *recs;
    size_t n, cap;
    uint64_t seq;       /* engine-assigned, increases by one per batch */
    uint64_t start_pos; /* position of the first record */
    uint64_t start_line;
    uint64_t end_pos; /* position just past the last record */
    uint64_t end_line;
    size_t nsend; /* records with status OK */
    size_t bytes; /* approximate payload size of OK records */
    int attempts; /* delivery attempts so far */
} sl_batch;

void sl_batch_init(sl_batch *b);
void sl_batch_free(sl_batch *b);
void sl_batch_reset(sl_batch *b);
/* Next record slot (reset, ready to fill), growing the batch; NULL on OOM. */
sl_record *sl_batch_push(sl_batch *b);
/* Give back the last slot taken with sl_batch_push (record was dropped). */
void sl_batch_pop(sl_batch *b);

#endif
