/* Value parsers shared by config validation and the option accessors. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/internal.h"

/* Upper bounds that keep every result far from int64 overflow. */
#define DURATION_MAX_MS 1e13 /* ~317 years */
#define SIZE_MAX_BYTES 4.0e18

int cfg_parse_int(const char *s, int64_t *out)
{
    if (!s || !*s || isspace((unsigned char)*s)) {
        return -1;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0') {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

int cfg_parse_float(const char *s, double *out)
{
    if (!s || !*s) {
        return -1;
    }
    /* strtod also takes "inf", "nan" and hex floats: not config numbers */
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p) && !strchr("+-.eE", *p)) {
            return -1;
        }
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end != '\0' || !isfinite(v)) {
        return -1;
    }
    *out = v;
    return 0;
}

/* Unsigned decimal with optional fraction ("12", "1.5", ".5"); *end after it. */
static int parse_unsigned(const char *s, double *out, const char **end)
{
    const char *p = s;
    int digits = 0;
    while (isdigit((unsigned char)*p)) {
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            p++;
            digits++;
        }
    }
    if (!digits || p - s > 40) {
        return -1;
    }
    char tmp[48];
    memcpy(tmp, s, (size_t)(p - s));
    tmp[p - s] = '\0';
    *out = strtod(tmp, NULL);
    *end = p;
    return 0;
}

typedef struct unit {
    const char *name;
    double factor;
} unit;

/* Milliseconds per unit of time. */
static const unit time_units[] = {
    {"ms", 1},         {"s", 1000},        {"sec", 1000},      {"secs", 1000},
    {"second", 1000},  {"seconds", 1000},  {"m", 60000},       {"min", 60000},
    {"mins", 60000},   {"minute", 60000},  {"minutes", 60000}, {"h", 3600000},
    {"hr", 3600000},   {"hour", 3600000},  {"hours", 3600000}, {"d", 86400000},
    {"day", 86400000}, {"days", 86400000}, {NULL, 0},
};

static const unit size_units[] = {
    {"b", 1.0},
    {"k", 1024.0},
    {"kb", 1024.0},
    {"kib", 1024.0},
    {"m", 1048576.0},
    {"mb", 1048576.0},
    {"mib", 1048576.0},
    {"g", 1073741824.0},
    {"gb", 1073741824.0},
    {"gib", 1073741824.0},
    {"t", 1099511627776.0},
    {"tb", 1099511627776.0},
    {"tib", 1099511627776.0},
    {NULL, 0},
};

static int find_unit(const unit *units, const char *s, double *factor)
{
    for (const unit *u = units; u->name; u++) {
        if (strcasecmp(u->name, s) == 0) {
            *factor = u->factor;
            return 0;
        }
    }
    return -1;
}

/* Number + optional time unit in ms; bare numbers are seconds. */
static int parse_time_ms(const char *s, double *ms, int number_optional)
{
    double v = 1.0;
    const char *p = s;
    if (!isdigit((unsigned char)*p) && *p != '.') {
        if (!number_optional) {
            return -1;
        }
    } else if (parse_unsigned(s, &v, &p) < 0) {
        return -1;
    }
    while (*p == ' ') {
        p++;
    }
    double factor = 1000.0;
    if (*p && find_unit(time_units, p, &factor) < 0) {
        return -1;
    }
    if (p == s && !*p) {
        return -1;
    }
    *ms = v * factor;
    return *ms <= DURATION_MAX_MS ? 0 : -1;
}

int sl_parse_duration_ms(const char *s, int64_t *out)
{
    double ms;
    if (!s || parse_time_ms(s, &ms, 0) < 0) {
        return -1;
    }
    *out = (int64_t)llround(ms);
    return 0;
}

int sl_parse_size(const char *s, int64_t *out)
{
    if (!s) {
        return -1;
    }
    double v;
    const char *p;
    if (parse_unsigned(s, &v, &p) < 0) {
        return -1;
    }
    while (*p == ' ') {
        p++;
    }
    double factor = 1.0;
    if (*p && find_unit(size_units, p, &factor) < 0) {
        return -1;
    }
    double bytes = v * factor;
    if (bytes > SIZE_MAX_BYTES) {
        return -1;
    }
    *out = (int64_t)llround(bytes);
    return 0;
}

int sl_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1", NULL};
    static const char *const no[] = {"false", "no", "off", "0", NULL};
    if (!s) {
        return -1;
    }
    for (size_t i = 0; yes[i]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

int sl_parse_rate(const char *s, double *per_sec, double *burst)
{
    if (!s) {
        return -1;
    }
    if (strcasecmp(s, "unlimited") == 0) {
        *per_sec = 0;
        *burst = 0;
        return 0;
    }
    double count;
    const char *p;
    if (parse_unsigned(s, &count, &p) < 0) {
        return -1;
    }
    while (*p == ' ') {
        p++;
    }
    double window_ms = 1000.0;
    if (*p == '/') {
        p++;
        while (*p == ' ') {
            p++;
        }
        /* "10/s", "3000/3s", "5/1m"; "3000/3" is per 3 seconds */
        if (!*p || parse_time_ms(p, &window_ms, 1) < 0 || window_ms <= 0) {
            return -1;
        }
    } else if (*p) {
        return -1;
    }
    if (count == 0) {
        if (p != s && strchr(s, '/')) {
            return -1; /* "0/s" is a typo, not a way to say unlimited */
        }
        *per_sec = 0; /* a bare 0: no limit */
        *burst = 0;
        return 0;
    }
    *per_sec = count * 1000.0 / window_ms;
    /* the whole window's count may go at once; a token bucket needs >= 1 */
    *burst = count < 1.0 ? 1.0 : count;
    return 0;
}
