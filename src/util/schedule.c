/* Schedules: `every <duration>` and 5-field cron lines with a time zone.
 *
 * Local time is computed with a private reader of the system's TZif files
 * (RFC 8536, versions 1-4, including the POSIX TZ footer used for instants
 * after the last transition), never with libc's process-wide time zone:
 * setenv("TZ") + tzset() would race with every other thread that formats a
 * time. See schedule.h for the DST rules.
 *
 * Cron matching works on "wall" seconds: local date and time counted as if
 * they were UTC. The next fire time after t is the smallest instant among
 * the matching wall times mapped to instants, which is found by walking
 * matching wall times from the earliest one that could map after t until
 * none can map before the best found (a zone's offsets are bounded). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/schedule.h"

#define MIN_T 0
#define MAX_T INT64_C(253402300799) /* 9999-12-31T23:59:59Z */
#define TZ_FILE_MAX (1024 * 1024)
#define ZONE_NAME_MAX 128
#define EVERY_MAX_S (366 * 86400)

typedef struct rule_date {
    char kind; /* 'M' month.week.day, 'J' julian 1..365 (no Feb 29), 'n' 0..365 */
    int m, w, d;
    int32_t time; /* seconds after local midnight; may be negative or > 24h */
} rule_date;

typedef struct posix_tz {
    int32_t std_off, dst_off; /* seconds east of UTC */
    int has_dst;
    rule_date start, end;
} posix_tz;

typedef struct tz_data {
    int64_t *trans; /* transition instants, ascending */
    uint8_t *idx;   /* type in effect from trans[i] */
    int32_t *offs;  /* UTC offset of each type */
    size_t ntrans, ntypes;
    int has_footer;
    posix_tz footer;
    int32_t off_min, off_max;
} tz_data;

struct sl_schedule {
    char *text;
    char zone[ZONE_NAME_MAX];
    int utc; /* no zone file: wall time == UTC */
    int every;
    int64_t interval;
    uint64_t minute; /* bit n: minute n */
    uint32_t hour, dom, month;
    uint32_t dow; /* bit 0..6, Sunday = 0 */
    int dom_restricted, dow_restricted;
    int wild_time; /* minute or hour field starts with `*` */
    tz_data tz;
};

/* ---- calendar (proleptic Gregorian; Howard Hinnant's algorithms) ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int64_t y, int m)
{
    static const int n[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : n[m - 1];
}

static int weekday(int64_t days)
{
    int64_t r = (days + 4) % 7; /* 1970-01-01 was a Thursday */
    return (int)(r < 0 ? r + 7 : r);
}

/* ---- TZif reader ---- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

/* POSIX TZ pieces. Each returns the position after what it read, or NULL. */
static const char *ptz_name(const char *p)
{
    if (*p == '<') {
        const char *q = strchr(p, '>');
        return q && q - p >= 4 ? q + 1 : NULL;
    }
    const char *q = p;
    while (isalpha((unsigned char)*q)) {
        q++;
    }
    return q - p >= 3 ? q : NULL;
}

static const char *ptz_hms(const char *p, int maxh, int32_t *out)
{
    int sign = 1;
    if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
    }
    if (!isdigit((unsigned char)*p)) {
        return NULL;
    }
    long h = strtol(p, (char **)&p, 10), mi = 0, s = 0;
    if (*p == ':') {
        mi = strtol(p + 1, (char **)&p, 10);
        if (*p == ':') {
            s = strtol(p + 1, (char **)&p, 10);
        }
    }
    if (h > maxh || mi > 59 || s > 59 || mi < 0 || s < 0) {
        return NULL;
    }
    *out = (int32_t)(sign * (h * 3600 + mi * 60 + s));
    return p;
}

static const char *ptz_date(const char *p, rule_date *r)
{
    char *e;
    if (*p == 'M') {
        r->kind = 'M';
        r->m = (int)strtol(p + 1, &e, 10);
        if (*e != '.') {
            return NULL;
        }
        r->w = (int)strtol(e + 1, &e, 10);
        if (*e != '.') {
            return NULL;
        }
        r->d = (int)strtol(e + 1, &e, 10);
        if (r->m < 1 || r->m > 12 || r->w < 1 || r->w > 5 || r->d < 0 || r->d > 6) {
            return NULL;
        }
    } else if (*p == 'J') {
        r->kind = 'J';
        r->d = (int)strtol(p + 1, &e, 10);
        if (r->d < 1 || r->d > 365) {
            return NULL;
        }
    } else if (isdigit((unsigned char)*p)) {
        r->kind = 'n';
        r->d = (int)strtol(p, &e, 10);
        if (r->d > 365) {
            return NULL;
        }
    } else {
        return NULL;
    }
    p = e;
    r->time = 7200;
    if (*p == '/') {
        p = ptz_hms(p + 1, 167, &r->time);
    }
    return p;
}

static int parse_posix_tz(const char *p, posix_tz *tz)
{
    int32_t off;
    memset(tz, 0, sizeof(*tz));
    if (!(p = ptz_name(p)) || !(p = ptz_hms(p, 24, &off))) {
        return -1;
    }
    tz->std_off = -off;
    if (!*p) {
        return 0;
    }
    if (!(p = ptz_name(p))) {
        return -1;
    }
    tz->has_dst = 1;
    tz->dst_off = tz->std_off + 3600;
    if (*p && *p != ',') {
        if (!(p = ptz_hms(p, 24, &off))) {
            return -1;
        }
        tz->dst_off = -off;
    }
    if (!*p) {
        /* POSIX's default rule (US, 2007) */
        p = ",M3.2.0,M11.1.0";
    }
    if (*p != ',' || !(p = ptz_date(p + 1, &tz->start)) || *p != ',' ||
        !(p = ptz_date(p + 1, &tz->end)) || *p) {
        return -1;
    }
    return 0;
}

/* The instant a rule date happens in year y, given the offset in effect
 * just before it. */
static int64_t rule_instant(int64_t y, const rule_date *r, int32_t off_before)
{
    int64_t day;
    if (r->kind == 'M') {
        int64_t first = days_from_civil(y, r->m, 1);
        int dd = (r->d - weekday(first) + 7) % 7 + (r->w - 1) * 7;
        if (dd >= month_days(y, r->m)) {
            dd -= 7;
        }
        day = first + dd;
    } else if (r->kind == 'J') {
        day = days_from_civil(y, 1, 1) + r->d - 1 + (is_leap(y) && r->d >= 60);
    } else {
        day = days_from_civil(y, 1, 1) + r->d;
    }
    return day * 86400 + r->time - off_before;
}

/* Offset at t per the footer rules, and the next change after t. */
static void footer_lookup(const posix_tz *f, int64_t t, int32_t *off, int64_t *next)
{
    *off = f->std_off;
    *next = INT64_MAX;
    if (!f->has_dst) {
        return;
    }
    int64_t y;
    int m, d;
    civil_from_days(floor_div(t + f->std_off, 86400), &y, &m, &d);
    int64_t at[6];
    int32_t to[6];
    int n = 0;
    for (int64_t yy = y - 1; yy <= y + 1; yy++) {
        at[n] = rule_instant(yy, &f->start, f->std_off);
        to[n++] = f->dst_off;
        at[n] = rule_instant(yy, &f->end, f->dst_off);
        to[n++] = f->std_off;
    }
    /* insertion sort of six */
    for (int i = 1; i < n; i++) {
        for (int j = i; j > 0 && at[j] < at[j - 1]; j--) {
            int64_t ta = at[j];
            at[j] = at[j - 1];
            at[j - 1] = ta;
            int32_t tt = to[j];
            to[j] = to[j - 1];
            to[j - 1] = tt;
        }
    }
    for (int i = 0; i < n; i++) {
        if (at[i] <= t) {
            *off = to[i];
        } else {
            *next = at[i];
            break;
        }
    }
}

/* UTC offset at t and the next instant it may change (INT64_MAX: never). */
static void tz_lookup(const tz_data *tz, int64_t t, int32_t *off, int64_t *next)
{
    if (tz->ntrans == 0 || t >= tz->trans[tz->ntrans - 1]) {
        if (tz->has_footer) {
            footer_lookup(&tz->footer, t, off, next);
        } else {
            *off = tz->ntrans ? tz->offs[tz->idx[tz->ntrans - 1]] : tz->offs[0];
            *next = INT64_MAX;
        }
        return;
    }
    if (t < tz->trans[0]) {
        *off = tz->offs[0];
        *next = tz->trans[0];
        return;
    }
    size_t lo = 0, hi = tz->ntrans - 1; /* trans[lo] <= t < trans[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tz->trans[mid] <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    *off = tz->offs[tz->idx[lo]];
    *next = tz->trans[hi];
}

static void tz_free(tz_data *tz)
{
    free(tz->trans);
    free(tz->idx);
    free(tz->offs);
    memset(tz, 0, sizeof(*tz));
}

static int parse_tzif(const unsigned char *b, size_t n, tz_data *tz, const char *path,
                      sl_error *err)
{
    const char *bad = "is not a valid TZif time zone file";
    if (n < 44 || memcmp(b, "TZif", 4) != 0) {
        return sl_error_set(err, SL_ERR_CONFIG, "%s %s", path, bad);
    }
    int version = b[4] ? b[4] - '0' : 1;
    size_t pos = 0, tsize = 4;
    for (int pass = 0; pass < 2; pass++) {
        if (pos + 44 > n) {
            return sl_error_set(err, SL_ERR_CONFIG, "%s %s (truncated)", path, bad);
        }
        const unsigned char *h = b + pos;
        uint32_t isut = be32(h + 20), isstd = be32(h + 24), leap = be32(h + 28),
                 timecnt = be32(h + 32), typecnt = be32(h + 36), charcnt = be32(h + 40);
        size_t data = (size_t)timecnt * tsize + timecnt + (size_t)typecnt * 6 + charcnt +
                      (size_t)leap * (tsize + 4) + isstd + isut;
        if (timecnt > 100000 || typecnt > 256 || typecnt == 0 || pos + 44 + data > n) {
            return sl_error_set(err, SL_ERR_CONFIG, "%s %s (bad counts)", path, bad);
        }
        if (pass == 0 && version >= 2) {
            pos += 44 + data; /* skip the 32-bit block */
            tsize = 8;
            continue;
        }
        if (leap) {
            return sl_error_set(err, SL_ERR_CONFIG,
                                "%s has leap seconds (a right/ zone), which schedules do not "
                                "support; use the zone's name without right/",
                                path);
        }
        const unsigned char *p = h + 44;
        tz->trans = malloc(sizeof(int64_t) * (timecnt ? timecnt : 1));
        tz->idx = malloc(timecnt ? timecnt : 1);
        tz->offs = malloc(sizeof(int32_t) * typecnt);
        if (!tz->trans || !tz->idx || !tz->offs) {
            return sl_error_set(err, SL_ERR_NOMEM, "out of memory reading %s", path);
        }
        tz->ntrans = timecnt;
        tz->ntypes = typecnt;
        for (uint32_t i = 0; i < timecnt; i++, p += tsize) {
            tz->trans[i] = tsize == 8 ? be64(p) : (int64_t)(int32_t)be32(p);
            if (i && tz->trans[i] <= tz->trans[i - 1]) {
                return sl_error_set(err, SL_ERR_CONFIG, "%s %s (transitions out of order)", path,
                                    bad);
            }
        }
        for (uint32_t i = 0; i < timecnt; i++, p++) {
            if (*p >= typecnt) {
                return sl_error_set(err, SL_ERR_CONFIG, "%s %s (bad type index)", path, bad);
            }
            tz->idx[i] = *p;
        }
        tz->off_min = INT32_MAX;
        tz->off_max = INT32_MIN;
        for (uint32_t i = 0; i < typecnt; i++, p += 6) {
            int32_t o = (int32_t)be32(p);
            if (o < -26 * 3600 || o > 26 * 3600) {
                return sl_error_set(err, SL_ERR_CONFIG, "%s %s (offset out of range)", path, bad);
            }
            tz->offs[i] = o;
            tz->off_min = o < tz->off_min ? o : tz->off_min;
            tz->off_max = o > tz->off_max ? o : tz->off_max;
        }
        pos += 44 + data;
        if (version >= 2 && pos < n && b[pos] == '\n') {
            const unsigned char *nl = memchr(b + pos + 1, '\n', n - pos - 1);
            if (!nl) {
                return sl_error_set(err, SL_ERR_CONFIG, "%s %s (footer)", path, bad);
            }
            size_t flen = (size_t)(nl - (b + pos + 1));
            if (flen > 0) {
                char footer[256];
                if (flen >= sizeof(footer)) {
                    return sl_error_set(err, SL_ERR_CONFIG, "%s %s (footer too long)", path, bad);
                }
                memcpy(footer, b + pos + 1, flen);
                footer[flen] = '\0';
                if (parse_posix_tz(footer, &tz->footer) < 0) {
                    return sl_error_set(err, SL_ERR_CONFIG,
                                        "%s: cannot read its rule for future dates \"%s\"", path,
                                        footer);
                }
                tz->has_footer = 1;
                int32_t a = tz->footer.std_off, c = tz->footer.has_dst ? tz->footer.dst_off : a;
                tz->off_min = a < tz->off_min ? a : tz->off_min;
                tz->off_min = c < tz->off_min ? c : tz->off_min;
                tz->off_max = a > tz->off_max ? a : tz->off_max;
                tz->off_max = c > tz->off_max ? c : tz->off_max;
            }
        }
        return 0;
    }
    return sl_error_set(err, SL_ERR_CONFIG, "%s %s", path, bad);
}

static int zone_name_ok(const char *z)
{
    size_t n = strlen(z);
    if (n == 0 || n >= ZONE_NAME_MAX || z[0] == '/' || z[0] == '.' || strstr(z, "..")) {
        return 0;
    }
    for (const char *p = z; *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("/_+-", *p)) {
            return 0;
        }
    }
    return 1;
}

static int load_zone(const char *name, tz_data *tz, sl_error *err)
{
    const char *expect = "expected an IANA time zone such as Europe/London, America/New_York or "
                         "UTC";
    if (!zone_name_ok(name)) {
        return sl_error_set(err, SL_ERR_CONFIG, "time zone: found \"%.*s\", %s", ZONE_NAME_MAX,
                            name, expect);
    }
    const char *dir = getenv("TZDIR");
    if (!dir || !*dir) {
        dir = "/usr/share/zoneinfo";
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR) {
            return sl_error_set(err, SL_ERR_CONFIG,
                                "time zone: found \"%s\", which is not a zone in %s (%s)", name,
                                dir, expect);
        }
        return sl_error_set(err, SL_ERR_CONFIG, "time zone \"%s\": cannot read %s: %s", name, path,
                            strerror(e));
    }
    unsigned char *buf = malloc(TZ_FILE_MAX);
    size_t n = buf ? fread(buf, 1, TZ_FILE_MAX, f) : 0;
    int rc;
    if (!buf) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    } else if (ferror(f)) {
        rc = sl_error_set(err, SL_ERR_CONFIG, "time zone \"%s\": cannot read %s (a directory?)",
                          name, path);
    } else {
        rc = parse_tzif(buf, n, tz, path, err);
    }
    fclose(f);
    free(buf);
    if (rc < 0) {
        tz_free(tz);
    }
    return rc;
}

/* ---- cron fields ---- */

typedef struct field_def {
    const char *name;
    int lo, hi;
    const char *const *names; /* 3-letter names for lo.. */
    int names_lo;
    const char *expect;
} field_def;

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const field_def fields[5] = {
    {"minute", 0, 59, NULL, 0, "a minute 0-59"},
    {"hour", 0, 23, NULL, 0, "an hour 0-23"},
    {"day-of-month", 1, 31, NULL, 0, "a day 1-31"},
    {"month", 1, 12, month_names, 1, "a month 1-12 or jan-dec"},
    {"day-of-week", 0, 7, dow_names, 0, "a weekday 0-7 or sun-sat (0 and 7 are Sunday)"},
};

static int field_err(sl_error *err, const field_def *f, const char *text, const char *fmt,
                     const char *what)
{
    char problem[160];
    snprintf(problem, sizeof(problem), fmt, what);
    return sl_error_set(err, SL_ERR_CONFIG,
                        "%s field: found \"%s\": %s (expected %s, `*`, a range such as %s, a "
                        "list such as %s, or a step such as */%d)",
                        f->name, text, problem, f->expect,
                        f->names ? (f->lo ? "jan-mar" : "mon-fri") : (f->lo ? "1-15" : "9-17"),
                        f->names ? (f->lo ? "jan,jul" : "mon,wed,fri") : (f->lo ? "1,15" : "0,30"),
                        f->hi >= 30 ? 15 : 2);
}

/* One value (number or name) in s[0..n). */
static int field_value(const field_def *f, const char *s, size_t n, int *out)
{
    if (n == 0 || n > 9) {
        return -1;
    }
    if (isdigit((unsigned char)s[0])) {
        int v = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)s[i])) {
                return -1;
            }
            v = v * 10 + (s[i] - '0');
        }
        *out = v;
        return v >= f->lo && v <= f->hi ? 0 : -2;
    }
    for (int i = 0; f->names && f->names[i]; i++) {
        if (n == 3 && strncasecmp(s, f->names[i], 3) == 0) {
            *out = f->names_lo + i;
            return 0;
        }
    }
    return -1;
}

static int parse_field(const field_def *f, const char *text, uint64_t *bits, sl_error *err)
{
    *bits = 0;
    const char *p = text;
    while (1) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char item[64];
        if (n == 0) {
            return field_err(err, f, text, "%san empty list item", "");
        }
        snprintf(item, sizeof(item), "%.*s", (int)(n < 60 ? n : 60), p);
        const char *slash = memchr(p, '/', n);
        size_t bn = slash ? (size_t)(slash - p) : n;
        int lo, hi, step = 1;
        if (slash) {
            size_t sn = n - bn - 1;
            int v = 0;
            if (sn == 0 || sn > 4) {
                return field_err(err, f, text, "bad step in \"%s\"", item);
            }
            for (size_t i = 0; i < sn; i++) {
                if (!isdigit((unsigned char)slash[1 + i])) {
                    return field_err(err, f, text, "bad step in \"%s\"", item);
                }
                v = v * 10 + (slash[1 + i] - '0');
            }
            if (v < 1 || v > f->hi - f->lo + 1) {
                return field_err(err, f, text, "step out of range in \"%s\"", item);
            }
            step = v;
        }
        const char *dash = memchr(p, '-', bn);
        if (bn == 1 && p[0] == '*') {
            lo = f->lo;
            hi = f->hi == 7 ? 6 : f->hi;
        } else if (dash) {
            int r1 = field_value(f, p, (size_t)(dash - p), &lo);
            int r2 = field_value(f, dash + 1, bn - (size_t)(dash - p) - 1, &hi);
            if (r1 == -2 || r2 == -2) {
                return field_err(err, f, text, "value out of range in \"%s\"", item);
            }
            if (r1 < 0 || r2 < 0) {
                return field_err(err, f, text, "cannot read the range \"%s\"", item);
            }
            if (f->hi == 7 && hi == 0) {
                hi = 7; /* fri-sun */
            }
            if (lo > hi) {
                return field_err(err, f, text, "the range \"%s\" runs backwards", item);
            }
        } else {
            int r = field_value(f, p, bn, &lo);
            if (r == -2) {
                return field_err(err, f, text, "value out of range in \"%s\"", item);
            }
            if (r < 0) {
                return field_err(err, f, text, "cannot read \"%s\"", item);
            }
            hi = slash ? f->hi : lo; /* a/n: from a to the end */
        }
        for (int v = lo; v <= hi; v += step) {
            *bits |= UINT64_C(1) << (f->hi == 7 && v == 7 ? 0 : v);
        }
        if (!end) {
            break;
        }
        p = end + 1;
    }
    return 0;
}

static uint64_t full_mask(int lo, int hi)
{
    uint64_t m = 0;
    for (int v = lo; v <= hi; v++) {
        m |= UINT64_C(1) << v;
    }
    return m;
}

/* `every 90m`, `every 1h30m`: whole seconds, units s m h d. */
static int parse_every(sl_schedule *s, const char *d, sl_error *err)
{
    const char *expect = "expected a duration such as 30s, 90m, 6h, 1d or 1h30m after `every`";
    if (!d) {
        return sl_error_set(err, SL_ERR_CONFIG, "`every` needs a duration (%s)", expect);
    }
    int64_t total = 0;
    const char *p = d;
    while (*p) {
        if (!isdigit((unsigned char)*p)) {
            return sl_error_set(err, SL_ERR_CONFIG, "found \"%s\" after `every` (%s)", d, expect);
        }
        int64_t v = 0;
        for (; isdigit((unsigned char)*p); p++) {
            v = v > EVERY_MAX_S ? v : v * 10 + (*p - '0'); /* saturates */
        }
        int64_t unit;
        switch (tolower((unsigned char)*p)) {
        case 's':
            unit = 1;
            break;
        case 'm':
            unit = 60;
            break;
        case 'h':
            unit = 3600;
            break;
        case 'd':
            unit = 86400;
            break;
        default:
            return sl_error_set(err, SL_ERR_CONFIG,
                                "found \"%s\" after `every`: each number needs a unit s, m, h or "
                                "d (%s)",
                                d, expect);
        }
        p++;
        if (v > EVERY_MAX_S || (total += v * unit) > EVERY_MAX_S) {
            return sl_error_set(err, SL_ERR_CONFIG,
                                "`every %s` is longer than 366d (use a cron line for rarer runs)",
                                d);
        }
    }
    if (total < 1) {
        return sl_error_set(err, SL_ERR_CONFIG, "`every %s` must be at least 1s (%s)", d, expect);
    }
    s->every = 1;
    s->interval = total;
    return 0;
}

/* A cron line with a restricted day-of-month and no weekday alternative
 * must name a day that exists in one of its months. */
static int check_fires(const sl_schedule *s, sl_error *err, const char *domf, const char *monf)
{
    if (!s->dom_restricted || s->dow_restricted) {
        return 0;
    }
    for (int m = 1; m <= 12; m++) {
        if (!(s->month >> m & 1)) {
            continue;
        }
        for (int d = 1; d <= month_days(2000, m); d++) {
            if (s->dom >> d & 1) {
                return 0;
            }
        }
    }
    return sl_error_set(err, SL_ERR_CONFIG,
                        "day-of-month field \"%s\" names no day that exists in month field "
                        "\"%s\", so the schedule never fires (expected a day the months have)",
                        domf, monf);
}

sl_schedule *sl_schedule_parse(const char *text, sl_error *err)
{
    static const struct {
        const char *name, *line;
    } shorthands[] = {
        {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
    };
    char *tok[8];
    char line[64];
    size_t ntok = 0;
    char *copy = NULL;
    sl_schedule *s = calloc(1, sizeof(*s));
    if (!s || !text || !(s->text = strdup(text)) || !(copy = strdup(text))) {
        if (s && text) {
            sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        } else {
            sl_error_set(err, SL_ERR_CONFIG, "empty schedule");
        }
        goto fail;
    }
    snprintf(s->zone, sizeof(s->zone), "UTC");
    s->utc = 1;
    for (char *save = NULL, *t = strtok_r(copy, " \t\r\n", &save); t;
         t = strtok_r(NULL, " \t\r\n", &save)) {
        if (ntok == sizeof(tok) / sizeof(tok[0])) {
            sl_error_set(err, SL_ERR_CONFIG,
                         "found more than %zu words (expected `every <duration>`, or 5 cron fields "
                         "(minute hour day-of-month month day-of-week) and an optional time zone)",
                         ntok);
            goto fail;
        }
        tok[ntok++] = t;
    }
    if (ntok == 0) {
        sl_error_set(err, SL_ERR_CONFIG,
                     "empty schedule (expected `every <duration>` such as every 90m, or a cron "
                     "line such as 0 6 * * mon-fri)");
        goto fail;
    }
    const char *zone = NULL;
    size_t first = 0;
    if (strncmp(tok[0], "TZ=", 3) == 0 || strncmp(tok[0], "CRON_TZ=", 8) == 0) {
        zone = strchr(tok[0], '=') + 1;
        first = 1;
    }
    char **w = tok + first;
    size_t nw = ntok - first;
    if (nw >= 1 && strcasecmp(w[0], "every") == 0) {
        if (zone || nw > 2) {
            sl_error_set(err, SL_ERR_CONFIG,
                         "`every` takes one duration and no time zone (found \"%s\"): it counts "
                         "real time from the Unix epoch; use a cron line such as `0 6 * * * "
                         "Europe/London` for local times",
                         text);
            goto fail;
        }
        if (parse_every(s, nw == 2 ? w[1] : NULL, err) < 0) {
            goto fail;
        }
        free(copy);
        return s;
    }
    char *fieldv[5];
    char *shortcopy = NULL;
    if (nw >= 1 && w[0][0] == '@') {
        size_t k;
        for (k = 0; k < sizeof(shorthands) / sizeof(shorthands[0]); k++) {
            if (strcasecmp(w[0], shorthands[k].name) == 0) {
                break;
            }
        }
        if (k == sizeof(shorthands) / sizeof(shorthands[0])) {
            sl_error_set(err, SL_ERR_CONFIG,
                         "found \"%s\" (expected one of @yearly, @annually, @monthly, @weekly, "
                         "@daily, @midnight, @hourly)",
                         w[0]);
            goto fail;
        }
        if (nw > 2 || (nw == 2 && zone)) {
            sl_error_set(err, SL_ERR_CONFIG,
                         "found %zu words after %s (expected at most a time zone)", nw - 1, w[0]);
            goto fail;
        }
        if (nw == 2) {
            zone = w[1];
        }
        snprintf(line, sizeof(line), "%s", shorthands[k].line);
        shortcopy = line;
        char *save = NULL;
        fieldv[0] = strtok_r(shortcopy, " ", &save);
        for (int i = 1; i < 5; i++) {
            fieldv[i] = strtok_r(NULL, " ", &save);
        }
    } else {
        if (nw < 5 || nw > 6 || (nw == 6 && zone)) {
            sl_error_set(err, SL_ERR_CONFIG,
                         "found %zu word%s (expected `every <duration>` such as every 90m, or 5 "
                         "cron fields (minute hour day-of-month month day-of-week) and an "
                         "optional time zone, such as 0 6 * * mon-fri Europe/London)",
                         nw, nw == 1 ? "" : "s");
            goto fail;
        }
        if (nw == 6) {
            zone = w[5];
            if (isdigit((unsigned char)zone[0]) || zone[0] == '*') {
                sl_error_set(err, SL_ERR_CONFIG,
                             "the 6th word \"%s\" is not a time zone: cron lines with a seconds "
                             "or year field are not supported (expected 5 fields and an optional "
                             "time zone such as Europe/London)",
                             zone);
                goto fail;
            }
        }
        for (int i = 0; i < 5; i++) {
            fieldv[i] = w[i];
        }
    }
    uint64_t bits[5];
    for (int i = 0; i < 5; i++) {
        if (parse_field(&fields[i], fieldv[i], &bits[i], err) < 0) {
            goto fail;
        }
    }
    s->minute = bits[0];
    s->hour = (uint32_t)bits[1];
    s->dom = (uint32_t)bits[2];
    s->month = (uint32_t)bits[3];
    s->dow = (uint32_t)bits[4];
    s->dom_restricted = s->dom != full_mask(1, 31);
    s->dow_restricted = s->dow != full_mask(0, 6);
    s->wild_time = fieldv[0][0] == '*' || fieldv[1][0] == '*';
    if (check_fires(s, err, fieldv[2], fieldv[3]) < 0) {
        goto fail;
    }
    if (zone && strcmp(zone, "UTC") != 0) {
        if (load_zone(zone, &s->tz, err) < 0) {
            goto fail;
        }
        snprintf(s->zone, sizeof(s->zone), "%s", zone);
        s->utc = 0;
    }
    free(copy);
    return s;
fail:
    free(copy);
    sl_schedule_free(s);
    return NULL;
}

void sl_schedule_free(sl_schedule *s)
{
    if (!s) {
        return;
    }
    tz_free(&s->tz);
    free(s->text);
    free(s);
}

const char *sl_schedule_zone(const sl_schedule *s)
{
    return s->zone;
}

int32_t sl_schedule_utc_offset(const sl_schedule *s, int64_t t)
{
    if (s->utc) {
        return 0;
    }
    int32_t off;
    int64_t next;
    tz_lookup(&s->tz, t, &off, &next);
    return off;
}

char *sl_schedule_format(const sl_schedule *s, int64_t t, char *out, size_t n)
{
    int32_t off = sl_schedule_utc_offset(s, t);
    int64_t w = t + off, y;
    int m, d;
    int64_t days = floor_div(w, 86400), secs = w - days * 86400;
    civil_from_days(days, &y, &m, &d);
    int32_t a = off < 0 ? -off : off;
    snprintf(out, n, "%04d-%02d-%02d %02d:%02d:%02d %c%02d:%02d", (int)y, m, d, (int)(secs / 3600),
             (int)(secs % 3600 / 60), (int)(secs % 60), off < 0 ? '-' : '+', (int)(a / 3600),
             (int)(a % 3600 / 60));
    return out;
}

/* ---- next fire time ---- */

static int day_matches(const sl_schedule *s, int64_t days, int d)
{
    int dom_ok = (s->dom >> d) & 1;
    int dow_ok = (s->dow >> weekday(days)) & 1;
    if (s->dom_restricted && s->dow_restricted) {
        return dom_ok || dow_ok;
    }
    return dom_ok && dow_ok;
}

/* The first matching wall time >= w (rounded up to a minute), or -1 if none
 * up to limit. */
static int64_t cron_next_wall(const sl_schedule *s, int64_t w, int64_t limit)
{
    w = floor_div(w + 59, 60) * 60;
    while (w <= limit) {
        int64_t days = floor_div(w, 86400), secs = w - days * 86400, y;
        int m, d;
        civil_from_days(days, &y, &m, &d);
        if (!((s->month >> m) & 1)) {
            w = (m == 12 ? days_from_civil(y + 1, 1, 1) : days_from_civil(y, m + 1, 1)) * 86400;
            continue;
        }
        if (!day_matches(s, days, d)) {
            w = (days + 1) * 86400;
            continue;
        }
        int h = (int)(secs / 3600), mi = (int)(secs % 3600 / 60);
        if (!((s->hour >> h) & 1)) {
            w = days * 86400 + (h + 1) * 3600;
            continue;
        }
        if ((s->minute >> mi) & 1) {
            return w;
        }
        uint64_t later = s->minute & ~((UINT64_C(2) << mi) - 1);
        if (later) {
            return days * 86400 + h * 3600 + __builtin_ctzll(later) * 60;
        }
        w = days * 86400 + (h + 1) * 3600;
    }
    return -1;
}

/* The instants whose local time is wall time w (0, 1 or 2 of them,
 * ascending); when there are none, *gap_at is the instant of the change
 * that skipped w. */
static int wall_instants(const tz_data *tz, int64_t w, int64_t out[2], int64_t *gap_at)
{
    int64_t lo = w - tz->off_max, hi = w - tz->off_min, x = lo;
    int n = 0;
    int32_t prev_off = 0;
    int have_prev = 0;
    *gap_at = -1;
    for (int guard = 0; guard < 64; guard++) {
        int32_t off;
        int64_t next;
        tz_lookup(tz, x, &off, &next);
        if (have_prev && x + prev_off <= w && w < x + off) {
            *gap_at = x; /* the wall clock jumped over w at x */
        }
        int64_t i = w - off;
        if (i >= x && i < next && n < 2) {
            out[n++] = i;
        }
        if (next > hi) {
            break;
        }
        prev_off = off;
        have_prev = 1;
        x = next;
    }
    return n;
}

int64_t sl_schedule_next_after(const sl_schedule *s, int64_t t)
{
    if (!s || t < MIN_T || t >= MAX_T) {
        return -1;
    }
    if (s->every) {
        int64_t k = t / s->interval + 1;
        return k * s->interval <= MAX_T ? k * s->interval : -1;
    }
    if (s->utc) {
        return cron_next_wall(s, t + 1, MAX_T);
    }
    const tz_data *tz = &s->tz;
    int64_t best = -1;
    int64_t w = t + 1 + tz->off_min;
    while (1) {
        int64_t limit = best < 0 ? MAX_T + tz->off_max : best + tz->off_max;
        w = cron_next_wall(s, w, limit);
        if (w < 0) {
            break;
        }
        int64_t in[2], gap_at;
        int n = wall_instants(tz, w, in, &gap_at);
        if (s->wild_time) {
            for (int k = 0; k < n; k++) {
                if (in[k] > t && (best < 0 || in[k] < best)) {
                    best = in[k];
                }
            }
        } else {
            int64_t c = n ? in[0] : gap_at;
            if (c > t && (best < 0 || c < best)) {
                best = c;
            }
        }
        w += 60;
    }
    return best <= MAX_T ? best : -1;
}
