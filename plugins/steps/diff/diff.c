/* Step diff: compare an export with the last delivered snapshot and send
 * only what changed.
 *
 * Each record's key (one or more columns, normalised: trimmed, lowercased)
 * is looked up in the previous snapshot:
 *   - not there: action "new";
 *   - there with another fingerprint of the compared columns: "changed"
 *     (with changed_fields_only, the record keeps the key and the changed
 *     columns only);
 *   - there with the same fingerprint: dropped (counted as skipped);
 *   - a key seen earlier in this export: dead-lettered (the first row wins).
 * After the last input row (drain), every key of the previous snapshot not
 * seen is emitted as "lapsed", carrying the key columns' original text.
 *
 * The new snapshot is written while the rows stream by, to a file beside the
 * state store, and becomes current in the commit hook only when the run was
 * complete (every record acknowledged or dead-lettered); a failed run diffs
 * against the old snapshot next time. A lapse guard refuses to lapse more
 * than max_lapse of the previous snapshot (an empty or truncated export).
 *
 * Memory: the previous snapshot's keys in an open-addressing table of 24
 * bytes per slot (key hash, fingerprint, file offset) at load <= 0.75, plus
 * 8 bytes per slot for keys new in this export; nothing else grows with the
 * input. 10 million keys: about 320 MB for the table.
 *
 * Snapshot file (native byte order, this machine's own state):
 *   "SLDIFF01" u64 count  u32 ncols {u16 len, name}*  u32 nkey {u16 len, name}*
 *   entries: u64 key_hash  u64 fingerprint  u64 field_hash[ncols]
 *            u16 keylen  key text (the key columns' original values, 0x1f between)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "sluice/plugin.h"
#include "sluice/values.h"

#define SNAP_MAGIC "SLDIFF01"
#define KEY_SEP '\x1f'
#define MAX_COLS 1024
#define KEY_MAX 65535
#define SEEN_BIT (1ULL << 63)

static const sl_option diff_options[] = {
    {"key", SL_OPT_LIST, NULL, SL_OPT_REQUIRED, NULL,
     "column(s) identifying a person (e.g. email); normalised before comparing"},
    {"normalize", SL_OPT_LIST, "[trim, lowercase]", 0, NULL,
     "what the key goes through: trim, lowercase (ASCII), or none"},
    {"compare", SL_OPT_LIST, NULL, 0, NULL,
     "columns whose change makes a record \"changed\" (default: every column but the key)"},
    {"changed_fields_only", SL_OPT_BOOL, "false", 0, NULL,
     "a changed record carries only its key and the columns that changed"},
    {"lapsed", SL_OPT_BOOL, "true", 0, NULL,
     "emit the people gone from the export (false: a destination with nothing to do for them)"},
    {"action_field", SL_OPT_STRING, NULL, 0, NULL,
     "also put the action (new, changed, lapsed) in this field, for sinks that do not read it"},
    {"max_lapse", SL_OPT_STRING, "20%", 0, NULL,
     "most of the previous snapshot a run may lapse (\"20%\"; \"100%\" for an intended purge)"},
    SL_OPTIONS_END,
};

typedef struct snap_hdr {
    uint64_t count;
    char **cols; /* compared columns, in fingerprint order */
    size_t ncols;
    char **keys;
    size_t nkeys;
} snap_hdr;

typedef struct diff_step {
    sl_ctx *ctx;
    int stage;
    /* options */
    char **key_cols;
    size_t nkey;
    int trim, lower;
    char **cmp_opt; /* compare: as configured, or NULL = all but the key */
    size_t ncmp_opt;
    int changed_only;
    int emit_lapsed;
    char *action_field;
    double max_lapse; /* fraction of the previous snapshot; >= 1 = no guard */

    /* the compared columns of this export (decided at the first record) */
    char **cols;
    size_t ncols;
    int have_cols;
    /* for each of this export's compared columns, its index in the previous
     * snapshot's list, or -1; same_cols: identical lists (fast path) */
    long *prev_idx;
    int same_cols;

    /* the previous snapshot */
    char dir[4096];
    char prev_file[4200];
    int have_prev;
    snap_hdr prev;
    /* table: one slot per key, one cache line touched per probe */
    struct tslot {
        uint64_t kh;  /* key hash, 0 = empty */
        uint64_t fp;  /* fingerprint */
        uint64_t off; /* offset of the entry in the file; top bit: seen */
    } * t;
    uint64_t tcap;
    FILE *prevf; /* random reads of entries (field hashes) */

    /* keys new in this export (not in the previous snapshot) */
    uint64_t *nk;
    uint64_t ncap, nn;

    /* the new snapshot */
    char new_file[4200];
    FILE *out;
    uint64_t out_count;
    int write_new; /* not in a dry run */

    /* drain: the lapsed entries' offsets, a window of the file at a time */
    uint64_t prev_end; /* offset just past the last entry */
    int drain_started;
    int scan_fd;
    uint64_t *lap;
    size_t nlap, lapi, lapcap;
    uint32_t *hist; /* lapsed entries per bucket of the file, when many */
    size_t hist_next, nhist;
    uint64_t hist_bytes;
    char *ebuf; /* one entry read back */
    size_t ebuf_cap;

    /* counts */
    uint64_t n_new, n_changed, n_same, n_lapsed, n_dup;

    /* scratch */
    sl_buf key, keyorig, val;
    sl_buf keys; /* a chunk's original key texts */
    uint64_t *fh, *pfh;
    char *wbuf; /* one entry of the new snapshot, written at once */
} diff_step;

/* ------------------------------------------------------------ helpers */

static uint64_t nz(uint64_t h)
{
    return h ? h : 1; /* 0 marks an empty slot */
}

static int list_dup(const sl_opts *o, const char *name, char ***out, size_t *n)
{
    *n = sl_opt_count(o, name);
    *out = calloc(*n ? *n : 1, sizeof(char *));
    if (!*out) {
        return -1;
    }
    for (size_t i = 0; i < *n; i++) {
        const char *v = sl_opt_item(o, name, i);
        if (!((*out)[i] = strdup(v ? v : ""))) {
            return -1;
        }
    }
    return 0;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i]);
    }
    free(v);
}

static int parse_percent(const char *s, double *out)
{
    char *end = NULL;
    if (!s || !*s) {
        return -1;
    }
    double v = strtod(s, &end);
    if (end == s) {
        return -1;
    }
    if (*end == '%' && end[1] == '\0') {
        v /= 100.0;
    } else if (*end != '\0') {
        return -1;
    }
    if (!(v >= 0.0 && v <= 1.0)) {
        return -1;
    }
    *out = v;
    return 0;
}

static int diff_validate(const sl_opts *o, sl_report_fn report, void *ud)
{
    int bad = 0;
    size_t nk = sl_opt_count(o, "key");
    if (nk == 0) {
        report(ud, "key", "names no column (expected e.g. [email])");
        bad++;
    }
    for (size_t i = 0; i < nk; i++) {
        const char *k = sl_opt_item(o, "key", i);
        if (!k || !*k) {
            report(ud, "key", "entry %zu is empty (expected a column name)", i + 1);
            bad++;
        }
    }
    for (size_t i = 0; i < sl_opt_count(o, "normalize"); i++) {
        const char *n = sl_opt_item(o, "normalize", i);
        if (!n || (strcmp(n, "trim") && strcmp(n, "lowercase") && strcmp(n, "none"))) {
            report(ud, "normalize",
                   "'%s' is not a normalisation (expected trim, lowercase or none)", n ? n : "");
            bad++;
        }
    }
    double f;
    if (parse_percent(sl_opt_str(o, "max_lapse"), &f) < 0) {
        report(ud, "max_lapse", "'%s' is not a share of the snapshot (expected e.g. 20%% or 0.2)",
               sl_opt_str(o, "max_lapse") ? sl_opt_str(o, "max_lapse") : "");
        bad++;
    }
    return bad;
}

/* ------------------------------------------------------------ snapshot files */

static int w_all(FILE *f, const void *p, size_t n)
{
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

static int r_all(FILE *f, void *p, size_t n)
{
    return fread(p, 1, n, f) == n ? 0 : -1;
}

static int w_names(FILE *f, char **v, size_t n)
{
    uint32_t c = (uint32_t)n;
    if (w_all(f, &c, 4) < 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t l = (uint16_t)strlen(v[i]);
        if (w_all(f, &l, 2) < 0 || w_all(f, v[i], l) < 0) {
            return -1;
        }
    }
    return 0;
}

static int r_names(FILE *f, char ***v, size_t *n)
{
    uint32_t c;
    if (r_all(f, &c, 4) < 0 || c > MAX_COLS) {
        return -1;
    }
    *n = c;
    *v = calloc(c ? c : 1, sizeof(char *));
    if (!*v) {
        return -1;
    }
    for (size_t i = 0; i < c; i++) {
        uint16_t l;
        if (r_all(f, &l, 2) < 0 || !((*v)[i] = calloc(1, (size_t)l + 1)) ||
            r_all(f, (*v)[i], l) < 0) {
            return -1;
        }
    }
    return 0;
}

static void hdr_free(snap_hdr *h)
{
    strv_free(h->cols, h->ncols);
    strv_free(h->keys, h->nkeys);
    memset(h, 0, sizeof(*h));
}

static int read_hdr(FILE *f, snap_hdr *h)
{
    char magic[8];
    if (r_all(f, magic, 8) < 0 || memcmp(magic, SNAP_MAGIC, 8) != 0 || r_all(f, &h->count, 8) < 0 ||
        r_names(f, &h->cols, &h->ncols) < 0 || r_names(f, &h->keys, &h->nkeys) < 0) {
        return -1;
    }
    return 0;
}

/* One entry; key text into keybuf (NUL-terminated). 0, or -1 at a bad or
 * cut entry. */
static int read_entry(FILE *f, size_t ncols, uint64_t *kh, uint64_t *fp, uint64_t *fh, char *keybuf,
                      uint16_t *klen)
{
    if (r_all(f, kh, 8) < 0 || r_all(f, fp, 8) < 0 || (ncols && r_all(f, fh, ncols * 8) < 0) ||
        r_all(f, klen, 2) < 0 || r_all(f, keybuf, *klen) < 0) {
        return -1;
    }
    keybuf[*klen] = '\0';
    return 0;
}

/* ------------------------------------------------------------ tables */

/* Zeroed memory for a table. Large tables are probed at random: ask for
 * huge pages (one TLB entry per 2 MB instead of per 4 KB), which roughly
 * halves the cost of a probe that misses the cache. */
static void *table_alloc(size_t size)
{
    if (size < (2u << 20)) {
        return calloc(1, size ? size : 1);
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

/* Fault in [p, p + n) (the kernel zeroes each page on its first write). */
static void *touch_pages(void *arg)
{
    char **r = arg;
    for (volatile char *c = r[0]; c < r[1]; c += 4096) {
        *c = 0;
    }
    return NULL;
}

/* A large fresh table is faulted in by two threads at once, before anything
 * is stored in it: zeroing hundreds of megabytes is a good part of loading a
 * snapshot, and it parallelises cleanly. */
static void table_prefault(void *p, size_t size)
{
    if (size < ((size_t)16 << 20)) {
        return;
    }
    char *half = (char *)p + (size / 2 & ~(size_t)4095);
    char *hi[2] = {half, (char *)p + size};
    char *lo[2] = {p, half};
    pthread_t th;
    int threaded = pthread_create(&th, NULL, touch_pages, hi) == 0;
    touch_pages(lo);
    if (threaded) {
        pthread_join(th, NULL);
    } else {
        touch_pages(hi);
    }
}

static void table_free(void *p, size_t size)
{
    if (!p) {
        return;
    }
    if (size < (2u << 20)) {
        free(p);
    } else {
        munmap(p, size);
    }
}

static uint64_t slot_of(uint64_t h, uint64_t cap)
{
    /* multiply-shift into [0, cap): no power-of-two rounding of memory */
    return (uint64_t)(((unsigned __int128)h * cap) >> 64);
}

/* Start fetching slot i of the table into the cache (both lines when the
 * slot straddles two). */
static void prefetch_slot(const diff_step *d, uint64_t i)
{
    const char *p = (const char *)&d->t[i];
    __builtin_prefetch(p, 1);
    if (((uintptr_t)p & 63) > 64 - sizeof(*d->t)) {
        __builtin_prefetch(p + sizeof(*d->t) - 1, 1);
    }
}

/* Slot holding h in the previous snapshot's table, or UINT64_MAX. */
static uint64_t prev_find(const diff_step *d, uint64_t h)
{
    if (!d->tcap) {
        return UINT64_MAX;
    }
    for (uint64_t i = slot_of(h, d->tcap);; i = i + 1 == d->tcap ? 0 : i + 1) {
        if (d->t[i].kh == 0) {
            return UINT64_MAX;
        }
        if (d->t[i].kh == h) {
            return i;
        }
    }
}

/* Add h to the set of keys new in this export. 1 added, 0 already there,
 * <0 out of memory. */
static int newset_add(diff_step *d, uint64_t h)
{
    if ((d->nn + 1) * 4 > d->ncap * 3) {
        uint64_t cap = d->ncap ? d->ncap * 2 : 1024;
        uint64_t *nk = table_alloc(cap * sizeof(*nk));
        if (!nk) {
            return -1;
        }
        for (uint64_t i = 0; i < d->ncap; i++) {
            if (d->nk[i]) {
                uint64_t j = slot_of(d->nk[i], cap);
                while (nk[j]) {
                    j = j + 1 == cap ? 0 : j + 1;
                }
                nk[j] = d->nk[i];
            }
        }
        table_free(d->nk, d->ncap * sizeof(*d->nk));
        d->nk = nk;
        d->ncap = cap;
    }
    for (uint64_t i = slot_of(h, d->ncap);; i = i + 1 == d->ncap ? 0 : i + 1) {
        if (d->nk[i] == h) {
            return 0;
        }
        if (d->nk[i] == 0) {
            d->nk[i] = h;
            d->nn++;
            return 1;
        }
    }
}

/* ------------------------------------------------------------ state */

/* The current snapshot, as the state store records it. */
static int load_pointer(diff_step *d, sl_error *err)
{
    sl_buf v = {0};
    int rc = sl_ctx_state_get(d->ctx, "snapshot", &v, err);
    if (rc <= 0) {
        sl_buf_free(&v);
        return rc;
    }
    json_t *j = json_loads(sl_buf_cstr(&v), 0, NULL);
    const char *file = j ? json_string_value(json_object_get(j, "file")) : NULL;
    if (file && !strchr(file, '/')) {
        snprintf(d->prev_file, sizeof(d->prev_file), "%s/%s", d->dir, file);
        d->have_prev = 1;
    }
    json_decref(j);
    sl_buf_free(&v);
    if (!d->have_prev) {
        return sl_error_set(err, SL_ERR_IO, "%s: the state's snapshot record is unreadable",
                            sl_ctx_name(d->ctx));
    }
    return 1;
}

static int load_prev(diff_step *d, sl_error *err)
{
    FILE *f = fopen(d->prev_file, "rb");
    if (!f) {
        return sl_error_set(err, SL_ERR_IO,
                            "%s: the current snapshot %s cannot be opened (%s); it is recorded in "
                            "the state store, so it must not be removed",
                            sl_ctx_name(d->ctx), d->prev_file, strerror(errno));
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    if (read_hdr(f, &d->prev) < 0) {
        fclose(f);
        return sl_error_set(err, SL_ERR_IO, "%s: %s is not a readable snapshot",
                            sl_ctx_name(d->ctx), d->prev_file);
    }
    uint64_t n = d->prev.count;
    d->tcap = n + n / 3 + 16;
    d->t = table_alloc(d->tcap * sizeof(*d->t));
    d->pfh = calloc(d->prev.ncols + 1, sizeof(*d->pfh));
    if (d->t) {
        table_prefault(d->t, d->tcap * sizeof(*d->t));
    }
    if (!d->t || !d->pfh) {
        fclose(f);
        return sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory loading %" PRIu64 " keys",
                            sl_ctx_name(d->ctx), n);
    }
    /* The entries are read in big blocks and inserted a batch at a time:
     * the slots of a batch are prefetched first, so their cache misses
     * overlap instead of following one another. */
    const size_t fixed = 16 + d->prev.ncols * 8 + 2;
    const size_t cap = 1u << 20;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory loading %" PRIu64 " keys",
                            sl_ctx_name(d->ctx), n);
    }
    uint64_t off = (uint64_t)ftell(f);
    size_t have = 0, at = 0;
    int eof = 0;
    enum { B = 16 };
    uint64_t bkh[B], bfp[B], boff[B], bslot[B];
    for (uint64_t k = 0; k < n;) {
        size_t nb = 0;
        while (nb < B && k + nb < n) {
            /* one whole entry in buf[at, have), reading more as needed */
            size_t need = fixed;
            uint16_t kl = 0;
            for (;;) {
                if (have - at >= fixed) {
                    memcpy(&kl, buf + at + fixed - 2, 2);
                    need = fixed + kl;
                    if (have - at >= need) {
                        break;
                    }
                }
                if (eof) {
                    free(buf);
                    fclose(f);
                    return sl_error_set(err, SL_ERR_IO,
                                        "%s: %s is cut short (entry %" PRIu64 " of %" PRIu64 ")",
                                        sl_ctx_name(d->ctx), d->prev_file, k + nb + 1, n);
                }
                memmove(buf, buf + at, have - at);
                have -= at;
                at = 0;
                size_t got = fread(buf + have, 1, cap - have, f);
                eof = got < cap - have;
                have += got;
            }
            memcpy(&bkh[nb], buf + at, 8);
            memcpy(&bfp[nb], buf + at + 8, 8);
            boff[nb] = off;
            bslot[nb] = slot_of(bkh[nb], d->tcap);
            prefetch_slot(d, bslot[nb]);
            at += need;
            off += need;
            nb++;
        }
        for (size_t j = 0; j < nb; j++) {
            uint64_t i = bslot[j];
            while (d->t[i].kh && d->t[i].kh != bkh[j]) {
                i = i + 1 == d->tcap ? 0 : i + 1;
            }
            d->t[i].kh = bkh[j];
            d->t[i].fp = bfp[j];
            d->t[i].off = boff[j];
        }
        k += nb;
    }
    d->prev_end = off;
    free(buf);
    fclose(f);
    d->prevf = fopen(d->prev_file, "rb");
    return d->prevf ? 0
                    : sl_error_set(err, SL_ERR_IO, "%s: cannot reopen %s", sl_ctx_name(d->ctx),
                                   d->prev_file);
}

/* Remove the files of this directory the state does not point to: a
 * crashed run's unfinished snapshot, the snapshot a later run replaced.
 * Runs of one pipeline never overlap (the run lease), so nothing else is
 * writing here. */
static void sweep(diff_step *d)
{
    DIR *dir = opendir(d->dir);
    if (!dir) {
        return;
    }
    const char *cur = d->have_prev ? strrchr(d->prev_file, '/') + 1 : NULL;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, "snap-", 5) != 0 || (cur && strcmp(e->d_name, cur) == 0)) {
            continue;
        }
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", d->dir, e->d_name);
        if (unlink(path) == 0) {
            sl_plog(d->ctx, SL_LOG_DEBUG, "removed %s (not the current snapshot)", path);
        }
    }
    closedir(dir);
}

/* ------------------------------------------------------------ lifecycle */

static void diff_destroy(void *self)
{
    diff_step *d = self;
    if (!d) {
        return;
    }
    if (d->out) {
        fclose(d->out);
        unlink(d->new_file); /* never committed */
    }
    if (d->prevf) {
        fclose(d->prevf);
    }
    if (d->scan_fd >= 0) {
        close(d->scan_fd);
    }
    free(d->action_field);
    strv_free(d->key_cols, d->nkey);
    strv_free(d->cmp_opt, d->ncmp_opt);
    strv_free(d->cols, d->ncols);
    free(d->prev_idx);
    hdr_free(&d->prev);
    table_free(d->t, d->tcap * sizeof(*d->t));
    table_free(d->nk, d->ncap * sizeof(*d->nk));
    free(d->fh);
    free(d->wbuf);
    free(d->pfh);
    free(d->lap);
    free(d->hist);
    free(d->ebuf);
    sl_buf_free(&d->key);
    sl_buf_free(&d->keyorig);
    sl_buf_free(&d->keys);
    sl_buf_free(&d->val);
    free(d);
}

static int diff_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    diff_step *d = calloc(1, sizeof(*d));
    if (!d) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    d->ctx = ctx;
    d->scan_fd = -1;
    if (list_dup(o, "key", &d->key_cols, &d->nkey) < 0 ||
        (sl_opt_isset(o, "compare") && list_dup(o, "compare", &d->cmp_opt, &d->ncmp_opt) < 0)) {
        diff_destroy(d);
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < sl_opt_count(o, "normalize"); i++) {
        const char *n = sl_opt_item(o, "normalize", i);
        d->trim |= n && strcmp(n, "trim") == 0;
        d->lower |= n && strcmp(n, "lowercase") == 0;
    }
    d->changed_only = sl_opt_bool(o, "changed_fields_only");
    d->emit_lapsed = sl_opt_bool(o, "lapsed");
    if (sl_opt_isset(o, "action_field") &&
        !(d->action_field = strdup(sl_opt_str(o, "action_field")))) {
        diff_destroy(d);
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    if (parse_percent(sl_opt_str(o, "max_lapse"), &d->max_lapse) < 0) {
        diff_destroy(d);
        return sl_error_set(err, SL_ERR_CONFIG, "%s: max_lapse: '%s' is not a share (e.g. 20%%)",
                            sl_opt_where(o, "max_lapse"), sl_opt_str(o, "max_lapse"));
    }
    sl_buf dir = {0};
    int rc = sl_ctx_files_dir(ctx, &dir, err);
    if (rc == 0) {
        snprintf(d->dir, sizeof(d->dir), "%s", sl_buf_cstr(&dir));
    }
    sl_buf_free(&dir);
    if (rc < 0 && sl_ctx_dry_run(ctx)) {
        /* a dry run before any real run: no store yet, so no snapshot:
         * everyone is new */
        sl_error_clear(err);
        sl_plog(ctx, SL_LOG_INFO, "no state store yet: diffing against an empty snapshot");
        *self = d;
        return 0;
    }
    if (rc < 0) {
        diff_destroy(d);
        return rc;
    }
    if ((rc = load_pointer(d, err)) < 0 || (rc == 1 && load_prev(d, err) < 0)) {
        diff_destroy(d);
        return SL_ERR;
    }
    d->write_new = !sl_ctx_dry_run(ctx);
    if (d->write_new) {
        sweep(d);
    }
    if (d->write_new) {
        snprintf(d->new_file, sizeof(d->new_file), "%s/snap-%.0f-%d.tmp", d->dir,
                 sl_ctx_run_started(ctx) * 1000.0, (int)getpid());
        d->out = fopen(d->new_file, "wb");
        if (!d->out) {
            diff_destroy(d);
            return sl_error_set(err, SL_ERR_IO, "%s: cannot create %s: %s", sl_ctx_name(ctx),
                                d->new_file, strerror(errno));
        }
        setvbuf(d->out, NULL, _IOFBF, 1 << 20);
    }
    *self = d;
    return 0;
}

/* The compared columns of this export: as configured, or every field of the
 * first record but the key; mapped onto the previous snapshot's. */
static int decide_columns(diff_step *d, const sl_record *rec, sl_error *err)
{
    if (d->cmp_opt) {
        d->ncols = d->ncmp_opt;
        d->cols = calloc(d->ncols ? d->ncols : 1, sizeof(char *));
        for (size_t i = 0; d->cols && i < d->ncols; i++) {
            d->cols[i] = strdup(d->cmp_opt[i]);
        }
    } else {
        d->cols = calloc(rec->nfields + 1, sizeof(char *));
        for (uint32_t i = 0; d->cols && i < rec->nfields; i++) {
            const sl_field *f = &rec->fields[i];
            int is_key = 0;
            for (size_t k = 0; k < d->nkey; k++) {
                is_key |= strlen(d->key_cols[k]) == f->name_len &&
                          memcmp(d->key_cols[k], f->name, f->name_len) == 0;
            }
            if (!is_key) {
                d->cols[d->ncols++] = strndup(f->name, f->name_len);
            }
        }
    }
    if (!d->cols || d->ncols > MAX_COLS) {
        return sl_error_set(err, SL_ERR_NOMEM, "%s: too many columns", sl_ctx_name(d->ctx));
    }
    d->prev_idx = calloc(d->ncols + 1, sizeof(*d->prev_idx));
    d->fh = calloc(d->ncols + 1, sizeof(*d->fh));
    d->wbuf = malloc(16 + d->ncols * 8 + 2 + KEY_MAX);
    if (!d->prev_idx || !d->fh || !d->wbuf) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    d->same_cols = d->have_prev && d->prev.ncols == d->ncols;
    for (size_t i = 0; i < d->ncols; i++) {
        d->prev_idx[i] = -1;
        for (size_t j = 0; d->have_prev && j < d->prev.ncols; j++) {
            if (strcmp(d->cols[i], d->prev.cols[j]) == 0) {
                d->prev_idx[i] = (long)j;
            }
        }
        d->same_cols &= d->prev_idx[i] == (long)i;
    }
    if (d->have_prev && !d->same_cols) {
        sl_plog(d->ctx, SL_LOG_WARN,
                "the compared columns changed since the last snapshot: only the columns in both "
                "are compared this time (a new column does not make every record \"changed\")");
    }
    if (d->out &&
        (w_all(d->out, SNAP_MAGIC, 8) < 0 || w_all(d->out, &d->out_count, 8) < 0 ||
         w_names(d->out, d->cols, d->ncols) < 0 || w_names(d->out, d->key_cols, d->nkey) < 0)) {
        return sl_error_set(err, SL_ERR_IO, "%s: cannot write %s: %s", sl_ctx_name(d->ctx),
                            d->new_file, strerror(errno));
    }
    d->have_cols = 1;
    return 0;
}

/* A field's value as text (strings as they are, others as JSON); a missing
 * or null field is distinct from an empty string. */
static void value_text(diff_step *d, const sl_record *rec, const char *name, const char **p,
                       size_t *n, int *missing)
{
    sl_field *f = sl_record_get(rec, name);
    *missing = !f || f->type == SL_T_NULL;
    if (*missing) {
        *p = "";
        *n = 0;
        return;
    }
    if (f->type == SL_T_STRING) {
        *p = sl_field_str(rec, f);
        *n = f->v.s.len;
        return;
    }
    sl_buf_reset(&d->val);
    sl_jw w;
    sl_jw_init(&w, &d->val);
    sl_jw_field(&w, rec, f);
    *p = sl_buf_cstr(&d->val);
    *n = d->val.len;
}

/* Build the normalised key (hashed) and the original key text. 0, or 1 when
 * the record was rejected. */
static int make_key(diff_step *d, sl_record *rec, int stage, uint64_t *kh)
{
    sl_buf_reset(&d->key);
    sl_buf_reset(&d->keyorig);
    for (size_t k = 0; k < d->nkey; k++) {
        const char *p;
        size_t n;
        int missing;
        value_text(d, rec, d->key_cols[k], &p, &n, &missing);
        size_t bad = 0;
        if (!sl_utf8_valid(p, n, &bad)) {
            sl_record_reject(rec, stage, "key column '%s' is not valid UTF-8 (byte %zu)",
                             d->key_cols[k], bad);
            return 1;
        }
        const char *b = p, *e = p + n;
        if (d->trim) {
            while (b < e && (*b == ' ' || *b == '\t' || *b == '\r' || *b == '\n')) {
                b++;
            }
            while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n')) {
                e--;
            }
        }
        if (missing || b == e) {
            sl_record_reject(rec, stage, "key column '%s' is blank", d->key_cols[k]);
            return 1;
        }
        if (k) {
            sl_buf_putc(&d->key, KEY_SEP);
            sl_buf_putc(&d->keyorig, KEY_SEP);
        }
        size_t at = d->key.len;
        sl_buf_append(&d->key, b, (size_t)(e - b));
        if (d->lower && d->key.data) {
            for (char *c = d->key.data + at; c < d->key.data + d->key.len; c++) {
                if (*c >= 'A' && *c <= 'Z') {
                    *c = (char)(*c - 'A' + 'a');
                }
            }
        }
        sl_buf_append(&d->keyorig, p, n);
    }
    if (d->keyorig.len > KEY_MAX) {
        sl_record_reject(rec, stage, "key is longer than %d bytes", KEY_MAX);
        return 1;
    }
    *kh = nz(XXH3_64bits(d->key.data, d->key.len));
    return 0;
}

/* Field hashes of this record (this export's column order), and the
 * fingerprint over all of them. */
static uint64_t fingerprint(diff_step *d, const sl_record *rec)
{
    for (size_t i = 0; i < d->ncols; i++) {
        const char *p;
        size_t n;
        int missing;
        value_text(d, rec, d->cols[i], &p, &n, &missing);
        uint64_t h = missing ? 0x6e756c6cULL : XXH3_64bits_withSeed(p, n, 1);
        d->fh[i] = h;
    }
    return XXH3_64bits(d->fh, d->ncols * sizeof(*d->fh));
}

static int prev_field_hashes(diff_step *d, uint64_t slot)
{
    uint64_t kh, fp;
    uint16_t kl;
    char key[KEY_MAX + 1];
    if (fseek(d->prevf, (long)(d->t[slot].off & ~SEEN_BIT), SEEK_SET) != 0 ||
        read_entry(d->prevf, d->prev.ncols, &kh, &fp, d->pfh, key, &kl) < 0) {
        return -1;
    }
    return 0;
}

static int write_entry(diff_step *d, uint64_t kh, uint64_t fp, const char *key, size_t klen,
                       sl_error *err)
{
    if (!d->out) {
        return 0;
    }
    uint16_t kl = (uint16_t)klen;
    char *w = d->wbuf;
    memcpy(w, &kh, 8);
    memcpy(w + 8, &fp, 8);
    w += 16;
    if (d->ncols) {
        memcpy(w, d->fh, d->ncols * 8);
        w += d->ncols * 8;
    }
    memcpy(w, &kl, 2);
    memcpy(w + 2, key, kl);
    w += 2 + kl;
    if (w_all(d->out, d->wbuf, (size_t)(w - d->wbuf)) < 0) {
        return sl_error_set(err, SL_ERR_IO, "%s: cannot write %s: %s", sl_ctx_name(d->ctx),
                            d->new_file, strerror(errno));
    }
    d->out_count++;
    return 0;
}

/* Keep only the key and the changed columns. */
static void drop_unchanged(diff_step *d, sl_record *rec)
{
    for (size_t i = 0; i < d->ncols; i++) {
        long j = d->prev_idx[i];
        if (j < 0 || d->fh[i] != d->pfh[j]) {
            continue; /* changed, or not in the last snapshot */
        }
        sl_field *f = sl_record_get(rec, d->cols[i]);
        if (f) {
            f->flags |= SL_FIELD_OMIT;
        }
    }
}

/* The export's header: every key column must be in it (a missing key column
 * would make every row "blank key" and trip the lapse guard with a less
 * useful message). */
static int diff_columns(void *self, const char *const *cols, size_t n, sl_error *err)
{
    diff_step *d = self;
    for (size_t k = 0; k < d->nkey; k++) {
        size_t i = 0;
        while (i < n && strcmp(cols[i], d->key_cols[k]) != 0) {
            i++;
        }
        if (i == n) {
            char have[512] = "";
            for (size_t j = 0; j < n; j++) {
                size_t l = strlen(have);
                snprintf(have + l, sizeof(have) - l, "%s%s", j ? ", " : "", cols[j]);
            }
            return sl_error_set(err, SL_ERR_INPUT,
                                "key column '%s' is not in the export (its columns: %s)",
                                d->key_cols[k], have);
        }
    }
    return 0;
}

static void set_action(diff_step *d, sl_record *rec, const char *action)
{
    rec->action = action;
    if (d->action_field) {
        sl_record_add_str(rec, d->action_field, (uint32_t)strlen(d->action_field), action,
                          strlen(action));
    }
}

/* One record whose key (hash kh, original text key/klen) is made: 0 keep
 * (sent, or rejected), 1 unchanged (dropped), <0 fatal. */
static int diff_one(diff_step *d, sl_record *rec, int stage, uint64_t kh, const char *key,
                    size_t klen, sl_error *err)
{
    uint64_t fp = fingerprint(d, rec);
    uint64_t slot = prev_find(d, kh);
    if (slot != UINT64_MAX) {
        if (d->t[slot].off & SEEN_BIT) {
            d->n_dup++;
            sl_record_reject(rec, stage,
                             "duplicate key '%.*s' in this export (an earlier row has the same key "
                             "after normalisation; the first one counts)",
                             (int)klen, key);
            return 0;
        }
        d->t[slot].off |= SEEN_BIT;
        int same;
        int need_fields = d->changed_only || !d->same_cols;
        if (need_fields && prev_field_hashes(d, slot) < 0) {
            return sl_error_set(err, SL_ERR_IO, "%s: cannot read %s", sl_ctx_name(d->ctx),
                                d->prev_file);
        }
        if (d->same_cols) {
            same = fp == d->t[slot].fp;
        } else {
            same = 1; /* compare the columns both snapshots have */
            for (size_t i = 0; i < d->ncols && same; i++) {
                same = d->prev_idx[i] < 0 || d->fh[i] == d->pfh[d->prev_idx[i]];
            }
        }
        if (write_entry(d, kh, fp, key, klen, err) < 0) {
            return SL_ERR;
        }
        if (same) {
            d->n_same++;
            return 1; /* unchanged: not sent */
        }
        d->n_changed++;
        set_action(d, rec, "changed");
        if (d->changed_only) {
            drop_unchanged(d, rec);
        }
        return 0;
    }
    int added = newset_add(d, kh);
    if (added < 0) {
        return sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory", sl_ctx_name(d->ctx));
    }
    if (added == 0) {
        d->n_dup++;
        sl_record_reject(rec, stage,
                         "duplicate key '%.*s' in this export (an earlier row has the same key "
                         "after normalisation; the first one counts)",
                         (int)klen, key);
        return 0;
    }
    if (write_entry(d, kh, fp, key, klen, err) < 0) {
        return SL_ERR;
    }
    d->n_new++;
    set_action(d, rec, "new");
    return 0;
}

/* A batch, a chunk at a time: first every record's key is made and its
 * slot prefetched, then the records are looked up in order (the first of a
 * duplicated key still wins). The lookups' cache misses, one per record in
 * a table far larger than the caches, then overlap instead of adding up. */
#define CHUNK 32

static int diff_process_batch(void *self, sl_batch *b, int stage, sl_error *err)
{
    diff_step *d = self;
    d->stage = stage;
    uint64_t kh[CHUNK];
    size_t idx[CHUNK], koff[CHUNK], klen[CHUNK];
    for (size_t i = 0; i < b->n;) {
        size_t m = 0;
        sl_buf_reset(&d->keys);
        for (; i < b->n && m < CHUNK; i++) {
            sl_record *rec = &b->recs[i];
            if (rec->status != SL_REC_OK) {
                continue;
            }
            if (!d->have_cols && decide_columns(d, rec, err) < 0) {
                return SL_ERR;
            }
            if (make_key(d, rec, stage, &kh[m]) != 0) {
                continue; /* rejected: dead-lettered with its line */
            }
            koff[m] = d->keys.len;
            klen[m] = d->keyorig.len;
            if (sl_buf_append(&d->keys, d->keyorig.data, d->keyorig.len) < 0) {
                return sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory", sl_ctx_name(d->ctx));
            }
            if (d->tcap) {
                prefetch_slot(d, slot_of(kh[m], d->tcap));
            }
            idx[m++] = i;
        }
        for (size_t j = 0; j < m; j++) {
            sl_record *rec = &b->recs[idx[j]];
            int rc = diff_one(d, rec, stage, kh[j], d->keys.data + koff[j], klen[j], err);
            if (rc < 0) {
                return SL_ERR;
            }
            if (rc == 1) {
                rec->status = SL_REC_SKIP;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------ lapsed
 *
 * The lapsed are the table's slots never seen. They are found by walking
 * the table (in memory, in order: no random probe, no second read of the
 * snapshot file) and emitted in the order of the snapshot file, as the
 * earlier export listed them: their offsets are sorted, then each entry's
 * key text is read back. At most lap_window() offsets are held at once (a
 * byte per key of the snapshot): when more lapse, a first walk counts them
 * per stretch of the file, and each later walk (about ten at most) takes
 * the stretches that fit. */

#define LAP_BUCKETS ((size_t)1 << 16)

static size_t lap_window(const diff_step *d)
{
    size_t w = (size_t)(d->prev.count / 8);
    return w > 65536 ? w : 65536;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int lapsed_histogram(diff_step *d)
{
    d->nhist = LAP_BUCKETS;
    d->hist_bytes = d->prev_end / LAP_BUCKETS + 1;
    d->hist = calloc(d->nhist, sizeof(*d->hist));
    if (!d->hist) {
        return -1;
    }
    for (uint64_t i = 0; i < d->tcap; i++) {
        if (d->t[i].kh && !(d->t[i].off & SEEN_BIT)) {
            d->hist[d->t[i].off / d->hist_bytes]++;
        }
    }
    return 0;
}

/* The next window of lapsed offsets, sorted, into d->lap. 1, or 0 when
 * every window was taken, <0 out of memory. */
static int lapsed_window(diff_step *d)
{
    uint64_t lo = 0, hi = UINT64_MAX;
    if (d->hist) {
        if (d->hist_next >= d->nhist) {
            return 0;
        }
        size_t b = d->hist_next, sum = d->hist[b++];
        while (b < d->nhist && sum + d->hist[b] <= lap_window(d)) {
            sum += d->hist[b++];
        }
        lo = (uint64_t)d->hist_next * d->hist_bytes;
        hi = b < d->nhist ? (uint64_t)b * d->hist_bytes : UINT64_MAX;
        d->hist_next = b;
    } else if (d->hist_next++ > 0) {
        return 0;
    }
    d->nlap = d->lapi = 0;
    for (uint64_t i = 0; i < d->tcap; i++) {
        uint64_t off = d->t[i].off;
        if (!d->t[i].kh || (off & SEEN_BIT) || off < lo || off >= hi) {
            continue;
        }
        if (d->nlap == d->lapcap) {
            size_t cap = d->lapcap ? d->lapcap * 2 : 1024;
            uint64_t *l = realloc(d->lap, cap * sizeof(*l));
            if (!l) {
                return -1;
            }
            d->lap = l;
            d->lapcap = cap;
        }
        d->lap[d->nlap++] = off;
    }
    if (d->nlap > 1) {
        qsort(d->lap, d->nlap, sizeof(*d->lap), cmp_u64);
    }
    return 1;
}

/* The key text of the entry at off (valid until the next call). */
static int read_key_at(diff_step *d, uint64_t off, const char **key, uint16_t *kl)
{
    size_t fixed = 16 + d->prev.ncols * 8 + 2;
    size_t want = fixed + 256;
    for (;;) {
        if (d->ebuf_cap < want) {
            char *b = realloc(d->ebuf, want);
            if (!b) {
                return -1;
            }
            d->ebuf = b;
            d->ebuf_cap = want;
        }
        ssize_t got = pread(d->scan_fd, d->ebuf, want, (off_t)off);
        if (got < (ssize_t)fixed) {
            return -1;
        }
        memcpy(kl, d->ebuf + fixed - 2, 2);
        if ((size_t)got >= fixed + *kl) {
            *key = d->ebuf + fixed;
            return 0;
        }
        if (want >= fixed + *kl) {
            return -1; /* the file ends inside the entry */
        }
        want = fixed + *kl;
    }
}

/* The lapse guard, then every key of the previous snapshot not seen. */
static int diff_drain(void *self, sl_record *rec, int stage, sl_error *err)
{
    diff_step *d = self;
    if (!d->drain_started) {
        d->drain_started = 1;
        if (!d->have_prev || d->prev.count == 0 || !d->emit_lapsed) {
            return 0;
        }
        uint64_t seen = d->n_changed + d->n_same;
        uint64_t lapsing = d->prev.count - seen;
        double share = (double)lapsing / (double)d->prev.count;
        if (seen == 0 && d->n_new == 0) {
            return sl_error_set(err, SL_ERR_INPUT,
                                "%s: the export has no usable row, so all %" PRIu64
                                " people of the last snapshot would lapse; nobody was lapsed "
                                "and the snapshot stays as it was (an empty or broken export?)",
                                sl_ctx_name(d->ctx), d->prev.count);
        }
        if (lapsing > 0 && share > d->max_lapse) {
            return sl_error_set(err, SL_ERR_INPUT,
                                "%s: %" PRIu64 " of %" PRIu64
                                " people (%.1f%%) of the last snapshot are missing from this "
                                "export, more than max_lapse (%.0f%%); nobody was lapsed and the "
                                "snapshot stays as it was. If this purge is intended, raise "
                                "max_lapse for one run (e.g. \"100%%\")",
                                sl_ctx_name(d->ctx), lapsing, d->prev.count, 100.0 * share,
                                100.0 * d->max_lapse);
        }
        d->scan_fd = open(d->prev_file, O_RDONLY | O_CLOEXEC);
        if (d->scan_fd < 0) {
            return sl_error_set(err, SL_ERR_IO, "%s: cannot read %s: %s", sl_ctx_name(d->ctx),
                                d->prev_file, strerror(errno));
        }
        if (lapsing > lap_window(d) && lapsed_histogram(d) < 0) {
            return sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory", sl_ctx_name(d->ctx));
        }
    }
    while (d->lapi == d->nlap) {
        int rc = lapsed_window(d);
        if (rc < 0) {
            return sl_error_set(err, SL_ERR_NOMEM, "%s: out of memory", sl_ctx_name(d->ctx));
        }
        if (rc == 0) {
            return 0;
        }
    }
    const char *key;
    uint16_t kl;
    if (read_key_at(d, d->lap[d->lapi++], &key, &kl) < 0) {
        return sl_error_set(err, SL_ERR_IO, "%s: %s is cut short", sl_ctx_name(d->ctx),
                            d->prev_file);
    }
    /* the key columns, with the text the earlier export had */
    const char *p = key;
    for (size_t k = 0; k < d->prev.nkeys; k++) {
        const char *e = memchr(p, KEY_SEP, (size_t)(key + kl - p));
        size_t n = e ? (size_t)(e - p) : (size_t)(key + kl - p);
        const char *name = k < d->nkey && strcmp(d->key_cols[k], d->prev.keys[k]) == 0
                               ? d->key_cols[k]
                               : d->prev.keys[k];
        sl_record_add_str(rec, name, (uint32_t)strlen(name), p, n);
        p = e ? e + 1 : key + kl;
    }
    set_action(d, rec, "lapsed");
    d->n_lapsed++;
    return 1;
}

/* An export without a single row: the snapshot still gets its header. */
static int decide_columns_empty(diff_step *d, sl_error *err)
{
    sl_record empty;
    sl_record_init(&empty);
    int rc = decide_columns(d, &empty, err);
    sl_record_free(&empty);
    return rc;
}

static int diff_commit(void *self, const sl_run_end *e, sl_error *err)
{
    diff_step *d = self;
    sl_plog(d->ctx, SL_LOG_INFO,
            "%" PRIu64 " new, %" PRIu64 " changed, %" PRIu64 " lapsed, %" PRIu64
            " unchanged, %" PRIu64 " duplicate key(s)%s",
            d->n_new, d->n_changed, d->n_lapsed, d->n_same, d->n_dup,
            e->dry_run ? " (dry run: the snapshot is not changed)" : "");
    if (e->dry_run || !d->out) {
        return 0;
    }
    if (!e->complete) {
        /* the old snapshot stays current; this run's file goes */
        fclose(d->out);
        d->out = NULL;
        unlink(d->new_file);
        return 0;
    }
    if (!d->have_cols && decide_columns_empty(d, err) < 0) {
        return SL_ERR;
    }
    /* the count, then the file made durable, then renamed into place */
    if (fflush(d->out) != 0 || fseek(d->out, 8, SEEK_SET) != 0 ||
        w_all(d->out, &d->out_count, 8) < 0 || fflush(d->out) != 0 || fsync(fileno(d->out)) != 0) {
        return sl_error_set(err, SL_ERR_IO, "%s: cannot finish %s: %s", sl_ctx_name(d->ctx),
                            d->new_file, strerror(errno));
    }
    fclose(d->out);
    d->out = NULL;
    char final[4400], name[128];
    snprintf(name, sizeof(name), "snap-%.0f.bin", sl_ctx_run_started(d->ctx) * 1000.0);
    snprintf(final, sizeof(final), "%s/%s", d->dir, name);
    if (rename(d->new_file, final) != 0) {
        return sl_error_set(err, SL_ERR_IO, "%s: cannot rename %s: %s", sl_ctx_name(d->ctx),
                            d->new_file, strerror(errno));
    }
    char v[512];
    int n = snprintf(v, sizeof(v),
                     "{\"file\":\"%s\",\"count\":%" PRIu64 ",\"new\":%" PRIu64
                     ",\"changed\":%" PRIu64 ",\"lapsed\":%" PRIu64 ",\"created_at\":%.3f}",
                     name, d->out_count, d->n_new, d->n_changed, d->n_lapsed, e->started_at);
    if (sl_ctx_state_set(d->ctx, "snapshot", v, (size_t)n, err) < 0) {
        unlink(final);
        return SL_ERR;
    }
    /* the previous file stays until the next run sweeps it: this transaction
     * may still roll back, and then it is the current one again */
    return 0;
}

const sl_step_plugin sl_step_diff = {
    .name = "diff",
    .summary = "compare with the last delivered snapshot: emit new, changed and lapsed records",
    .options = diff_options,
    .validate = diff_validate,
    .init = diff_init,
    .columns = diff_columns,
    .process_batch = diff_process_batch,
    .drain = diff_drain,
    .commit = diff_commit,
    .destroy = diff_destroy,
};
