/* fake_mailchimp: Mailchimp Marketing API v3 list members
 * (GET /3.0/lists/{list_id}/members), as strict as the real API, over a live
 * list that tests can change between and during requests. Counts open
 * connections like Mailchimp's 10-connection limit and injects faults by
 * offset. See tests/fakes/README.md. */
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/evp.h>

#include "fake_common.h"

#define PROG "fake_mailchimp"
#define USAGE                                                                                      \
    "--port N (0 = any free port) [--port-file FILE] --api-key KEY [--list-id ID]\n"               \
    "       [--members N] [--latency-ms N] [--max-connections 10] [--overload-403]\n"              \
    "       [--fail-offset OFFSET[:STATUS[:TIMES]]]... [--retry-after-429 N]\n"                    \
    "       [--non-json-offset OFFSET[:TIMES]]... [--missing-members-offset OFFSET[:TIMES]]...\n"  \
    "       [--hang-offset OFFSET[:TIMES]]..."

#define MAX_MEMBERS 5000000L
#define MAX_COUNT 1000L
#define MAX_FAULTS 32
#define LOG_MAX 200000
#define MAX_FIELDS 64
#define ERR_TYPE "https://mailchimp.com/developer/marketing/docs/errors/"
/* Generated members changed during 2026-11-28 (UTC), opted in during the
 * 180 days before. */
#define GEN_DAY_Y 2026
#define GEN_DAY_M 11
#define GEN_DAY_D 28
#define OPT_SPAN (180L * 86400L)

enum route {
    R_MEMBERS, /* anything outside /_: the API (404s included) */
    R_TOUCH,
    R_ADD,
    R_CHURN,
    R_DUMP,
    R_STATS,
    R_RESET,
    R_CTL_NOTFOUND
};

enum fault_kind { F_STATUS, F_NON_JSON, F_MISSING, F_HANG };

struct fault {
    enum fault_kind kind;
    long offset;
    long status;
    long times; /* 0 = every time */
    long used;
};

static struct {
    const char *api_key;
    const char *list_id;
    long members;
    long latency_ms;
    long max_conn;
    int overload_403;
    long retry_after_429;
    struct fault faults[MAX_FAULTS];
    int n_faults;
} g_opt = {.list_id = "a1b2c3d4e5", .members = 1000, .max_conn = 10};

static volatile int g_stopping;

/* When the API answer being built may leave (CLOCK_MONOTONIC ns, 0 = now):
 * --latency-ms is the time from a request's arrival to its answer, so the
 * work of building a page is hidden inside it (one thread per connection). */
static _Thread_local int64_t t_deadline_ns;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* --- The list ------------------------------------------------------------
 * Struct of arrays, indexed by insertion order (member i is
 * user<i>@example.org). olc is the order by last_changed: generated members
 * sorted once, then every change appends the member and leaves a tombstone
 * (UINT32_MAX) at its old place. Because a change's time never goes below
 * the latest last_changed (see now_locked), olc_key stays sorted and a
 * since/before window is one binary search. */
enum status { ST_SUBSCRIBED, ST_UNSUBSCRIBED, ST_CLEANED, ST_PENDING, ST_N };
static const char *const STATUS_NAME[ST_N] = {"subscribed", "unsubscribed", "cleaned", "pending"};

static struct {
    pthread_rwlock_t lock;
    uint32_t n, cap;
    uint8_t (*md5)[16];
    int64_t *lc, *opt;
    uint8_t *status;
    uint32_t *pos_lc;
    uint32_t *olc;
    int64_t *olc_key;
    size_t n_olc, cap_olc, tombs;
    uint32_t *oopt;
    int64_t min_lc;   /* lower bound of every last_changed */
    int64_t last_now; /* the latest last_changed handed out */
    long churn;
    uint64_t churn_rng;
    unsigned long touched;
} g_db = {.lock = PTHREAD_RWLOCK_INITIALIZER};

struct logent {
    long offset, count; /* -1: not given or not parsed */
    int64_t since_ms, before_ms;
    uint8_t has_since, has_before, sort, desc;
    uint16_t status;
    uint32_t total, returned, churned;
};

static struct {
    pthread_mutex_t mu;
    unsigned long requests, members_requests, status[600];
    long api_open, api_peak, tcp_open, tcp_peak;
    unsigned long retry429_used;
    struct logent *log;
    size_t n_log;
    unsigned long log_dropped;
    unsigned long instance;
} g_st = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* --- Small helpers ---------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t rng_next(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ULL;
    return mix64(*s);
}

static const char *const FIRST[16] = {"Ada",   "Grace",  "Zoë",  "José",  "Amara", "Chen",
                                      "Fatma", "Olivia", "Noah", "Søren", "Priya", "Liam",
                                      "Mei",   "Ngozi",  "Ivan", "Élodie"};
static const char *const LAST[16] = {
    "Lovelace", "Hopper", "Müller", "García", "O'Brien", "Nguyen", "Okafor", "Smith",
    "Kowalski", "Rossi",  "Dubois", "Tanaka", "Jensen",  "Silva",  "Åberg",  "Novák"};

/* Decimal digits of v at out (no NUL); returns the length. */
static size_t utoa(uint64_t v, char *out)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t j = 0; j < n; j++) {
        out[j] = tmp[n - 1 - j];
    }
    return n;
}

/* "user<i>@example.org" into out (at least 48 bytes); returns the length. */
static int email_of(uint32_t i, char *out, size_t cap)
{
    static const char dom[] = "@example.org";
    (void)cap;
    memcpy(out, "user", 4);
    size_t n = 4 + utoa(i, out + 4);
    memcpy(out + n, dom, sizeof(dom));
    return (int)(n + sizeof(dom) - 1);
}

static void hex_of(const uint8_t *p, size_t n, char *out)
{
    static const char H[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = H[p[i] >> 4];
        out[2 * i + 1] = H[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void two(char *p, int v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

/* "2026-11-28T10:00:00+00:00" (years 0..9999). Hand-rolled: gmtime_r and
 * printf were most of the time of a 1000-member page. */
static void iso_of(int64_t t, char out[64])
{
    int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    int64_t sod = t - days * 86400;
    /* civil_from_days (H. Hinnant) */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    int y = (int)(yoe + era * 400 + (m <= 2));
    memcpy(out, "0000-00-00T00:00:00+00:00", 26);
    if (y < 0 || y > 9999) {
        return;
    }
    two(out, y / 100);
    two(out + 2, y % 100);
    two(out + 5, m);
    two(out + 8, d);
    two(out + 11, (int)(sod / 3600));
    two(out + 14, (int)(sod / 60 % 60));
    two(out + 17, (int)(sod % 60));
}

static void iso_ms_of(int64_t ms, char out[64])
{
    int64_t s = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    int64_t frac = ms - s * 1000;
    char base[64];
    iso_of(s, base);
    if (frac == 0) {
        snprintf(out, 64, "%s", base);
    } else {
        snprintf(out, 64, "%.19s.%03d+00:00", base, (int)frac);
    }
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9') {
            return -1;
        }
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* ISO 8601 date-time with an explicit offset: YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM|±HHMM).
 * Milliseconds since the epoch, or -1 with why filled. */
static int parse_iso(const char *s, int64_t *ms, const char **why)
{
    int Y, M, D, h, m, sec, oh = 0, om = 0;
    const char *p = s;
    *why = "expected an ISO 8601 date-time with an offset, e.g. 2026-11-28T10:00:00+00:00";
    if (digits(&p, 4, &Y) || *p++ != '-' || digits(&p, 2, &M) || *p++ != '-' || digits(&p, 2, &D) ||
        (*p != 'T' && *p != 't') || (p++, digits(&p, 2, &h)) || *p++ != ':' || digits(&p, 2, &m) ||
        *p++ != ':' || digits(&p, 2, &sec)) {
        return -1;
    }
    int frac = 0, scale = 1000;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') {
            return -1;
        }
        while (*p >= '0' && *p <= '9') {
            if (scale > 1) {
                scale /= 10;
                frac += (*p - '0') * scale;
            }
            p++;
        }
    }
    int sign = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '+' ? 1 : -1;
        if (digits(&p, 2, &oh)) {
            return -1;
        }
        if (*p == ':') {
            p++;
        }
        if (digits(&p, 2, &om)) {
            return -1;
        }
    } else if (*p == ' ') {
        *why = "the offset's '+' arrived as a space: percent-encode it as %2B in the query";
        return -1;
    } else {
        return -1;
    }
    if (*p != '\0' || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 ||
        oh > 23 || om > 59) {
        return -1;
    }
    struct tm tm = {.tm_year = Y - 1900,
                    .tm_mon = M - 1,
                    .tm_mday = D,
                    .tm_hour = h,
                    .tm_min = m,
                    .tm_sec = sec};
    int64_t t = (int64_t)timegm(&tm);
    t -= sign * (oh * 3600 + om * 60);
    *ms = t * 1000 + frac;
    return 0;
}

static int64_t ceil_div1000(int64_t ms)
{
    return ms >= 0 ? (ms + 999) / 1000 : -((-ms) / 1000);
}

/* --- Building and changing the list (write lock held, or single-threaded) -- */

static int grow_members(uint32_t want)
{
    if (want <= g_db.cap) {
        return 0;
    }
    uint32_t cap = g_db.cap ? g_db.cap : 1024;
    while (cap < want) {
        cap = cap > UINT32_MAX / 2 ? UINT32_MAX - 1 : cap * 2;
    }
    void *p;
#define GROW(field)                                                                                \
    p = realloc(g_db.field, (size_t)cap * sizeof(*g_db.field));                                    \
    if (!p) {                                                                                      \
        return -1;                                                                                 \
    }                                                                                              \
    g_db.field = p;
    GROW(md5)
    GROW(lc)
    GROW(opt)
    GROW(status)
    GROW(pos_lc)
    GROW(oopt)
#undef GROW
    g_db.cap = cap;
    return 0;
}

static int grow_olc(size_t want)
{
    if (want <= g_db.cap_olc) {
        return 0;
    }
    size_t cap = g_db.cap_olc ? g_db.cap_olc : 1024;
    while (cap < want) {
        cap *= 2;
    }
    uint32_t *a = realloc(g_db.olc, cap * sizeof(*a));
    if (!a) {
        return -1;
    }
    g_db.olc = a;
    int64_t *k = realloc(g_db.olc_key, cap * sizeof(*k));
    if (!k) {
        return -1;
    }
    g_db.olc_key = k;
    g_db.cap_olc = cap;
    return 0;
}

/* Drop the tombstones once they outnumber the members (keeps memory bounded
 * under churn). Order is unchanged. */
static void compact_olc(void)
{
    size_t w = 0;
    for (size_t r = 0; r < g_db.n_olc; r++) {
        if (g_db.olc[r] != UINT32_MAX) {
            g_db.olc[w] = g_db.olc[r];
            g_db.olc_key[w] = g_db.olc_key[r];
            g_db.pos_lc[g_db.olc[w]] = (uint32_t)w;
            w++;
        }
    }
    g_db.n_olc = w;
    g_db.tombs = 0;
}

/* The time of a change: the wall clock, but never below a last_changed
 * already handed out (a clock step back must not reorder changes). */
static int64_t now_locked(void)
{
    int64_t t = (int64_t)time(NULL);
    if (t < g_db.last_now) {
        t = g_db.last_now;
    }
    g_db.last_now = t;
    return t;
}

static int touch_locked(uint32_t i, int64_t now)
{
    if (g_db.n_olc >= g_db.cap_olc && g_db.tombs > g_db.n) {
        compact_olc();
    }
    if (grow_olc(g_db.n_olc + 1) != 0) {
        return -1;
    }
    g_db.olc[g_db.pos_lc[i]] = UINT32_MAX;
    g_db.tombs++;
    g_db.olc[g_db.n_olc] = i;
    g_db.olc_key[g_db.n_olc] = now;
    g_db.pos_lc[i] = (uint32_t)g_db.n_olc++;
    g_db.lc[i] = now;
    g_db.touched++;
    return 0;
}

static void md5_of(EVP_MD_CTX *ctx, uint32_t i, uint8_t out[16])
{
    char email[48];
    int n = email_of(i, email, sizeof(email));
    unsigned len = 0;
    EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    EVP_DigestUpdate(ctx, email, (size_t)n);
    EVP_DigestFinal_ex(ctx, out, &len);
}

/* Append n new members changed and opted in at now. */
static int add_locked(uint32_t n, int64_t now, uint32_t *first)
{
    if ((uint64_t)g_db.n + n > (uint64_t)MAX_MEMBERS) {
        return -1;
    }
    if (grow_members(g_db.n + n) != 0 || grow_olc(g_db.n_olc + n) != 0) {
        return -1;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) {
        return -1;
    }
    *first = g_db.n;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = g_db.n++;
        md5_of(ctx, i, g_db.md5[i]);
        g_db.lc[i] = now;
        g_db.opt[i] = now;
        g_db.status[i] = ST_SUBSCRIBED;
        g_db.oopt[i] = i;
        g_db.olc[g_db.n_olc] = i;
        g_db.olc_key[g_db.n_olc] = now;
        g_db.pos_lc[i] = (uint32_t)g_db.n_olc++;
    }
    EVP_MD_CTX_free(ctx);
    return 0;
}

static int cmp_opt(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (g_db.opt[x] != g_db.opt[y]) {
        return g_db.opt[x] < g_db.opt[y] ? -1 : 1;
    }
    return x < y ? -1 : x > y;
}

/* Deterministic list: member i depends only on i. last_changed is spread over
 * the generated day, so the order by last_changed differs from insertion. */
static int generate(uint32_t n)
{
    struct tm tm = {.tm_year = GEN_DAY_Y - 1900, .tm_mon = GEN_DAY_M - 1, .tm_mday = GEN_DAY_D};
    int64_t base = (int64_t)timegm(&tm);
    uint32_t *bucket = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = -1;
    if (!ctx || grow_members(n ? n : 1) != 0 || grow_olc(n ? n : 1) != 0) {
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        md5_of(ctx, i, g_db.md5[i]);
        g_db.lc[i] = base + (int64_t)(mix64(2 * (uint64_t)i + 1) % 86400);
        g_db.opt[i] = base - OPT_SPAN + (int64_t)(mix64(2 * (uint64_t)i + 2) % OPT_SPAN);
        uint64_t s = mix64((uint64_t)i ^ 0x5eed5eedULL) % 100;
        g_db.status[i] = s < 85   ? ST_SUBSCRIBED
                         : s < 93 ? ST_UNSUBSCRIBED
                         : s < 97 ? ST_CLEANED
                                  : ST_PENDING;
        g_db.oopt[i] = i;
    }
    g_db.n = n;
    /* Counting sort by second: stable, so ties keep insertion order. */
    bucket = calloc(86400 + 1, sizeof(*bucket));
    if (!bucket) {
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        bucket[g_db.lc[i] - base + 1]++;
    }
    for (int s = 0; s < 86400; s++) {
        bucket[s + 1] += bucket[s];
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t pos = bucket[g_db.lc[i] - base]++;
        g_db.olc[pos] = i;
        g_db.olc_key[pos] = g_db.lc[i];
        g_db.pos_lc[i] = pos;
    }
    g_db.n_olc = n;
    qsort(g_db.oopt, n, sizeof(*g_db.oopt), cmp_opt);
    g_db.min_lc = base;
    g_db.last_now = base + 86399;
    rc = 0;
done:
    free(bucket);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* --- Query ------------------------------------------------------------------ */

enum sort { SORT_NONE, SORT_LC, SORT_OPT, SORT_SIGNUP };
static const char *const SORT_NAME[] = {"", "last_changed", "timestamp_opt", "timestamp_signup"};

struct query {
    long count, offset;
    int has_since, has_before;
    int64_t since_ms, before_ms;
    int64_t lo_s, hi_s; /* the window in whole seconds: lo_s <= last_changed < hi_s */
    enum sort sort;
    int desc;
    int status; /* -1: any */
    char fields_buf[2048], excl_buf[2048];
    const char *fields[MAX_FIELDS], *excl[MAX_FIELDS];
    int n_fields, n_excl;
};

/* Positions [from, to) of the filtered, ordered set go to visit(); returns
 * the size of the whole set. Read (or write) lock held. */
typedef void (*visit_fn)(uint64_t pos, uint32_t idx, void *arg);

static int lc_in(const struct query *q, uint32_t i)
{
    return g_db.lc[i] >= q->lo_s && g_db.lc[i] < q->hi_s &&
           (q->status < 0 || g_db.status[i] == q->status);
}

static size_t lower_key(int64_t key)
{
    size_t lo = 0, hi = g_db.n_olc;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g_db.olc_key[mid] < key) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static uint64_t walk(const struct query *q, uint64_t from, uint64_t to, visit_fn visit, void *arg)
{
    uint32_t n = g_db.n;
    /* A window that holds every last_changed filters nothing. */
    int no_window = q->lo_s <= g_db.min_lc && q->hi_s > g_db.last_now;
    int plain = no_window && q->status < 0;
    uint64_t k = 0;

    if (q->sort == SORT_LC) {
        size_t a = lower_key(q->lo_s), b = lower_key(q->hi_s);
        if (plain && g_db.tombs == 0) {
            for (uint64_t p = from; p < to && p < n; p++) {
                visit(p, g_db.olc[q->desc ? n - 1 - p : p], arg);
            }
            return n;
        }
        for (size_t r = 0; r < b - a; r++) {
            uint32_t i = g_db.olc[q->desc ? b - 1 - r : a + r];
            if (i == UINT32_MAX || (q->status >= 0 && g_db.status[i] != q->status)) {
                continue;
            }
            if (k >= from && k < to) {
                visit(k, i, arg);
            }
            k++;
        }
        return k;
    }
    const uint32_t *ord = q->sort == SORT_OPT ? g_db.oopt : NULL;
    if (plain) {
        for (uint64_t p = from; p < to && p < n; p++) {
            uint64_t r = q->desc ? n - 1 - p : p;
            visit(p, ord ? ord[r] : (uint32_t)r, arg);
        }
        return n;
    }
    for (uint32_t r = 0; r < n; r++) {
        uint32_t rr = q->desc ? n - 1 - r : r;
        uint32_t i = ord ? ord[rr] : rr;
        if (!lc_in(q, i)) {
            continue;
        }
        if (k >= from && k < to) {
            visit(k, i, arg);
        }
        k++;
    }
    return k;
}

/* --- Field selection (fields / exclude_fields) ----------------------------- */

enum mkey {
    K_ID,
    K_EMAIL,
    K_UEID,
    K_FULL,
    K_WEBID,
    K_ETYPE,
    K_STATUS,
    K_MERGE,
    K_FNAME,
    K_LNAME,
    K_IPSIGNUP,
    K_TSSIGNUP,
    K_IPOPT,
    K_TSOPT,
    K_RATING,
    K_LC,
    K_LANG,
    K_VIP,
    K_ECLIENT,
    K_LOC,
    K_LAT,
    K_LON,
    K_GMT,
    K_DST,
    K_CC,
    K_TZ,
    K_SOURCE,
    K_TAGSCOUNT,
    K_TAGS,
    K_LISTID,
    T_MEMBERS,
    T_LISTID,
    T_TOTAL,
    T_LINKS,
    K_N
};
static const char *const KPATH[K_N] = {"members.id",
                                       "members.email_address",
                                       "members.unique_email_id",
                                       "members.full_name",
                                       "members.web_id",
                                       "members.email_type",
                                       "members.status",
                                       "members.merge_fields",
                                       "members.merge_fields.FNAME",
                                       "members.merge_fields.LNAME",
                                       "members.ip_signup",
                                       "members.timestamp_signup",
                                       "members.ip_opt",
                                       "members.timestamp_opt",
                                       "members.member_rating",
                                       "members.last_changed",
                                       "members.language",
                                       "members.vip",
                                       "members.email_client",
                                       "members.location",
                                       "members.location.latitude",
                                       "members.location.longitude",
                                       "members.location.gmtoff",
                                       "members.location.dstoff",
                                       "members.location.country_code",
                                       "members.location.timezone",
                                       "members.source",
                                       "members.tags_count",
                                       "members.tags",
                                       "members.list_id",
                                       "members",
                                       "list_id",
                                       "total_items",
                                       "_links"};

static int path_under(const char *path, const char *anc)
{
    size_t n = strlen(anc);
    return strncmp(path, anc, n) == 0 && (path[n] == '\0' || path[n] == '.');
}

/* fields: a path is kept when it is listed, lies under a listed path, or
 * holds a listed path. exclude_fields then drops listed paths and all under
 * them. */
static void select_keys(const struct query *q, uint8_t sel[K_N])
{
    for (int k = 0; k < K_N; k++) {
        int in = q->n_fields == 0;
        for (int f = 0; f < q->n_fields && !in; f++) {
            in = path_under(KPATH[k], q->fields[f]) || path_under(q->fields[f], KPATH[k]);
        }
        for (int e = 0; e < q->n_excl && in; e++) {
            in = !path_under(KPATH[k], q->excl[e]);
        }
        sel[k] = (uint8_t)in;
    }
}

static int split_paths(const char *v, char *buf, size_t cap, const char **out)
{
    snprintf(buf, cap, "%s", v);
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && n < MAX_FIELDS;
         t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') {
            t++;
        }
        size_t l = strlen(t);
        while (l > 0 && t[l - 1] == ' ') {
            t[--l] = '\0';
        }
        if (l > 0) {
            out[n++] = t;
        }
    }
    return n;
}

/* --- Member JSON ------------------------------------------------------------ */

struct page {
    sl_buf *b;
    const uint8_t *sel;
    int first;
    uint32_t returned;
};

/* Opens key name when it is selected; returns whether to write its value. */
static int key(sl_buf *b, int *first, int on, const char *name)
{
    if (on) {
        if (!*first) {
            sl_buf_putc(b, ',');
        }
        sl_buf_putc(b, '"');
        sl_buf_puts(b, name);
        sl_buf_append(b, "\":", 2);
        *first = 0;
    }
    return on;
}

static void put_u64(sl_buf *b, uint64_t v)
{
    char d[24];
    sl_buf_append(b, d, utoa(v, d));
}

static void put_str(sl_buf *b, const char *s)
{
    sl_buf_putc(b, '"');
    sl_json_escape(b, s, strlen(s));
    sl_buf_putc(b, '"');
}

static void member_json(sl_buf *b, const uint8_t *sel, uint32_t i)
{
    char hex[33], ueid[11], email[48], iso[64];
    hex_of(g_db.md5[i], 16, hex);
    uint64_t h = mix64((uint64_t)i ^ 0xe1e1e1ULL);
    uint8_t u[5] = {(uint8_t)h, (uint8_t)(h >> 8), (uint8_t)(h >> 16), (uint8_t)(h >> 24),
                    (uint8_t)(h >> 32)};
    hex_of(u, 5, ueid);
    email_of(i, email, sizeof(email));
    const char *fn = FIRST[mix64((uint64_t)i + 7) % 16], *ln = LAST[mix64((uint64_t)i + 13) % 16];
    int f = 1;
    sl_buf_putc(b, '{');
    if (key(b, &f, sel[K_ID], "id")) {
        put_str(b, hex);
    }
    if (key(b, &f, sel[K_EMAIL], "email_address")) {
        put_str(b, email);
    }
    if (key(b, &f, sel[K_UEID], "unique_email_id")) {
        put_str(b, ueid);
    }
    if (key(b, &f, sel[K_FULL], "full_name")) {
        sl_buf_putc(b, '"');
        sl_json_escape(b, fn, strlen(fn));
        sl_buf_putc(b, ' ');
        sl_json_escape(b, ln, strlen(ln));
        sl_buf_putc(b, '"');
    }
    if (key(b, &f, sel[K_WEBID], "web_id")) {
        put_u64(b, 100000000u + (uint64_t)i);
    }
    if (key(b, &f, sel[K_ETYPE], "email_type")) {
        sl_buf_puts(b, "\"html\"");
    }
    if (key(b, &f, sel[K_STATUS], "status")) {
        put_str(b, STATUS_NAME[g_db.status[i]]);
    }
    if (key(b, &f, sel[K_MERGE], "merge_fields")) {
        int f2 = 1;
        sl_buf_putc(b, '{');
        if (key(b, &f2, sel[K_FNAME], "FNAME")) {
            put_str(b, fn);
        }
        if (key(b, &f2, sel[K_LNAME], "LNAME")) {
            put_str(b, ln);
        }
        sl_buf_putc(b, '}');
    }
    if (key(b, &f, sel[K_IPSIGNUP], "ip_signup")) {
        sl_buf_puts(b, "\"\"");
    }
    if (key(b, &f, sel[K_TSSIGNUP], "timestamp_signup")) {
        sl_buf_puts(b, "\"\"");
    }
    if (key(b, &f, sel[K_IPOPT], "ip_opt")) {
        sl_buf_puts(b, "\"198.51.100.");
        put_u64(b, i % 254 + 1);
        sl_buf_putc(b, '"');
    }
    if (key(b, &f, sel[K_TSOPT], "timestamp_opt")) {
        iso_of(g_db.opt[i], iso);
        put_str(b, iso);
    }
    if (key(b, &f, sel[K_RATING], "member_rating")) {
        put_u64(b, 2 + i % 4);
    }
    if (key(b, &f, sel[K_LC], "last_changed")) {
        iso_of(g_db.lc[i], iso);
        put_str(b, iso);
    }
    if (key(b, &f, sel[K_LANG], "language")) {
        sl_buf_puts(b, "\"\"");
    }
    if (key(b, &f, sel[K_VIP], "vip")) {
        sl_buf_puts(b, "false");
    }
    if (key(b, &f, sel[K_ECLIENT], "email_client")) {
        sl_buf_puts(b, "\"\"");
    }
    if (key(b, &f, sel[K_LOC], "location")) {
        static const struct {
            int k;
            const char *name, *val;
        } loc[] = {{K_LAT, "latitude", "0"},       {K_LON, "longitude", "0"},
                   {K_GMT, "gmtoff", "0"},         {K_DST, "dstoff", "0"},
                   {K_CC, "country_code", "\"\""}, {K_TZ, "timezone", "\"\""}};
        int f2 = 1;
        sl_buf_putc(b, '{');
        for (size_t j = 0; j < sizeof(loc) / sizeof(loc[0]); j++) {
            if (key(b, &f2, sel[loc[j].k], loc[j].name)) {
                sl_buf_puts(b, loc[j].val);
            }
        }
        sl_buf_putc(b, '}');
    }
    if (key(b, &f, sel[K_SOURCE], "source")) {
        sl_buf_puts(b, "\"API - Generic\"");
    }
    if (key(b, &f, sel[K_TAGSCOUNT], "tags_count")) {
        sl_buf_puts(b, "0");
    }
    if (key(b, &f, sel[K_TAGS], "tags")) {
        sl_buf_puts(b, "[]");
    }
    if (key(b, &f, sel[K_LISTID], "list_id")) {
        put_str(b, g_opt.list_id);
    }
    sl_buf_putc(b, '}');
}

static void visit_page(uint64_t pos, uint32_t idx, void *arg)
{
    struct page *pg = arg;
    if (!pg->first) {
        sl_buf_putc(pg->b, ',');
    }
    pg->first = 0;
    member_json(pg->b, pg->sel, idx);
    pg->returned++;
}

/* --- Churn: touch K members placed before the requested offset -------------- */

struct pick {
    uint64_t *pos; /* sorted positions to take */
    size_t n, next;
    uint32_t *idx;
    size_t n_idx;
};

static void visit_pick(uint64_t pos, uint32_t idx, void *arg)
{
    struct pick *pk = arg;
    if (pk->next < pk->n && pk->pos[pk->next] == pos) {
        pk->idx[pk->n_idx++] = idx;
        pk->next++;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Write lock held. Returns how many members were touched. */
static uint32_t churn_locked(const struct query *q)
{
    uint64_t before = (uint64_t)q->offset;
    uint64_t k = (uint64_t)g_db.churn;
    struct pick pk = {0};
    uint32_t done = 0;
    uint64_t total = walk(q, 0, 0, visit_pick, &pk);
    if (before > total) {
        before = total;
    }
    if (k > before) {
        k = before;
    }
    if (k == 0) {
        return 0;
    }
    pk.pos = malloc(k * sizeof(*pk.pos));
    pk.idx = malloc(k * sizeof(*pk.idx));
    if (!pk.pos || !pk.idx) {
        goto done;
    }
    /* k distinct positions in [0, before): all of them, or rejection sampling. */
    if (k == before) {
        for (uint64_t p = 0; p < k; p++) {
            pk.pos[p] = p;
        }
    } else {
        size_t got = 0;
        while (got < k) {
            uint64_t p = rng_next(&g_db.churn_rng) % before;
            int dup = 0;
            for (size_t j = 0; j < got && !dup; j++) {
                dup = pk.pos[j] == p;
            }
            if (!dup) {
                pk.pos[got++] = p;
            }
        }
        qsort(pk.pos, k, sizeof(*pk.pos), cmp_u64);
    }
    pk.n = k;
    walk(q, 0, before, visit_pick, &pk);
    int64_t now = now_locked();
    for (size_t j = 0; j < pk.n_idx; j++) {
        if (touch_locked(pk.idx[j], now) == 0) {
            done++;
        }
    }
done:
    free(pk.pos);
    free(pk.idx);
    return done;
}

/* --- Responses ---------------------------------------------------------------- */

static void log_request(const struct logent *e)
{
    pthread_mutex_lock(&g_st.mu);
    if (e->status < 600) {
        g_st.status[e->status]++;
    }
    if (g_st.n_log < LOG_MAX) {
        if (!g_st.log) {
            g_st.log = calloc(LOG_MAX, sizeof(*g_st.log));
        }
        if (g_st.log) {
            g_st.log[g_st.n_log++] = *e;
        }
    } else {
        g_st.log_dropped++;
    }
    pthread_mutex_unlock(&g_st.mu);
}

static enum MHD_Result respond_buf(struct MHD_Connection *c, unsigned status, const char *ctype,
                                   sl_buf *b, const char *retry_after)
{
    size_t len = b->len;
    char *data = sl_buf_steal(b);
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, data ? data : (char *)"", data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(data);
        return MHD_NO;
    }
    if (ctype) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    }
    if (retry_after) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
    }
    if (status == 405) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET");
    }
    if (t_deadline_ns != 0) {
        int64_t left = t_deadline_ns - mono_ns();
        if (left > 0) {
            struct timespec ts = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
        }
    }
    enum MHD_Result rc = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* Mailchimp's problem document (RFC 7807 shape); field/fmsg add an errors[]
 * entry like Mailchimp's validation errors. */
static enum MHD_Result problem(struct MHD_Connection *c, struct logent *e, unsigned status,
                               const char *title, const char *detail, const char *field,
                               const char *fmsg, const char *retry_after)
{
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    pthread_mutex_lock(&g_st.mu);
    unsigned long inst = ++g_st.instance;
    pthread_mutex_unlock(&g_st.mu);
    sl_buf_puts(&b, "{\"type\":\"" ERR_TYPE "\",\"title\":");
    put_str(&b, title);
    sl_buf_printf(&b, ",\"status\":%u,\"detail\":", status);
    put_str(&b, detail);
    sl_buf_printf(&b, ",\"instance\":\"fa4e0000-0000-4000-8000-%012lx\"", inst);
    if (field) {
        sl_buf_puts(&b, ",\"errors\":[{\"field\":");
        put_str(&b, field);
        sl_buf_puts(&b, ",\"message\":");
        put_str(&b, fmsg);
        sl_buf_puts(&b, "}]");
    }
    sl_buf_putc(&b, '}');
    fprintf(stderr, PROG ": %u %s: %s%s%s\n", status, title, detail, fmsg ? " " : "",
            fmsg ? fmsg : "");
    e->status = (uint16_t)status;
    log_request(e);
    enum MHD_Result rc =
        respond_buf(c, status, "application/problem+json; charset=utf-8", &b, retry_after);
    sl_buf_free(&b);
    return rc;
}

static enum MHD_Result bad_param(struct MHD_Connection *c, struct logent *e, const char *field,
                                 const char *msg)
{
    return problem(c, e, 400, "Invalid Resource",
                   "The resource submitted could not be validated. For field-specific details, "
                   "see the 'errors' array.",
                   field, msg, NULL);
}

/* --- Auth ----------------------------------------------------------------- */

static int b64_val(char ch)
{
    if (ch >= 'A' && ch <= 'Z') {
        return ch - 'A';
    }
    if (ch >= 'a' && ch <= 'z') {
        return ch - 'a' + 26;
    }
    if (ch >= '0' && ch <= '9') {
        return ch - '0' + 52;
    }
    return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

/* Standard base64 with optional padding; -1 on a bad character. */
static int b64_decode(const char *s, char *out, size_t cap, size_t *len)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (; *s && *s != '='; s++) {
        int v = b64_val(*s);
        if (v < 0) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n + 1 >= cap) {
                return -1;
            }
            out[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    while (*s == '=') {
        s++;
    }
    if (*s) {
        return -1;
    }
    out[n] = '\0';
    *len = n;
    return 0;
}

/* 1 ok, 0 wrong key or scheme, -1 no Authorization header. */
static int auth_check(struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h) {
        return -1;
    }
    const char *key = NULL;
    char dec[1024];
    if (strncasecmp(h, "Basic ", 6) == 0) {
        size_t n = 0;
        const char *p = h + 6;
        while (*p == ' ') {
            p++;
        }
        if (b64_decode(p, dec, sizeof(dec), &n) != 0 || memchr(dec, '\0', n)) {
            return 0;
        }
        char *colon = strchr(dec, ':');
        if (!colon) {
            return 0;
        }
        key = colon + 1;
    } else if (strncasecmp(h, "Bearer ", 7) == 0) {
        key = h + 7;
    } else if (strncasecmp(h, "apikey ", 7) == 0) {
        key = h + 7;
    } else {
        return 0;
    }
    return strcmp(key, g_opt.api_key) == 0;
}

/* --- Connections ------------------------------------------------------------ */

/* Per TCP connection: api is set once the connection carried an API request.
 * Connections used only for /_ control endpoints never count toward the
 * limit, so a test polling /_stats cannot push sluice over it. */
struct conn {
    int api;
};

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = calloc(1, sizeof(struct conn));
        pthread_mutex_lock(&g_st.mu);
        if (++g_st.tcp_open > g_st.tcp_peak) {
            g_st.tcp_peak = g_st.tcp_open;
        }
        pthread_mutex_unlock(&g_st.mu);
        return;
    }
    struct conn *k = *socket_context;
    pthread_mutex_lock(&g_st.mu);
    g_st.tcp_open--;
    if (k && k->api) {
        g_st.api_open--;
    }
    pthread_mutex_unlock(&g_st.mu);
    free(k);
    *socket_context = NULL;
}

/* Counts the connection as an API connection (once) and tells whether the
 * limit is exceeded now. */
static int over_limit(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn *k = ci ? ci->socket_context : NULL;
    pthread_mutex_lock(&g_st.mu);
    if (k && !k->api) {
        k->api = 1;
        if (++g_st.api_open > g_st.api_peak) {
            g_st.api_peak = g_st.api_open;
        }
    }
    int over = g_st.api_open > g_opt.max_conn;
    pthread_mutex_unlock(&g_st.mu);
    return over;
}

/* Block until the client gives up (closes the connection) or we stop. */
static void hang(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci ? (int)ci->connect_fd : -1;
    while (!g_stopping) {
        if (fd < 0) {
            fk_sleep_ms(100);
            continue;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
        int r = poll(&p, 1, 100);
        if (r > 0) {
            if (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) {
                return;
            }
            char ch;
            ssize_t got = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
            if (got == 0) {
                return;
            }
            fk_sleep_ms(100); /* pipelined bytes: keep hanging */
        }
    }
}

/* --- The members endpoint --------------------------------------------------- */

static const char *arg(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
}

/* Parse the query; 0, or an answered 400 in *rc. */
static int parse_query(struct MHD_Connection *c, struct query *q, struct logent *e,
                       enum MHD_Result *rc)
{
    const char *v, *why = NULL;
    char msg[512];
    memset(q, 0, sizeof(*q));
    q->count = 10;
    q->lo_s = INT64_MIN;
    q->hi_s = INT64_MAX;
    q->status = -1;
    if ((v = arg(c, "count")) != NULL && fk_parse_long(v, 0, MAX_COUNT, &q->count) != 0) {
        snprintf(msg, sizeof(msg), "count must be an integer from 0 to %ld, got '%.100s'",
                 MAX_COUNT, v);
        *rc = bad_param(c, e, "count", msg);
        return -1;
    }
    e->count = q->count;
    if ((v = arg(c, "offset")) != NULL && fk_parse_long(v, 0, LONG_MAX, &q->offset) != 0) {
        snprintf(msg, sizeof(msg), "offset must be a non-negative integer, got '%.100s'", v);
        *rc = bad_param(c, e, "offset", msg);
        return -1;
    }
    e->offset = q->offset;
    static const char *const tnames[2] = {"since_last_changed", "before_last_changed"};
    for (int t = 0; t < 2; t++) {
        if ((v = arg(c, tnames[t])) == NULL) {
            continue;
        }
        int64_t ms;
        if (parse_iso(v, &ms, &why) != 0) {
            snprintf(msg, sizeof(msg), "%s: %s, got '%.100s'", tnames[t], why, v);
            *rc = bad_param(c, e, tnames[t], msg);
            return -1;
        }
        if (t == 0) {
            q->has_since = e->has_since = 1;
            q->since_ms = e->since_ms = ms;
            q->lo_s = ceil_div1000(ms);
        } else {
            q->has_before = e->has_before = 1;
            q->before_ms = e->before_ms = ms;
            q->hi_s = ceil_div1000(ms);
        }
    }
    if ((v = arg(c, "sort_field")) != NULL) {
        int found = 0;
        for (int s = SORT_LC; s <= SORT_SIGNUP && !found; s++) {
            if (strcmp(v, SORT_NAME[s]) == 0) {
                q->sort = (enum sort)s;
                found = 1;
            }
        }
        if (!found) {
            snprintf(msg, sizeof(msg),
                     "sort_field must be one of timestamp_opt, timestamp_signup, last_changed, "
                     "got '%.100s'",
                     v);
            *rc = bad_param(c, e, "sort_field", msg);
            return -1;
        }
    }
    if ((v = arg(c, "sort_dir")) != NULL) {
        if (strcmp(v, "ASC") != 0 && strcmp(v, "DESC") != 0) {
            snprintf(msg, sizeof(msg), "sort_dir must be ASC or DESC, got '%.100s'", v);
            *rc = bad_param(c, e, "sort_dir", msg);
            return -1;
        }
        q->desc = q->sort != SORT_NONE && strcmp(v, "DESC") == 0;
    }
    e->sort = (uint8_t)q->sort;
    e->desc = (uint8_t)q->desc;
    if ((v = arg(c, "status")) != NULL) {
        for (int s = 0; s < ST_N; s++) {
            if (strcmp(v, STATUS_NAME[s]) == 0) {
                q->status = s;
            }
        }
        if (q->status < 0) {
            snprintf(msg, sizeof(msg),
                     "status must be one of subscribed, unsubscribed, cleaned, pending, got "
                     "'%.100s'",
                     v);
            *rc = bad_param(c, e, "status", msg);
            return -1;
        }
    }
    if ((v = arg(c, "fields")) != NULL) {
        q->n_fields = split_paths(v, q->fields_buf, sizeof(q->fields_buf), q->fields);
    }
    if ((v = arg(c, "exclude_fields")) != NULL) {
        q->n_excl = split_paths(v, q->excl_buf, sizeof(q->excl_buf), q->excl);
    }
    return 0;
}

static struct fault *take_fault(long offset)
{
    struct fault *hit = NULL;
    pthread_mutex_lock(&g_st.mu);
    for (int i = 0; i < g_opt.n_faults && !hit; i++) {
        struct fault *f = &g_opt.faults[i];
        if (f->offset == offset && (f->times == 0 || f->used < f->times)) {
            f->used++;
            hit = f;
        }
    }
    pthread_mutex_unlock(&g_st.mu);
    return hit;
}

static const char *title_of(long status)
{
    switch (status) {
    case 400:
        return "Invalid Resource";
    case 403:
        return "Forbidden";
    case 404:
        return "Resource Not Found";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Injected Fault";
    }
}

static enum MHD_Result answer_api(struct MHD_Connection *c, const char *url, const char *method,
                                  int over)
{
    struct logent e = {.offset = -1, .count = -1};
    char detail[512];
    t_deadline_ns = 0;

    pthread_mutex_lock(&g_st.mu);
    g_st.requests++;
    pthread_mutex_unlock(&g_st.mu);

    if (over) {
        if (g_opt.overload_403) {
            sl_buf b;
            sl_buf_init(&b, 16);
            e.status = 403;
            log_request(&e);
            fprintf(stderr, PROG ": 403 (overload): more than %ld connections open\n",
                    g_opt.max_conn);
            return respond_buf(c, 403, "text/html", &b, NULL);
        }
        snprintf(detail, sizeof(detail),
                 "You have exceeded the limit of %ld simultaneous connections.", g_opt.max_conn);
        return problem(c, &e, 429, "Too Many Requests", detail, NULL, NULL, NULL);
    }
    t_deadline_ns = g_opt.latency_ms > 0 ? mono_ns() + g_opt.latency_ms * 1000000 : 0;
    if (g_opt.retry_after_429 > 0) {
        pthread_mutex_lock(&g_st.mu);
        int hit = g_st.retry429_used < (unsigned long)g_opt.retry_after_429;
        g_st.retry429_used += hit;
        pthread_mutex_unlock(&g_st.mu);
        if (hit) {
            return problem(c, &e, 429, "Too Many Requests",
                           "You have exceeded the limit of 10 simultaneous connections. "
                           "(fake_mailchimp --retry-after-429)",
                           NULL, NULL, "1");
        }
    }
    int a = auth_check(c);
    if (a < 0) {
        return problem(c, &e, 401, "API Key Missing", "Your request did not include an API key.",
                       NULL, NULL, NULL);
    }
    if (a == 0) {
        return problem(c, &e, 401, "API Key Invalid",
                       "Your API key may be invalid, or you've attempted to access the wrong "
                       "datacenter.",
                       NULL, NULL, NULL);
    }
    char want[512];
    snprintf(want, sizeof(want), "/3.0/lists/%s/members", g_opt.list_id);
    if (strcmp(url, want) != 0) {
        return problem(c, &e, 404, "Resource Not Found",
                       "The requested resource could not be found.", NULL, NULL, NULL);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        return problem(c, &e, 405, "Method Not Allowed",
                       "The requested method and resource are not compatible. See the Allow "
                       "header for this resource's available methods.",
                       NULL, NULL, NULL);
    }
    pthread_mutex_lock(&g_st.mu);
    g_st.members_requests++;
    pthread_mutex_unlock(&g_st.mu);

    struct query *q = malloc(sizeof(*q));
    if (!q) {
        return MHD_NO;
    }
    enum MHD_Result rc = MHD_NO;
    if (parse_query(c, q, &e, &rc) != 0) {
        free(q);
        return rc;
    }

    struct fault *f = take_fault(q->offset);
    if (f && f->kind == F_HANG) {
        fprintf(stderr, PROG ": hanging the request at offset %ld until the client leaves\n",
                q->offset);
        hang(c);
        e.status = 0;
        log_request(&e);
        free(q);
        return MHD_NO;
    }
    if (f && f->kind == F_STATUS) {
        snprintf(detail, sizeof(detail), "fake_mailchimp injected %ld at offset %ld", f->status,
                 q->offset);
        free(q);
        return problem(c, &e, (unsigned)f->status, title_of(f->status), detail, NULL, NULL,
                       f->status == 429 ? "1" : NULL);
    }
    if (f && f->kind == F_NON_JSON) {
        static const char html[] = "<html><head><title>502 Bad Gateway</title></head><body>"
                                   "<h1>Bad Gateway</h1></body></html>";
        sl_buf b;
        sl_buf_init(&b, 1024);
        sl_buf_puts(&b, html);
        e.status = 200;
        log_request(&e);
        fprintf(stderr, PROG ": 200 with an HTML body at offset %ld (injected)\n", q->offset);
        free(q);
        rc = respond_buf(c, 200, "text/html", &b, NULL);
        sl_buf_free(&b);
        return rc;
    }

    uint8_t sel[K_N];
    select_keys(q, sel);
    sl_buf b;
    sl_buf_init(&b, (size_t)256 * 1024 * 1024);
    int churning = __atomic_load_n(&g_db.churn, __ATOMIC_RELAXED) > 0;
    if (churning) {
        pthread_rwlock_wrlock(&g_db.lock);
        if (g_db.churn > 0) {
            e.churned = churn_locked(q);
        }
    } else {
        pthread_rwlock_rdlock(&g_db.lock);
    }
    struct page pg = {.b = &b, .sel = sel, .first = 1};
    int first = 1;
    uint64_t total;
    if (sel[T_MEMBERS] && !(f && f->kind == F_MISSING)) {
        sl_buf_puts(&b, "{\"members\":[");
        total =
            walk(q, (uint64_t)q->offset, (uint64_t)q->offset + (uint64_t)q->count, visit_page, &pg);
        sl_buf_putc(&b, ']');
        first = 0;
    } else {
        sl_buf_putc(&b, '{');
        total = walk(q, 0, 0, visit_page, &pg);
    }
    pthread_rwlock_unlock(&g_db.lock);
    if (sel[T_LISTID]) {
        sl_buf_puts(&b, first ? "\"list_id\":" : ",\"list_id\":");
        put_str(&b, g_opt.list_id);
        first = 0;
    }
    if (sel[T_TOTAL]) {
        sl_buf_printf(&b, "%s\"total_items\":%" PRIu64, first ? "" : ",", total);
        first = 0;
    }
    if (sel[T_LINKS]) {
        sl_buf_puts(&b, first ? "\"_links\":[]" : ",\"_links\":[]");
    }
    sl_buf_putc(&b, '}');
    if (f && f->kind == F_MISSING) {
        fprintf(stderr, PROG ": 200 without \"members\" at offset %ld (injected)\n", q->offset);
    }
    e.total = (uint32_t)total;
    e.returned = pg.returned;
    e.status = 200;
    log_request(&e);
    free(q);
    if (b.len + 1 >= b.max) {
        sl_buf_free(&b);
        return MHD_NO;
    }
    rc = respond_buf(c, 200, "application/json; charset=utf-8", &b, NULL);
    sl_buf_free(&b);
    return rc;
}

/* --- Control endpoints ------------------------------------------------------ */

static void ids_json(sl_buf *b, const uint32_t *idx, size_t n)
{
    char hex[33];
    sl_buf_putc(b, '[');
    for (size_t j = 0; j < n; j++) {
        hex_of(g_db.md5[idx[j]], 16, hex);
        sl_buf_printf(b, "%s\"%s\"", j ? "," : "", hex);
    }
    sl_buf_putc(b, ']');
}

static enum MHD_Result ctl_touch(struct MHD_Connection *c)
{
    long n = 1, seed = 1;
    const char *v;
    if (((v = arg(c, "n")) && fk_parse_long(v, 0, MAX_MEMBERS, &n) != 0) ||
        ((v = arg(c, "seed")) && fk_parse_long(v, LONG_MIN, LONG_MAX, &seed) != 0)) {
        return fk_respond_message(c, 400, "/_touch: n and seed must be integers");
    }
    int st = -1;
    if ((v = arg(c, "status")) != NULL) {
        for (int s = 0; s < ST_N; s++) {
            if (strcmp(v, STATUS_NAME[s]) == 0) {
                st = s;
            }
        }
        if (st < 0) {
            return fk_respond_message(c, 400, "/_touch: status must be a member status");
        }
    }
    pthread_rwlock_wrlock(&g_db.lock);
    uint32_t N = g_db.n;
    if ((uint64_t)n > N) {
        pthread_rwlock_unlock(&g_db.lock);
        char msg[200];
        snprintf(msg, sizeof(msg), "/_touch: n=%ld but the list has %" PRIu32 " members", n, N);
        return fk_respond_message(c, 400, msg);
    }
    uint8_t *seen = calloc((size_t)N / 8 + 1, 1);
    uint32_t *idx = malloc(((size_t)n + 1) * sizeof(*idx));
    sl_buf b;
    sl_buf_init(&b, (size_t)256 * 1024 * 1024);
    enum MHD_Result rc = MHD_NO;
    if (!seen || !idx) {
        pthread_rwlock_unlock(&g_db.lock);
        goto done;
    }
    uint64_t rng = (uint64_t)seed * 0x2545f4914f6cdd1dULL;
    int64_t now = now_locked();
    for (long j = 0; j < n;) {
        uint32_t i = (uint32_t)(rng_next(&rng) % N);
        if (seen[i / 8] & (1u << (i % 8))) {
            continue;
        }
        seen[i / 8] |= (uint8_t)(1u << (i % 8));
        if (touch_locked(i, now) != 0) {
            break;
        }
        if (st >= 0) {
            g_db.status[i] = (uint8_t)st;
        }
        idx[j++] = i;
    }
    ids_json(&b, idx, (size_t)n);
    pthread_rwlock_unlock(&g_db.lock);
    rc = respond_buf(c, 200, "application/json", &b, NULL);
done:
    sl_buf_free(&b);
    free(seen);
    free(idx);
    return rc;
}

static enum MHD_Result ctl_add(struct MHD_Connection *c)
{
    long n = 1;
    const char *v = arg(c, "n");
    if (v && fk_parse_long(v, 0, MAX_MEMBERS, &n) != 0) {
        return fk_respond_message(c, 400, "/_add: n must be an integer");
    }
    sl_buf b;
    sl_buf_init(&b, (size_t)256 * 1024 * 1024);
    pthread_rwlock_wrlock(&g_db.lock);
    uint32_t first = 0;
    if (add_locked((uint32_t)n, now_locked(), &first) != 0) {
        pthread_rwlock_unlock(&g_db.lock);
        sl_buf_free(&b);
        return fk_respond_message(c, 400, "/_add: the list cannot grow that much");
    }
    uint32_t *idx = malloc(((size_t)n + 1) * sizeof(*idx));
    for (long j = 0; idx && j < n; j++) {
        idx[j] = first + (uint32_t)j;
    }
    if (idx) {
        ids_json(&b, idx, (size_t)n);
    }
    pthread_rwlock_unlock(&g_db.lock);
    free(idx);
    enum MHD_Result rc = respond_buf(c, 200, "application/json", &b, NULL);
    sl_buf_free(&b);
    return rc;
}

static enum MHD_Result ctl_churn(struct MHD_Connection *c)
{
    long k = 0, seed = 1;
    const char *v;
    if (!(v = arg(c, "per_request")) || fk_parse_long(v, 0, 10000, &k) != 0 ||
        ((v = arg(c, "seed")) && fk_parse_long(v, LONG_MIN, LONG_MAX, &seed) != 0)) {
        return fk_respond_message(c, 400, "/_churn: per_request=K (0..10000) is required");
    }
    pthread_rwlock_wrlock(&g_db.lock);
    __atomic_store_n(&g_db.churn, k, __ATOMIC_RELAXED);
    g_db.churn_rng = (uint64_t)seed;
    pthread_rwlock_unlock(&g_db.lock);
    char body[64];
    snprintf(body, sizeof(body), "{\"per_request\":%ld}", k);
    return fk_respond(c, 200, "application/json", body, strlen(body));
}

static enum MHD_Result ctl_dump(struct MHD_Connection *c)
{
    sl_buf b;
    sl_buf_init(&b, (size_t)1024 * 1024 * 1024);
    char hex[33], email[48], iso[64];
    pthread_rwlock_rdlock(&g_db.lock);
    sl_buf_putc(&b, '[');
    for (uint32_t i = 0; i < g_db.n; i++) {
        hex_of(g_db.md5[i], 16, hex);
        email_of(i, email, sizeof(email));
        iso_of(g_db.lc[i], iso);
        sl_buf_printf(&b,
                      "%s{\"id\":\"%s\",\"email_address\":\"%s\",\"status\":\"%s\","
                      "\"last_changed\":\"%s\"}",
                      i ? "," : "", hex, email, STATUS_NAME[g_db.status[i]], iso);
    }
    sl_buf_putc(&b, ']');
    pthread_rwlock_unlock(&g_db.lock);
    enum MHD_Result rc = respond_buf(c, 200, "application/json", &b, NULL);
    sl_buf_free(&b);
    return rc;
}

static void stats_json(sl_buf *b)
{
    static const unsigned always[] = {200, 400, 401, 403, 404, 429, 500};
    char s1[64], s2[64];
    pthread_rwlock_rdlock(&g_db.lock);
    uint32_t n = g_db.n;
    unsigned long touched = g_db.touched;
    long churn = g_db.churn;
    pthread_rwlock_unlock(&g_db.lock);
    pthread_mutex_lock(&g_st.mu);
    sl_buf_printf(b,
                  "{\"requests\":%lu,\"members_requests\":%lu,\"peak_connections\":%ld,"
                  "\"current_connections\":%ld,\"tcp_connections\":%ld,"
                  "\"peak_tcp_connections\":%ld,\"members\":%" PRIu32
                  ",\"touched\":%lu,\"churn_per_request\":%ld,\"status\":",
                  g_st.requests, g_st.members_requests, g_st.api_peak, g_st.api_open, g_st.tcp_open,
                  g_st.tcp_peak, n, touched, churn);
    fk_status_json(b, g_st.status, 600, always, sizeof(always) / sizeof(always[0]));
    sl_buf_puts(b, ",\"request_log\":[");
    for (size_t j = 0; j < g_st.n_log; j++) {
        const struct logent *e = &g_st.log[j];
        sl_buf_puts(b, j ? ",{" : "{");
        if (e->offset >= 0) {
            sl_buf_printf(b, "\"offset\":%ld,", e->offset);
        } else {
            sl_buf_puts(b, "\"offset\":null,");
        }
        if (e->count >= 0) {
            sl_buf_printf(b, "\"count\":%ld,", e->count);
        } else {
            sl_buf_puts(b, "\"count\":null,");
        }
        if (e->has_since) {
            iso_ms_of(e->since_ms, s1);
        }
        if (e->has_before) {
            iso_ms_of(e->before_ms, s2);
        }
        sl_buf_printf(b, "\"since\":%s%s%s,\"before\":%s%s%s,", e->has_since ? "\"" : "",
                      e->has_since ? s1 : "null", e->has_since ? "\"" : "",
                      e->has_before ? "\"" : "", e->has_before ? s2 : "null",
                      e->has_before ? "\"" : "");
        if (e->sort) {
            sl_buf_printf(b, "\"sort_field\":\"%s\",\"sort_dir\":\"%s\",", SORT_NAME[e->sort],
                          e->desc ? "DESC" : "ASC");
        }
        sl_buf_printf(b,
                      "\"status\":%u,\"total_items\":%" PRIu32 ",\"returned\":%" PRIu32
                      ",\"churned\":%" PRIu32 "}",
                      (unsigned)e->status, e->total, e->returned, e->churned);
    }
    sl_buf_printf(b, "],\"request_log_dropped\":%lu}", g_st.log_dropped);
    pthread_mutex_unlock(&g_st.mu);
}

static void reset_stats(void)
{
    pthread_mutex_lock(&g_st.mu);
    g_st.requests = g_st.members_requests = 0;
    memset(g_st.status, 0, sizeof(g_st.status));
    g_st.api_peak = g_st.api_open;
    g_st.tcp_peak = g_st.tcp_open;
    g_st.n_log = 0;
    g_st.log_dropped = 0;
    pthread_mutex_unlock(&g_st.mu);
}

/* --- Dispatch --------------------------------------------------------------- */

struct mreq {
    enum route route;
    int over;
};

static enum route route_of(const char *url)
{
    static const struct {
        const char *path;
        enum route r;
    } ctl[] = {{"/_touch", R_TOUCH},  {"/_add", R_ADD},     {"/_churn", R_CHURN},
               {"/_members", R_DUMP}, {"/_stats", R_STATS}, {"/_reset_stats", R_RESET},
               {"/_reset", R_RESET}};
    if (strncmp(url, "/_", 2) != 0) {
        return R_MEMBERS;
    }
    for (size_t i = 0; i < sizeof(ctl) / sizeof(ctl[0]); i++) {
        if (strcmp(url, ctl[i].path) == 0) {
            return ctl[i].r;
        }
    }
    return R_CTL_NOTFOUND;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct mreq *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r) {
            return MHD_NO;
        }
        r->route = route_of(url);
        if (r->route == R_MEMBERS) {
            r->over = over_limit(c);
        }
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size != 0) {
        *upload_size = 0; /* no endpoint reads a body */
        return MHD_YES;
    }
    if (r->route == R_MEMBERS) {
        return answer_api(c, url, method, r->over);
    }
    t_deadline_ns = 0;
    int is_post = strcmp(method, "POST") == 0, is_get = strcmp(method, "GET") == 0;
    char msg[300];
    switch (r->route) {
    case R_TOUCH:
    case R_ADD:
    case R_CHURN:
    case R_RESET:
        if (!is_post) {
            snprintf(msg, sizeof(msg), "%.100s needs POST", url);
            return fk_respond_message(c, 405, msg);
        }
        break;
    case R_DUMP:
    case R_STATS:
        if (!is_get) {
            snprintf(msg, sizeof(msg), "%.100s needs GET", url);
            return fk_respond_message(c, 405, msg);
        }
        break;
    default:
        snprintf(msg, sizeof(msg),
                 "no control endpoint %.100s (have /_touch /_add /_churn /_members /_stats "
                 "/_reset_stats)",
                 url);
        return fk_respond_message(c, 404, msg);
    }
    switch (r->route) {
    case R_TOUCH:
        return ctl_touch(c);
    case R_ADD:
        return ctl_add(c);
    case R_CHURN:
        return ctl_churn(c);
    case R_DUMP:
        return ctl_dump(c);
    case R_RESET:
        reset_stats();
        /* fall through */
    default: {
        sl_buf b;
        sl_buf_init(&b, (size_t)256 * 1024 * 1024);
        stats_json(&b);
        enum MHD_Result rc = respond_buf(c, 200, "application/json", &b, NULL);
        sl_buf_free(&b);
        return rc;
    }
    }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    free(*con_cls);
    *con_cls = NULL;
}

static void on_stop(void)
{
    g_stopping = 1;
}

/* OFFSET[:STATUS[:TIMES]] (with_status) or OFFSET[:TIMES]. */
static void parse_fault(const char *opt, const char *v, enum fault_kind kind)
{
    if (g_opt.n_faults >= MAX_FAULTS) {
        fk_die_usage(PROG, USAGE, "at most %d fault options", MAX_FAULTS);
    }
    struct fault f = {.kind = kind, .status = 500};
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", v);
    char *parts[3] = {0};
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ":", &save); t && n < 3;
         t = strtok_r(NULL, ":", &save)) {
        parts[n++] = t;
    }
    int max_parts = kind == F_STATUS ? 3 : 2;
    int bad = n == 0 || n > max_parts || strchr(v, '\0')[-1] == ':' ||
              fk_parse_long(parts[0], 0, LONG_MAX, &f.offset) != 0;
    if (!bad && kind == F_STATUS && n >= 2) {
        bad = fk_parse_long(parts[1], 100, 599, &f.status) != 0;
    }
    if (!bad && n == max_parts) {
        bad = fk_parse_long(parts[n - 1], 1, LONG_MAX, &f.times) != 0;
    }
    if (bad) {
        fk_die_usage(PROG, USAGE, "%s: expected %s, got '%s'", opt,
                     kind == F_STATUS ? "OFFSET[:STATUS[:TIMES]]" : "OFFSET[:TIMES]", v);
    }
    g_opt.faults[g_opt.n_faults++] = f;
}

int main(int argc, char **argv)
{
    long port = 0;
    const char *port_file = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--overload-403") == 0) {
            g_opt.overload_403 = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            printf("usage: %s %s\n", PROG, USAGE);
            return 0;
        }
        if (i + 1 >= argc) {
            fk_die_usage(PROG, USAGE, "%s needs a value (or is unknown)", a);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--port") == 0) {
            if (fk_parse_long(v, 0, 65535, &port) != 0) {
                fk_die_usage(PROG, USAGE, "--port: expected 0..65535, got '%s'", v);
            }
        } else if (strcmp(a, "--port-file") == 0) {
            port_file = v;
        } else if (strcmp(a, "--api-key") == 0) {
            if (!*v) {
                fk_die_usage(PROG, USAGE, "--api-key must not be empty");
            }
            g_opt.api_key = v;
        } else if (strcmp(a, "--list-id") == 0) {
            size_t l = strlen(v);
            if (l == 0 || l > 100 ||
                strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                          "0123456789_-") != l) {
                fk_die_usage(PROG, USAGE, "--list-id: expected 1-100 of [A-Za-z0-9_-], got '%s'",
                             v);
            }
            g_opt.list_id = v;
        } else if (strcmp(a, "--members") == 0) {
            if (fk_parse_long(v, 0, MAX_MEMBERS, &g_opt.members) != 0) {
                fk_die_usage(PROG, USAGE, "--members: expected 0..%ld, got '%s'", MAX_MEMBERS, v);
            }
        } else if (strcmp(a, "--latency-ms") == 0) {
            if (fk_parse_long(v, 0, 600000, &g_opt.latency_ms) != 0) {
                fk_die_usage(PROG, USAGE, "--latency-ms: expected 0..600000, got '%s'", v);
            }
        } else if (strcmp(a, "--max-connections") == 0) {
            if (fk_parse_long(v, 1, 1000, &g_opt.max_conn) != 0) {
                fk_die_usage(PROG, USAGE, "--max-connections: expected 1..1000, got '%s'", v);
            }
        } else if (strcmp(a, "--retry-after-429") == 0) {
            if (fk_parse_long(v, 0, LONG_MAX, &g_opt.retry_after_429) != 0) {
                fk_die_usage(PROG, USAGE, "--retry-after-429: expected a count, got '%s'", v);
            }
        } else if (strcmp(a, "--fail-offset") == 0) {
            parse_fault(a, v, F_STATUS);
        } else if (strcmp(a, "--non-json-offset") == 0) {
            parse_fault(a, v, F_NON_JSON);
        } else if (strcmp(a, "--missing-members-offset") == 0) {
            parse_fault(a, v, F_MISSING);
        } else if (strcmp(a, "--hang-offset") == 0) {
            parse_fault(a, v, F_HANG);
        } else {
            fk_die_usage(PROG, USAGE, "unknown option %s", a);
        }
    }
    if (!g_opt.api_key) {
        fk_die_usage(PROG, USAGE, "--api-key is required");
    }
    if (generate((uint32_t)g_opt.members) != 0) {
        fprintf(stderr, PROG ": out of memory generating %ld members\n", g_opt.members);
        return 1;
    }
    int rc = fk_serve_notify(PROG, port, port_file, on_request, on_completed, on_connection,
                             on_stop, stats_json);
    free(g_db.md5);
    free(g_db.lc);
    free(g_db.opt);
    free(g_db.status);
    free(g_db.pos_lc);
    free(g_db.olc);
    free(g_db.olc_key);
    free(g_db.oopt);
    free(g_st.log);
    return rc;
}
