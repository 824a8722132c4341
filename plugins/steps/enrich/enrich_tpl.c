/* enrich: request templates ({field} substitution) and response mapping
 * (dotted JSON paths into record fields). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enrich_tpl.h"

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static int add_part(sl_tpl *t, const char *s, size_t len, int ref)
{
    if (len == 0 && !ref) {
        return 0;
    }
    sl_tpl_part *np = realloc(t->parts, (t->n + 1) * sizeof(*np));
    if (!np) {
        return SL_ERR_NOMEM;
    }
    t->parts = np;
    char *text = malloc(len + 1);
    if (!text) {
        return SL_ERR_NOMEM;
    }
    memcpy(text, s, len);
    text[len] = '\0';
    t->parts[t->n++] = (sl_tpl_part){.text = text, .len = len, .ref = ref};
    return 0;
}

int sl_tpl_compile(sl_tpl *t, const char *text, sl_error *err)
{
    memset(t, 0, sizeof(*t));
    const char *lit = text;
    const char *p = text;
    while (*p) {
        if (*p == '{') {
            const char *q = p + 1;
            int starts = (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || *q == '_';
            while (starts && is_name_char(*q)) {
                q++;
            }
            if (q > p + 1 && *q == '}') {
                if (add_part(t, lit, (size_t)(p - lit), 0) != 0 ||
                    add_part(t, p + 1, (size_t)(q - p - 1), 1) != 0) {
                    sl_tpl_free(t);
                    return sl_error_set(err, SL_ERR_NOMEM, "out of memory compiling a template");
                }
                p = lit = q + 1;
                continue;
            }
        }
        p++;
    }
    if (add_part(t, lit, (size_t)(p - lit), 0) != 0) {
        sl_tpl_free(t);
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory compiling a template");
    }
    return 0;
}

void sl_tpl_free(sl_tpl *t)
{
    if (!t) {
        return;
    }
    for (size_t i = 0; i < t->n; i++) {
        free(t->parts[i].text);
    }
    free(t->parts);
    memset(t, 0, sizeof(*t));
}

static int put_escaped(sl_buf *out, const char *s, size_t len, enum sl_tpl_escape esc)
{
    if (esc == SL_TPL_JSON) {
        return sl_json_escape(out, s, len);
    }
    if (esc == SL_TPL_RAW) {
        return sl_buf_append(out, s, len);
    }
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '~';
        int rc = plain ? sl_buf_putc(out, (char)c)
                       : sl_buf_printf(out, "%%%c%c", hex[c >> 4], hex[c & 15]);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

int sl_tpl_render(const sl_tpl *t, const sl_record *rec, const char *key_field,
                  const char *key_value, enum sl_tpl_escape esc, sl_buf *out, sl_error *err)
{
    for (size_t i = 0; i < t->n; i++) {
        const sl_tpl_part *p = &t->parts[i];
        int rc = 0;
        if (!p->ref) {
            rc = sl_buf_append(out, p->text, p->len);
        } else if (key_field && key_value && strcmp(p->text, key_field) == 0) {
            rc = put_escaped(out, key_value, strlen(key_value), esc);
        } else {
            const sl_field *f = sl_record_get(rec, p->text);
            if (!f) {
                return sl_error_set(err, SL_ERR_INPUT,
                                    "the template needs field '%s', which the record does not have",
                                    p->text);
            }
            char num[64];
            if (f->flags & SL_FIELD_OMIT) {
                continue;
            }
            switch (f->type) {
            case SL_T_STRING:
            case SL_T_JSON:
                rc = put_escaped(out, sl_field_str(rec, f), f->v.s.len, esc);
                break;
            case SL_T_INT:
                snprintf(num, sizeof(num), "%lld", (long long)f->v.i);
                rc = put_escaped(out, num, strlen(num), esc);
                break;
            case SL_T_FLOAT:
                snprintf(num, sizeof(num), "%.17g", f->v.f);
                rc = put_escaped(out, num, strlen(num), esc);
                break;
            case SL_T_BOOL:
                rc = put_escaped(out, f->v.b ? "true" : "false", f->v.b ? 4 : 5, esc);
                break;
            default:
                break;
            }
        }
        if (rc != 0) {
            return sl_error_set(err, rc, "the rendered request is over its size limit");
        }
    }
    return 0;
}

json_t *sl_json_path(json_t *root, const char *path)
{
    json_t *cur = root;
    const char *p = path;
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        char seg[256];
        if (len == 0 || len >= sizeof(seg)) {
            return NULL;
        }
        memcpy(seg, p, len);
        seg[len] = '\0';
        if (json_is_array(cur)) {
            char *end = NULL;
            unsigned long idx = strtoul(seg, &end, 10);
            cur = *end == '\0' ? json_array_get(cur, idx) : NULL;
        } else if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else {
            return NULL;
        }
        p += len;
        if (*p == '.') {
            p++;
        }
    }
    return cur;
}

int sl_rec_set_json_value(sl_record *rec, const char *name, json_t *v)
{
    uint32_t nlen = (uint32_t)strlen(name);
    sl_field *f = sl_record_get(rec, name);
    if (!f) {
        if (!sl_record_add(rec, name, nlen)) {
            return SL_ERR_NOMEM;
        }
        f = sl_record_get(rec, name);
    }
    f->flags = 0;
    if (!v || json_is_null(v)) {
        f->type = SL_T_NULL;
        return 0;
    }
    if (json_is_string(v)) {
        return sl_field_set_str(rec, f, json_string_value(v), json_string_length(v));
    }
    if (json_is_integer(v)) {
        f->type = SL_T_INT;
        f->v.i = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        f->type = SL_T_FLOAT;
        f->v.f = json_real_value(v);
        return 0;
    }
    if (json_is_boolean(v)) {
        f->type = SL_T_BOOL;
        f->v.b = json_is_true(v);
        return 0;
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        return SL_ERR_NOMEM;
    }
    int rc = sl_field_set_json(rec, f, text, strlen(text));
    free(text);
    return rc;
}

int sl_email_valid(const char *s, size_t len)
{
    if (len == 0 || len > 320 || memchr(s, '\0', len)) {
        return 0;
    }
    const char *at = memchr(s, '@', len);
    if (!at || at == s) {
        return 0;
    }
    const char *dom = at + 1;
    size_t dlen = len - (size_t)(dom - s);
    if (dlen < 3 || memchr(dom, '@', dlen) || !memchr(dom, '.', dlen) || dom[0] == '.' ||
        dom[dlen - 1] == '.') {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f) {
            return 0;
        }
    }
    return 1;
}
