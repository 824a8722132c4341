/* YAML text -> sl_node tree, with 1-based line/column on every node and key.
 *
 * libyaml's document API does the parsing. Aliases are expanded into copies
 * (the tree stays a tree, so interpolation and freeing stay simple) and the
 * merge key `<<: *base` is honoured: explicit keys win over merged ones, and
 * earlier merge sources win over later ones. A node budget and a depth limit
 * keep a hostile file ("billion laughs", self-referencing anchors) from
 * exhausting memory or the stack.
 *
 * libyaml's own cost is bounded before its document is built: the text may be
 * at most YAML_MAX_BYTES (its document takes ~30 bytes of memory per byte of
 * text), and a first pass over the parser's events stops at the first node
 * nested deeper than YAML_MAX_DEPTH (libyaml's scanner is quadratic in flow
 * nesting: 100,000 `[` took 19 s). */
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "config/internal.h"

/* Nodes a document may expand to (aliases included). */
#define YAML_MAX_NODES 200000
/* Keys in one mapping. */
#define YAML_MAX_KEYS 20000
/* Nesting of mappings and sequences. */
#define YAML_MAX_DEPTH 64
/* Size of the configuration text. */
#define YAML_MAX_BYTES ((size_t)1024 * 1024)

typedef struct conv {
    yaml_document_t *doc;
    const char *file;
    sl_buf *errors;
    size_t nodes;
    int failed;
    int budget_reported;
} conv;

static sl_node *convert(conv *cv, yaml_node_t *yn, const char *path, int depth);

void sl_node_free(sl_node *n)
{
    if (!n) {
        return;
    }
    free(n->value);
    for (size_t i = 0; i < n->n; i++) {
        sl_node_free(n->kids[i]);
        if (n->keys) {
            free(n->keys[i]);
        }
    }
    free(n->kids);
    free(n->keys);
    free(n->key_line);
    free(n->key_col);
    for (size_t i = 0; i < n->ntmpl; i++) {
        free(n->tmpl[i]);
    }
    free(n->tmpl);
    free(n);
}

static sl_node *node_new(conv *cv, sl_node_kind kind, const yaml_mark_t *m, const char *path)
{
    if (++cv->nodes > YAML_MAX_NODES) {
        if (!cv->budget_reported) {
            cfg_err(cv->errors, cv->file, (int)m->line + 1, (int)m->column + 1, path,
                    "document too large after expanding aliases (expected at most %d nodes)",
                    YAML_MAX_NODES);
            cv->budget_reported = 1;
        }
        cv->failed = 1;
        return NULL;
    }
    sl_node *n = calloc(1, sizeof(*n));
    if (!n) {
        cfg_err(cv->errors, cv->file, 0, 0, NULL, "out of memory");
        cv->failed = 1;
        return NULL;
    }
    n->kind = kind;
    n->line = (int)m->line + 1;
    n->col = (int)m->column + 1;
    return n;
}

/* Reserve room for cap children (and keys for a map). 0 ok, -1 OOM. */
static int node_reserve(sl_node *n, size_t cap)
{
    if (cap == 0) {
        return 0;
    }
    n->kids = calloc(cap, sizeof(*n->kids));
    if (!n->kids) {
        return -1;
    }
    if (n->kind == SL_NODE_MAP) {
        n->keys = calloc(cap, sizeof(*n->keys));
        n->key_line = calloc(cap, sizeof(*n->key_line));
        n->key_col = calloc(cap, sizeof(*n->key_col));
        if (!n->keys || !n->key_line || !n->key_col) {
            return -1;
        }
    }
    return 0;
}

static sl_node *convert_scalar(conv *cv, yaml_node_t *yn, const char *path)
{
    sl_node *n = node_new(cv, SL_NODE_SCALAR, &yn->start_mark, path);
    if (!n) {
        return NULL;
    }
    size_t len = yn->data.scalar.length;
    if (memchr(yn->data.scalar.value, '\0', len)) {
        cfg_err(cv->errors, cv->file, n->line, n->col, path,
                "NUL character in value (expected text)");
        cv->failed = 1;
    }
    n->value = strndup((const char *)yn->data.scalar.value, len);
    if (!n->value) {
        cv->failed = 1;
    }
    return n;
}

static sl_node *convert_seq(conv *cv, yaml_node_t *yn, const char *path, int depth)
{
    sl_node *n = node_new(cv, SL_NODE_SEQ, &yn->start_mark, path);
    if (!n) {
        return NULL;
    }
    size_t cap = (size_t)(yn->data.sequence.items.top - yn->data.sequence.items.start);
    if (node_reserve(n, cap) < 0) {
        cv->failed = 1;
        return n;
    }
    for (size_t i = 0; i < cap && !cv->budget_reported; i++) {
        char kpath[CFG_PATH_MAX];
        cfg_path_index(kpath, sizeof(kpath), path, i);
        yaml_node_t *item = yaml_document_get_node(cv->doc, yn->data.sequence.items.start[i]);
        sl_node *k = item ? convert(cv, item, kpath, depth + 1) : NULL;
        if (!k) {
            cv->failed = 1;
            break;
        }
        n->kids[n->n++] = k;
    }
    return n;
}

/* Add key -> deep copy of yaml node val to map n (room already reserved). */
static int map_add(conv *cv, sl_node *n, yaml_node_t *key, yaml_node_t *val, const char *path,
                   int depth)
{
    char kpath[CFG_PATH_MAX];
    const char *k = (const char *)key->data.scalar.value;
    cfg_path_key(kpath, sizeof(kpath), path, k);
    sl_node *v = convert(cv, val, kpath, depth + 1);
    if (!v) {
        cv->failed = 1;
        return -1;
    }
    n->keys[n->n] = strdup(k);
    if (!n->keys[n->n]) {
        sl_node_free(v);
        cv->failed = 1;
        return -1;
    }
    n->key_line[n->n] = (int)key->start_mark.line + 1;
    n->key_col[n->n] = (int)key->start_mark.column + 1;
    n->kids[n->n++] = v;
    return 0;
}

static int is_merge_key(const yaml_node_t *key)
{
    return key->type == YAML_SCALAR_NODE && key->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           key->data.scalar.length == 2 && memcmp(key->data.scalar.value, "<<", 2) == 0;
}

typedef struct keyref {
    const char *key;
    size_t idx;
    int line;
} keyref;

static int keyref_cmp(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c) {
        return c;
    }
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Report keys given twice in one mapping, naming both lines. */
static void check_duplicates(conv *cv, sl_node *n, const char *path)
{
    if (n->n < 2) {
        return;
    }
    keyref *refs = malloc(n->n * sizeof(*refs));
    if (!refs) {
        cv->failed = 1;
        return;
    }
    for (size_t i = 0; i < n->n; i++) {
        refs[i] = (keyref){n->keys[i], i, n->key_line[i]};
    }
    qsort(refs, n->n, sizeof(*refs), keyref_cmp);
    for (size_t i = 1; i < n->n; i++) {
        if (strcmp(refs[i].key, refs[i - 1].key) != 0) {
            continue;
        }
        /* find the first occurrence of this key */
        size_t f = i - 1;
        while (f > 0 && strcmp(refs[f - 1].key, refs[i].key) == 0) {
            f--;
        }
        char kpath[CFG_PATH_MAX];
        cfg_path_key(kpath, sizeof(kpath), path, refs[i].key);
        size_t at = refs[i].idx;
        cfg_err(cv->errors, cv->file, n->key_line[at], n->key_col[at], kpath,
                "duplicate key, first defined at line %d (expected each key once per mapping)",
                refs[f].line);
        cv->failed = 1;
    }
    free(refs);
}

static int map_has(const sl_node *n, const char *key)
{
    return cfg_map_find(n, key) >= 0;
}

/* Add the keys of merge source src (a mapping) that n does not have yet. */
static void merge_from(conv *cv, sl_node *n, yaml_node_t *src, const char *path, int depth)
{
    for (yaml_node_pair_t *p = src->data.mapping.pairs.start; p < src->data.mapping.pairs.top;
         p++) {
        yaml_node_t *key = yaml_document_get_node(cv->doc, p->key);
        yaml_node_t *val = yaml_document_get_node(cv->doc, p->value);
        if (!key || !val || key->type != YAML_SCALAR_NODE || is_merge_key(key)) {
            /* non-scalar keys are reported where the anchor is defined;
             * nested merges inside a merge source are not expanded */
            continue;
        }
        if (map_has(n, (const char *)key->data.scalar.value)) {
            continue;
        }
        if (map_add(cv, n, key, val, path, depth) < 0) {
            return;
        }
    }
}

static sl_node *convert_map(conv *cv, yaml_node_t *yn, const char *path, int depth)
{
    sl_node *n = node_new(cv, SL_NODE_MAP, &yn->start_mark, path);
    if (!n) {
        return NULL;
    }
    yaml_node_pair_t *start = yn->data.mapping.pairs.start;
    yaml_node_pair_t *top = yn->data.mapping.pairs.top;
    size_t npairs = (size_t)(top - start);
    if (npairs > YAML_MAX_KEYS) {
        cfg_err(cv->errors, cv->file, n->line, n->col, path,
                "mapping has %zu keys (expected at most %d)", npairs, YAML_MAX_KEYS);
        cv->failed = 1;
        return n;
    }

    /* room for explicit keys plus everything merge sources could bring */
    size_t cap = npairs;
    for (yaml_node_pair_t *p = start; p < top; p++) {
        yaml_node_t *key = yaml_document_get_node(cv->doc, p->key);
        yaml_node_t *val = yaml_document_get_node(cv->doc, p->value);
        if (!key || !val || !is_merge_key(key)) {
            continue;
        }
        if (val->type == YAML_MAPPING_NODE) {
            cap += (size_t)(val->data.mapping.pairs.top - val->data.mapping.pairs.start);
        } else if (val->type == YAML_SEQUENCE_NODE) {
            for (yaml_node_item_t *it = val->data.sequence.items.start;
                 it < val->data.sequence.items.top; it++) {
                yaml_node_t *s = yaml_document_get_node(cv->doc, *it);
                if (s && s->type == YAML_MAPPING_NODE) {
                    cap += (size_t)(s->data.mapping.pairs.top - s->data.mapping.pairs.start);
                }
            }
        }
    }
    if (cap > YAML_MAX_KEYS * 2) {
        cfg_err(cv->errors, cv->file, n->line, n->col, path,
                "mapping has %zu keys after merging (expected at most %d)", cap, YAML_MAX_KEYS * 2);
        cv->failed = 1;
        return n;
    }
    if (node_reserve(n, cap) < 0) {
        cv->failed = 1;
        return n;
    }

    for (yaml_node_pair_t *p = start; p < top && !cv->budget_reported; p++) {
        yaml_node_t *key = yaml_document_get_node(cv->doc, p->key);
        yaml_node_t *val = yaml_document_get_node(cv->doc, p->value);
        if (!key || !val) {
            cv->failed = 1;
            continue;
        }
        if (key->type != YAML_SCALAR_NODE) {
            cfg_err(cv->errors, cv->file, (int)key->start_mark.line + 1,
                    (int)key->start_mark.column + 1, path,
                    "mapping key is a %s (expected a plain name)",
                    key->type == YAML_MAPPING_NODE ? "mapping" : "list");
            cv->failed = 1;
            continue;
        }
        if (memchr(key->data.scalar.value, '\0', key->data.scalar.length)) {
            cfg_err(cv->errors, cv->file, (int)key->start_mark.line + 1,
                    (int)key->start_mark.column + 1, path,
                    "NUL character in key (expected a plain name)");
            cv->failed = 1;
            continue;
        }
        if (is_merge_key(key)) {
            continue;
        }
        if (map_add(cv, n, key, val, path, depth) < 0) {
            break;
        }
    }
    check_duplicates(cv, n, path);

    for (yaml_node_pair_t *p = start; p < top && !cv->failed; p++) {
        yaml_node_t *key = yaml_document_get_node(cv->doc, p->key);
        yaml_node_t *val = yaml_document_get_node(cv->doc, p->value);
        if (!key || !val || !is_merge_key(key)) {
            continue;
        }
        if (val->type == YAML_MAPPING_NODE) {
            merge_from(cv, n, val, path, depth);
            continue;
        }
        int ok = val->type == YAML_SEQUENCE_NODE;
        for (yaml_node_item_t *it = val->data.sequence.items.start;
             ok && it < val->data.sequence.items.top; it++) {
            yaml_node_t *s = yaml_document_get_node(cv->doc, *it);
            ok = s && s->type == YAML_MAPPING_NODE;
        }
        if (!ok) {
            cfg_err(cv->errors, cv->file, (int)val->start_mark.line + 1,
                    (int)val->start_mark.column + 1, path,
                    "merge key '<<' needs a mapping (expected `<<: *anchor` or a list of them)");
            cv->failed = 1;
            continue;
        }
        for (yaml_node_item_t *it = val->data.sequence.items.start;
             it < val->data.sequence.items.top; it++) {
            merge_from(cv, n, yaml_document_get_node(cv->doc, *it), path, depth);
        }
    }
    return n;
}

static sl_node *convert(conv *cv, yaml_node_t *yn, const char *path, int depth)
{
    if (depth > YAML_MAX_DEPTH) {
        cfg_err(cv->errors, cv->file, (int)yn->start_mark.line + 1, (int)yn->start_mark.column + 1,
                path,
                "nested too deeply (expected at most %d levels; an alias used inside its "
                "own anchor also does this)",
                YAML_MAX_DEPTH);
        cv->failed = 1;
        /* stop the whole conversion: a self-reference would report at every level */
        cv->budget_reported = 1;
        return NULL;
    }
    switch (yn->type) {
    case YAML_SCALAR_NODE:
        return convert_scalar(cv, yn, path);
    case YAML_SEQUENCE_NODE:
        return convert_seq(cv, yn, path, depth);
    case YAML_MAPPING_NODE:
        return convert_map(cv, yn, path, depth);
    default:
        break;
    }
    cv->failed = 1;
    return NULL;
}

/* Line and column (1-based) of byte offset off in text. */
static void offset_pos(const char *text, size_t len, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
            (*col)++;
        }
    }
}

static void report_parser_error(const yaml_parser_t *p, const char *text, size_t len,
                                const char *file, sl_buf *errors)
{
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->error == YAML_READER_ERROR) {
        int line, col;
        offset_pos(text, len, p->problem_offset, &line, &col);
        cfg_err(errors, file, line, col, NULL, "YAML syntax error: %s (expected UTF-8 text)",
                problem);
    } else if (p->error == YAML_MEMORY_ERROR) {
        cfg_err(errors, file, 0, 0, NULL, "out of memory while parsing YAML");
    } else {
        /* the most common YAML mistake gets a hint */
        size_t at = p->problem_mark.index;
        const char *hint = at < len && text[at] == '\t' ? "; indent with spaces, not tabs" : "";
        if (p->context) {
            cfg_err(errors, file, (int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1,
                    NULL, "YAML syntax error: %s (%s)%s", problem, p->context, hint);
        } else {
            cfg_err(errors, file, (int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1,
                    NULL, "YAML syntax error: %s%s", problem, hint);
        }
    }
}

/* First pass over the events: 0, or -1 with the error reported (the depth
 * limit, or a syntax error, which the second pass would report the same). */
static int check_depth(const char *text, size_t len, const char *file, sl_buf *errors)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        cfg_err(errors, file, 0, 0, NULL, "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int depth = 0, rc = 0;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            report_parser_error(&p, text, len, file, errors);
            rc = -1;
            break;
        }
        yaml_event_type_t type = ev.type;
        if (type == YAML_SEQUENCE_START_EVENT || type == YAML_MAPPING_START_EVENT) {
            if (++depth > YAML_MAX_DEPTH) {
                cfg_err(errors, file, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                        NULL,
                        "nested too deeply (expected at most %d levels of mappings and "
                        "sequences)",
                        YAML_MAX_DEPTH);
                rc = -1;
            }
        } else if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT) {
            depth--;
        }
        yaml_event_delete(&ev);
        if (rc != 0 || type == YAML_STREAM_END_EVENT) {
            break;
        }
    }
    yaml_parser_delete(&p);
    return rc;
}

sl_node *sl_yaml_parse(const char *text, size_t len, const char *file, sl_buf *errors)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    int have_doc = 0;
    sl_node *root = NULL;
    const char *fname = file ? file : "<config>";

    if (len > YAML_MAX_BYTES) {
        cfg_err(errors, fname, 0, 0, NULL,
                "configuration is %zu bytes (expected at most %zu: 1 MB; is this the right file?)",
                len, YAML_MAX_BYTES);
        return NULL;
    }
    if (check_depth(text, len, fname, errors) != 0) {
        return NULL;
    }
    if (!yaml_parser_initialize(&parser)) {
        cfg_err(errors, fname, 0, 0, NULL, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        report_parser_error(&parser, text, len, fname, errors);
        goto fail;
    }
    have_doc = 1;
    yaml_node_t *yroot = yaml_document_get_root_node(&doc);
    if (!yroot) {
        cfg_err(errors, fname, 0, 0, NULL,
                "empty configuration (expected a mapping with `pipelines:`)");
        goto fail;
    }

    conv cv = {.doc = &doc, .file = fname, .errors = errors};
    root = convert(&cv, yroot, "", 0);
    if (cv.failed) {
        goto fail;
    }

    /* a second document would be silently ignored: refuse it */
    yaml_document_t doc2;
    if (!yaml_parser_load(&parser, &doc2)) {
        report_parser_error(&parser, text, len, fname, errors);
        goto fail;
    }
    yaml_node_t *root2 = yaml_document_get_root_node(&doc2);
    if (root2) {
        cfg_err(errors, fname, (int)doc2.start_mark.line + 1, (int)doc2.start_mark.column + 1, NULL,
                "second YAML document (expected one document per configuration file)");
        yaml_document_delete(&doc2);
        goto fail;
    }
    yaml_document_delete(&doc2);

    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return root;

fail:
    sl_node_free(root);
    if (have_doc) {
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    return NULL;
}
