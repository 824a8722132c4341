/* Logging and secret redaction. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/buf.h"
#include "sluice/json.h"
#include "sluice/log.h"

int sl_log_level = SL_LOG_INFO;
static int log_json;

/* A long-running `serve` may register secrets per job; redaction is linear
 * in their count, so crossing this many is reported once. */
#define MAX_SECRETS 4096

static pthread_mutex_t secrets_mu = PTHREAD_MUTEX_INITIALIZER;
static char **secrets;
static size_t nsecrets;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void sl_log_set_json(int on)
{
    log_json = on;
}

void sl_secret_register(const char *value)
{
    if (!value || strlen(value) < 4) {
        return;
    }
    pthread_mutex_lock(&secrets_mu);
    for (size_t i = 0; i < nsecrets; i++) {
        if (strcmp(secrets[i], value) == 0) {
            pthread_mutex_unlock(&secrets_mu);
            return;
        }
    }
    if (nsecrets == MAX_SECRETS) {
        /* still registered (redaction never stops), but worth knowing:
         * every log line pays for each one */
        fprintf(stderr, "sluice: more than %d distinct secret values registered\n", MAX_SECRETS);
    }
    char **n = realloc(secrets, (nsecrets + 1) * sizeof(*n));
    char *copy = strdup(value);
    if (n && copy) {
        secrets = n;
        secrets[nsecrets++] = copy;
    } else {
        free(copy);
        if (n) {
            secrets = n;
        }
    }
    pthread_mutex_unlock(&secrets_mu);
}

void sl_secrets_clear(void)
{
    pthread_mutex_lock(&secrets_mu);
    for (size_t i = 0; i < nsecrets; i++) {
        free(secrets[i]);
    }
    free(secrets);
    secrets = NULL;
    nsecrets = 0;
    pthread_mutex_unlock(&secrets_mu);
}

char *sl_redact(char *s, size_t cap)
{
    static const char mark[] = "[redacted]";
    const size_t mlen = sizeof(mark) - 1;
    if (!s || cap == 0) {
        return s;
    }
    pthread_mutex_lock(&secrets_mu);
    for (size_t i = 0; i < nsecrets; i++) {
        size_t slen = strlen(secrets[i]);
        char *p = s;
        while ((p = strstr(p, secrets[i])) != NULL) {
            size_t tail = strlen(p + slen);
            size_t pos = (size_t)(p - s);
            /* the mark may be longer than the secret: truncate the tail to fit */
            if (pos + mlen + tail + 1 > cap) {
                tail = cap > pos + mlen + 1 ? cap - pos - mlen - 1 : 0;
            }
            if (pos + mlen + 1 > cap) {
                s[pos] = '\0';
                break;
            }
            memmove(p + mlen, p + slen, tail);
            p[mlen + tail] = '\0';
            memcpy(p, mark, mlen);
            p += mlen;
        }
    }
    pthread_mutex_unlock(&secrets_mu);
    return s;
}

void sl_log_vwrite(int level, const char *prefix, const char *fmt, va_list ap)
{
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    sl_redact(msg, sizeof(msg));

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(ts.tv_nsec / 1000000) % 1000);
    const char *lv = level_names[level < 0 ? 0 : level > 3 ? 3 : level];

    if (log_json) {
        sl_buf b = {0};
        sl_jw w;
        sl_jw_init(&w, &b);
        sl_jw_obj_open(&w);
        sl_jw_keyz(&w, "ts");
        sl_jw_str(&w, when, strlen(when));
        sl_jw_keyz(&w, "level");
        sl_jw_str(&w, lv, strlen(lv));
        if (prefix) {
            sl_jw_keyz(&w, "component");
            sl_jw_str(&w, prefix, strlen(prefix));
        }
        sl_jw_keyz(&w, "msg");
        sl_jw_str(&w, msg, strlen(msg));
        sl_jw_obj_close(&w);
        sl_buf_putc(&b, '\n');
        fputs(sl_buf_cstr(&b), stderr);
        sl_buf_free(&b);
    } else if (prefix) {
        fprintf(stderr, "%s %-5s [%s] %s\n", when, lv, prefix, msg);
    } else {
        fprintf(stderr, "%s %-5s %s\n", when, lv, msg);
    }
}

void sl_log_write(int level, const char *prefix, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl_log_vwrite(level, prefix, fmt, ap);
    va_end(ap);
}
