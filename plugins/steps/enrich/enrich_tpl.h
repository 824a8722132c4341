/* enrich: request templates and response mapping, kept apart from the plugin
 * so unit tests can drive them directly. */
#ifndef SLUICE_ENRICH_TPL_H
#define SLUICE_ENRICH_TPL_H

#include <jansson.h>

#include "sluice/plugin.h"

/* A compiled template: literal text with {field} references. A '{' not
 * followed by a field name (a letter or '_', then letters, digits, '_', '.' or '-') and '}'
 * is literal, so JSON
 * text such as {"email":"{email}"} needs no escaping. */
typedef struct sl_tpl_part {
    char *text; /* literal (ref = 0) or field name (ref = 1), owned */
    size_t len;
    int ref;
} sl_tpl_part;

typedef struct sl_tpl {
    sl_tpl_part *parts;
    size_t n;
} sl_tpl;

enum sl_tpl_escape { SL_TPL_RAW, SL_TPL_JSON, SL_TPL_URL };

int sl_tpl_compile(sl_tpl *t, const char *text, sl_error *err);
void sl_tpl_free(sl_tpl *t);
/* Append the rendering for rec to out, each value escaped for its place
 * (JSON string body, URL component). key_field's value is replaced by
 * key_value (the normalised key). A missing field fails (<0, err names it);
 * a NULL or omitted value renders as "". */
int sl_tpl_render(const sl_tpl *t, const sl_record *rec, const char *key_field,
                  const char *key_value, enum sl_tpl_escape esc, sl_buf *out, sl_error *err);

/* The value at a dotted path ("details.photos", "details.emails.0.value"):
 * numeric segments index arrays. Borrowed; NULL when absent. */
json_t *sl_json_path(json_t *root, const char *path);

/* Set (replace or add) field `name` of rec to v (NULL or json null -> NULL
 * field; string, integer, real, bool; objects and arrays as raw JSON). name is
 * borrowed and must outlive the record. */
int sl_rec_set_json_value(sl_record *rec, const char *name, json_t *v);

/* 1 when s (len bytes) looks like an e-mail address FullContact accepts:
 * one '@', a local part, a dotted domain, no spaces or control characters,
 * at most 320 bytes. */
int sl_email_valid(const char *s, size_t len);

#endif
