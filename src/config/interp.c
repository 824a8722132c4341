/* Environment interpolation in config scalars.
 *
 *   ${VAR}           value of VAR; error when VAR is unset (empty is fine)
 *   ${VAR:-default}  default when VAR is unset or empty (as in sh)
 *   ${VAR-default}   default only when VAR is unset
 *   $$               a literal '$'
 *   $ followed by anything else is kept as is ("costs $5")
 *
 * A default may itself contain ${...} (up to 8 levels); it is only expanded
 * when used, so an unset variable inside an unused default is no error.
 * Messages name variables, never their values. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

/* Longest interpolated value. */
#define INTERP_MAX ((size_t)1024 * 1024)
#define INTERP_MAX_NESTING 8
#define VAR_NAME_MAX 128

typedef struct interp {
    const char *p;
    char *err;
    size_t errcap;
} interp;

static int fail(interp *in, const char *msg, const char *name)
{
    if (in->err && in->errcap) {
        if (name) {
            snprintf(in->err, in->errcap, msg, name);
        } else {
            snprintf(in->err, in->errcap, "%s", msg);
        }
    }
    return -1;
}

static int emit(sl_buf *out, const char *s, size_t n, interp *in)
{
    if (!out) {
        return 0; /* skipping an unused default */
    }
    if (sl_buf_append(out, s, n) != 0) {
        return fail(in, "value too long after interpolation (expected at most 1 MB)", NULL);
    }
    return 0;
}

/* Expand from in->p into out (NULL: only skip over the text). Inside a
 * default (nested > 0) stop at the matching '}' and consume it. */
static int expand(interp *in, sl_buf *out, int nested)
{
    for (;;) {
        const char *p = in->p;
        char c = *p;
        if (c == '\0') {
            if (nested) {
                return fail(in, "unterminated ${ (expected ${NAME} or ${NAME:-default})", NULL);
            }
            return 0;
        }
        if (nested && c == '}') {
            in->p = p + 1;
            return 0;
        }
        if (c != '$' || (p[1] != '$' && p[1] != '{')) {
            /* copy a run of ordinary text */
            size_t n = 1;
            while (p[n] && p[n] != '$' && !(nested && p[n] == '}')) {
                n++;
            }
            if (emit(out, p, n, in) < 0) {
                return -1;
            }
            in->p = p + n;
            continue;
        }
        if (p[1] == '$') {
            if (emit(out, "$", 1, in) < 0) {
                return -1;
            }
            in->p = p + 2;
            continue;
        }

        /* ${NAME...} */
        const char *q = p + 2;
        char name[VAR_NAME_MAX + 1];
        size_t nl = 0;
        if (!(isalpha((unsigned char)*q) || *q == '_')) {
            return fail(in, "invalid variable reference (expected ${NAME} or ${NAME:-default})",
                        NULL);
        }
        while (isalnum((unsigned char)q[nl]) || q[nl] == '_') {
            if (nl >= VAR_NAME_MAX) {
                return fail(in, "variable name too long (expected at most 128 characters)", NULL);
            }
            name[nl] = q[nl];
            nl++;
        }
        name[nl] = '\0';
        q += nl;

        const char *val = out ? getenv(name) : NULL;
        if (*q == '}') {
            if (out && !val) {
                return fail(in, "environment variable %s is not set", name);
            }
            if (val && emit(out, val, strlen(val), in) < 0) {
                return -1;
            }
            in->p = q + 1;
            continue;
        }
        int colon = 0;
        if (q[0] == ':' && q[1] == '-') {
            colon = 1;
            q += 2;
        } else if (q[0] == '-') {
            q += 1;
        } else if (*q == '\0') {
            return fail(in, "unterminated ${ (expected ${NAME} or ${NAME:-default})", NULL);
        } else {
            return fail(in, "invalid variable reference (expected ${NAME} or ${NAME:-default})",
                        NULL);
        }
        if (nested >= INTERP_MAX_NESTING) {
            return fail(in, "defaults nested too deeply (expected at most 8 levels)", NULL);
        }
        int use_default = out && (!val || (colon && !*val));
        in->p = q;
        if (expand(in, use_default ? out : NULL, nested + 1) < 0) {
            return -1;
        }
        if (out && !use_default && emit(out, val, strlen(val), in) < 0) {
            return -1;
        }
    }
}

char *sl_interpolate(const char *s, char *errmsg, size_t errcap)
{
    if (errmsg && errcap) {
        errmsg[0] = '\0';
    }
    if (!s) {
        return NULL;
    }
    sl_buf out;
    sl_buf_init(&out, INTERP_MAX);
    interp in = {.p = s, .err = errmsg, .errcap = errcap};
    if (expand(&in, &out, 0) < 0) {
        sl_buf_free(&out);
        return NULL;
    }
    if (!out.data) {
        char *empty = strdup("");
        if (!empty) {
            fail(&in, "out of memory", NULL);
        }
        return empty;
    }
    return sl_buf_steal(&out);
}

int cfg_interpolate_tree(sl_node *n, const char *file, const char *path, sl_buf *errors)
{
    if (!n) {
        return 0;
    }
    int bad = 0;
    if (n->kind == SL_NODE_SCALAR) {
        if (!n->value || !strchr(n->value, '$')) {
            return 0;
        }
        char msg[256];
        char *v = sl_interpolate(n->value, msg, sizeof(msg));
        free(n->value);
        n->value = v;
        if (!v) {
            cfg_err(errors, file, n->line, n->col, path, "%s", msg);
            bad = 1;
        }
        return bad;
    }
    for (size_t i = 0; i < n->n; i++) {
        char kpath[CFG_PATH_MAX];
        if (n->kind == SL_NODE_MAP) {
            cfg_path_key(kpath, sizeof(kpath), path, n->keys[i]);
        } else {
            cfg_path_index(kpath, sizeof(kpath), path, i);
        }
        bad += cfg_interpolate_tree(n->kids[i], file, kpath, errors);
    }
    return bad;
}
