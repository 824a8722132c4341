/* Record and batch model: see include/sluice/record.h. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sluice/json.h"
#include "sluice/log.h"
#include "sluice/record.h"

/* One record's string arena may not exceed this (a runaway CSV cell). */
#define SL_RECORD_MAX_BYTES ((size_t)64 * 1024 * 1024)

const char *sl_type_name(sl_type t)
{
    switch (t) {
    case SL_T_NULL:
        return "null";
    case SL_T_STRING:
        return "string";
    case SL_T_INT:
        return "integer";
    case SL_T_FLOAT:
        return "float";
    case SL_T_BOOL:
        return "boolean";
    case SL_T_JSON:
        return "json";
    }
    return "?";
}

void sl_record_init(sl_record *r)
{
    memset(r, 0, sizeof(*r));
    sl_buf_init(&r->data, SL_RECORD_MAX_BYTES);
    sl_buf_init(&r->reason, 4096);
}

void sl_record_free(sl_record *r)
{
    if (!r) {
        return;
    }
    free(r->fields);
    sl_buf_free(&r->data);
    sl_buf_free(&r->reason);
    memset(r, 0, sizeof(*r));
}

void sl_record_reset(sl_record *r)
{
    r->nfields = 0;
    sl_buf_reset(&r->data);
    sl_buf_reset(&r->reason);
    r->pos = 0;
    r->line = 0;
    r->next_line = 0;
    r->status = SL_REC_OK;
    r->stage = 0;
    r->action = NULL;
    r->raw_off = r->raw_len = 0;
}

sl_field *sl_record_add(sl_record *r, const char *name, uint32_t name_len)
{
    if (r->nfields == r->fcap) {
        uint32_t ncap = r->fcap ? r->fcap * 2 : 16;
        sl_field *f = realloc(r->fields, ncap * sizeof(*f));
        if (!f) {
            return NULL;
        }
        r->fields = f;
        r->fcap = ncap;
    }
    sl_field *f = &r->fields[r->nfields++];
    f->name = name;
    f->name_len = name_len;
    f->type = SL_T_NULL;
    f->flags = 0;
    f->v.i = 0;
    f->toff = f->tlen = 0;
    return f;
}

static int store(sl_record *r, sl_field *f, const char *s, size_t len)
{
    if (len > UINT32_MAX) {
        return SL_ERR_LIMIT;
    }
    size_t off = r->data.len;
    int rc = sl_buf_reserve(&r->data, len + 1);
    if (rc) {
        return rc;
    }
    if (len) {
        memcpy(r->data.data + off, s, len);
    }
    r->data.data[off + len] = '\0';
    r->data.len = off + len + 1; /* keep the NUL inside: every value is a C string */
    f->v.s.off = (uint32_t)off;
    f->v.s.len = (uint32_t)len;
    return 0;
}

int sl_field_set_str(sl_record *r, sl_field *f, const char *s, size_t len)
{
    f->type = SL_T_STRING;
    return store(r, f, s, len);
}

int sl_field_set_json(sl_record *r, sl_field *f, const char *json, size_t len)
{
    f->type = SL_T_JSON;
    return store(r, f, json, len);
}

int sl_record_add_str(sl_record *r, const char *name, uint32_t name_len, const char *s, size_t len)
{
    sl_field *f = sl_record_add(r, name, name_len);
    if (!f) {
        return SL_ERR_NOMEM;
    }
    return sl_field_set_str(r, f, s, len);
}

int sl_record_add_json(sl_record *r, const char *name, uint32_t name_len, const char *json,
                       size_t len)
{
    sl_field *f = sl_record_add(r, name, name_len);
    if (!f) {
        return SL_ERR_NOMEM;
    }
    return sl_field_set_json(r, f, json, len);
}

int sl_record_add_int(sl_record *r, const char *name, uint32_t name_len, int64_t v)
{
    sl_field *f = sl_record_add(r, name, name_len);
    if (!f) {
        return SL_ERR_NOMEM;
    }
    f->type = SL_T_INT;
    f->v.i = v;
    return 0;
}

int sl_record_add_float(sl_record *r, const char *name, uint32_t name_len, double v)
{
    sl_field *f = sl_record_add(r, name, name_len);
    if (!f) {
        return SL_ERR_NOMEM;
    }
    f->type = SL_T_FLOAT;
    f->v.f = v;
    return 0;
}

int sl_record_add_bool(sl_record *r, const char *name, uint32_t name_len, int v)
{
    sl_field *f = sl_record_add(r, name, name_len);
    if (!f) {
        return SL_ERR_NOMEM;
    }
    f->type = SL_T_BOOL;
    f->v.b = v ? 1 : 0;
    return 0;
}

int sl_record_add_null(sl_record *r, const char *name, uint32_t name_len)
{
    sl_field *f = sl_record_add(r, name, name_len);
    if (!f) {
        return SL_ERR_NOMEM;
    }
    f->type = SL_T_NULL;
    return 0;
}

sl_field *sl_record_get(const sl_record *r, const char *name)
{
    size_t n = strlen(name);
    for (uint32_t i = 0; i < r->nfields; i++) {
        sl_field *f = &r->fields[i];
        if (f->name_len == n && memcmp(f->name, name, n) == 0) {
            return f;
        }
    }
    return NULL;
}

static void set_reason(sl_record *r, const char *fmt, va_list ap)
{
    sl_buf_reset(&r->reason);
    sl_buf_vprintf(&r->reason, fmt, ap);
    if (r->reason.data) {
        sl_redact(r->reason.data, r->reason.cap);
        r->reason.len = strlen(r->reason.data);
    }
}

int sl_record_reject(sl_record *r, int stage, const char *fmt, ...)
{
    if (r->status != SL_REC_FAILED) {
        r->status = SL_REC_REJECTED;
    }
    r->stage = (int8_t)stage;
    va_list ap;
    va_start(ap, fmt);
    set_reason(r, fmt, ap);
    va_end(ap);
    return 0;
}

void sl_record_fail(sl_record *r, const char *fmt, ...)
{
    r->status = SL_REC_FAILED;
    r->stage = SL_STAGE_SINK;
    va_list ap;
    va_start(ap, fmt);
    set_reason(r, fmt, ap);
    va_end(ap);
}

void sl_jw_field(sl_jw *w, const sl_record *r, const sl_field *f)
{
    switch ((sl_type)f->type) {
    case SL_T_NULL:
        sl_jw_null(w);
        break;
    case SL_T_STRING:
        sl_jw_str(w, sl_field_str(r, f), f->v.s.len);
        break;
    case SL_T_INT:
        sl_jw_int(w, f->v.i);
        break;
    case SL_T_FLOAT:
        if (f->flags & SL_FIELD_NUMTEXT) {
            sl_jw_raw(w, r->data.data + f->toff, f->tlen);
        } else {
            sl_jw_double(w, f->v.f);
        }
        break;
    case SL_T_BOOL:
        sl_jw_bool(w, f->v.b);
        break;
    case SL_T_JSON:
        sl_jw_raw(w, sl_field_str(r, f), f->v.s.len);
        break;
    }
}

int sl_record_to_json(const sl_record *r, sl_buf *out)
{
    sl_jw w;
    sl_jw_init(&w, out);
    sl_jw_obj_open(&w);
    for (uint32_t i = 0; i < r->nfields; i++) {
        const sl_field *f = &r->fields[i];
        if (f->flags & SL_FIELD_OMIT) {
            continue;
        }
        sl_jw_key(&w, f->name, f->name_len);
        sl_jw_field(&w, r, f);
    }
    sl_jw_obj_close(&w);
    return w.err;
}

int sl_record_from_json(sl_record *r, const char *json, sl_intern_fn intern, void *ud,
                        sl_error *err)
{
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return sl_error_set(err, SL_ERR_INPUT, "stored record is not a JSON object (%s)",
                            root ? "wrong type" : jerr.text);
    }
    const char *key;
    json_t *val;
    int rc = 0;
    json_object_foreach(root, key, val)
    {
        const char *nm = intern(ud, key);
        if (!nm) {
            rc = SL_ERR_NOMEM;
            break;
        }
        uint32_t nl = (uint32_t)strlen(nm);
        switch (json_typeof(val)) {
        case JSON_STRING:
            rc = sl_record_add_str(r, nm, nl, json_string_value(val), json_string_length(val));
            break;
        case JSON_INTEGER:
            rc = sl_record_add_int(r, nm, nl, json_integer_value(val));
            break;
        case JSON_REAL:
            rc = sl_record_add_float(r, nm, nl, json_real_value(val));
            break;
        case JSON_TRUE:
            rc = sl_record_add_bool(r, nm, nl, 1);
            break;
        case JSON_FALSE:
            rc = sl_record_add_bool(r, nm, nl, 0);
            break;
        case JSON_NULL:
            rc = sl_record_add_null(r, nm, nl);
            break;
        default: {
            char *txt = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
            rc = txt ? sl_record_add_json(r, nm, nl, txt, strlen(txt)) : SL_ERR_NOMEM;
            free(txt);
        }
        }
        if (rc) {
            break;
        }
    }
    json_decref(root);
    if (rc) {
        return sl_error_set(err, rc, "stored record could not be rebuilt");
    }
    return 0;
}

int sl_record_copy(sl_record *dst, const sl_record *src)
{
    sl_record_reset(dst);
    if (dst->fcap < src->nfields) {
        sl_field *f = realloc(dst->fields, src->nfields * sizeof(*f));
        if (!f) {
            return SL_ERR_NOMEM;
        }
        dst->fields = f;
        dst->fcap = src->nfields;
    }
    if (src->nfields) {
        memcpy(dst->fields, src->fields, src->nfields * sizeof(sl_field));
    }
    dst->nfields = src->nfields;
    int rc = sl_buf_append(&dst->data, src->data.data ? src->data.data : "", src->data.len);
    if (rc) {
        return rc;
    }
    if (src->reason.len) {
        sl_buf_append(&dst->reason, src->reason.data, src->reason.len);
    }
    dst->pos = src->pos;
    dst->line = src->line;
    dst->next_line = src->next_line;
    dst->status = src->status;
    dst->stage = src->stage;
    dst->action = src->action;
    dst->raw_off = src->raw_off;
    dst->raw_len = src->raw_len;
    return 0;
}

void sl_batch_init(sl_batch *b)
{
    memset(b, 0, sizeof(*b));
}

void sl_batch_free(sl_batch *b)
{
    if (!b) {
        return;
    }
    for (size_t i = 0; i < b->cap; i++) {
        sl_record_free(&b->recs[i]);
    }
    free(b->recs);
    memset(b, 0, sizeof(*b));
}

void sl_batch_reset(sl_batch *b)
{
    b->n = 0;
    b->seq = 0;
    b->start_pos = b->end_pos = 0;
    b->start_line = b->end_line = 0;
    b->nsend = 0;
    b->bytes = 0;
    b->attempts = 0;
}

sl_record *sl_batch_push(sl_batch *b)
{
    if (b->n == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 32;
        sl_record *r = realloc(b->recs, ncap * sizeof(*r));
        if (!r) {
            return NULL;
        }
        for (size_t i = b->cap; i < ncap; i++) {
            sl_record_init(&r[i]);
        }
        b->recs = r;
        b->cap = ncap;
    }
    sl_record *r = &b->recs[b->n++];
    sl_record_reset(r);
    return r;
}

void sl_batch_pop(sl_batch *b)
{
    if (b->n) {
        b->n--;
    }
}
