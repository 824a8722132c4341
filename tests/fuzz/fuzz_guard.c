/* libFuzzer harness: the download guard (sluice/guard.h).
 *
 * The bytes are a URL checked against a guard holding "*.example.com" and
 * "127.0.0.1". Checked, beyond not crashing:
 *   - an allowed URL names a normalised host that the guard matches, the
 *     way it says (exact or wildcard), with plain http only for an exact
 *     entry, and a port in 0..65535;
 *   - a refusal is SL_ERR_INPUT with a one-line message (no control bytes:
 *     the URL came from outside and goes to logs);
 *   - credentials never reach the message: the same URL with a password in
 *     its userinfo, or a signature in its query, is refused or allowed alike
 *     and the secret is not in the message.
 * The bytes also feed sl_guard_match (as a host) and sl_addr_classify /
 * sl_guard_check_peer (as raw IPv4/IPv6 addresses). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "sluice/guard.h"
#include "sluice/log.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_guard: invariant failed: %s (%s:%d)\n", #cond, __FILE__,         \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MARK "Zq9SECRETzQ9"

static sl_guard *guard;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    sl_log_level = SL_LOG_ERROR;
    guard = sl_guard_new("allow_hosts");
    CHECK(guard != NULL);
    sl_error err;
    sl_error_clear(&err);
    CHECK(sl_guard_add(guard, "*.example.com, 127.0.0.1", &err) == 0);
    CHECK(sl_guard_count(guard) == 2);
    return 0;
}

static void check_message(const sl_error *err)
{
    CHECK(err->code == SL_ERR_INPUT);
    CHECK(strncmp(err->msg, "download refused: ", 18) == 0);
    for (const char *c = err->msg; *c; c++) {
        CHECK((unsigned char)*c >= 0x20 && *c != 0x7f);
    }
}

/* Check url; returns the result. */
static int check_url(const char *url, sl_guard_target *t)
{
    sl_error err;
    sl_error_clear(&err);
    int rc = sl_guard_check_url(guard, url, t, &err);
    if (rc != 0) {
        check_message(&err);
        CHECK(t->host[0] == '\0' && t->port == 0 && t->exact == 0);
        return rc;
    }
    CHECK(t->host[0] != '\0');
    /* curl accepts port 0 in a URL (the connection then fails): harmless */
    CHECK(t->port >= 0 && t->port <= 65535);
    int m = sl_guard_match(guard, t->host, t->port);
    CHECK(m == (t->exact ? 2 : 1));
    /* the normalised host is a fixed point */
    char again[SL_GUARD_HOST_MAX];
    snprintf(again, sizeof(again), "%s", t->host);
    CHECK(sl_guard_match(guard, again, t->port) == m);
    if (t->exact) {
        CHECK(strcmp(t->host, "127.0.0.1") == 0);
    } else {
        size_t hl = strlen(t->host);
        CHECK(hl > 12 && strcmp(t->host + hl - 12, ".example.com") == 0);
        CHECK(strncasecmp(url, "https://", 8) == 0);
    }
    return 0;
}

/* A URL made of the input plus a secret must never show the secret. */
static void check_secret_hidden(const char *url)
{
    sl_guard_target t;
    sl_error err;
    sl_error_clear(&err);
    if (sl_guard_check_url(guard, url, &t, &err) != 0) {
        check_message(&err);
        CHECK(strstr(err.msg, MARK) == NULL);
    }
}

static void check_addresses(const uint8_t *data, size_t size, const sl_guard_target *t)
{
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    char why[512];
    memset(&a4, 0, sizeof(a4));
    memset(&a6, 0, sizeof(a6));
    a4.sin_family = AF_INET;
    a6.sin6_family = AF_INET6;
    memcpy(&a4.sin_addr, data, size < 4 ? size : 4);
    memcpy(&a6.sin6_addr, data, size < 16 ? size : 16);
    sl_addr_class c4 = sl_addr_classify((const struct sockaddr *)&a4, sizeof(a4));
    sl_addr_class c6 = sl_addr_classify((const struct sockaddr *)&a6, sizeof(a6));
    CHECK(c4 <= SL_ADDR_RESERVED && c6 <= SL_ADDR_RESERVED);
    CHECK(strcmp(sl_addr_class_name(c4), "?") != 0);
    CHECK(strcmp(sl_addr_class_name(c6), "?") != 0);
    /* an IPv4 address is judged alike in its IPv4-mapped IPv6 form */
    struct sockaddr_in6 m6;
    memset(&m6, 0, sizeof(m6));
    m6.sin6_family = AF_INET6;
    m6.sin6_addr.s6_addr[10] = 0xff;
    m6.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&m6.sin6_addr.s6_addr[12], &a4.sin_addr, 4);
    CHECK(sl_addr_classify((const struct sockaddr *)&m6, sizeof(m6)) == c4);
    /* too short an address is never public */
    CHECK(sl_addr_classify((const struct sockaddr *)&a4, sizeof(a4) - 1) == SL_ADDR_RESERVED);

    int p4 = sl_guard_check_peer(t, (const struct sockaddr *)&a4, sizeof(a4), why, sizeof(why));
    CHECK(p4 == 0 || p4 == SL_ERR_INPUT);
    CHECK(p4 == 0 ? why[0] == '\0' : why[0] != '\0');
    CHECK(p4 != 0 || c4 == SL_ADDR_PUBLIC || t->exact);
    int p6 = sl_guard_check_peer(t, (const struct sockaddr *)&a6, sizeof(a6), why, sizeof(why));
    CHECK(p6 != 0 || c6 == SL_ADDR_PUBLIC || t->exact);
    CHECK(p6 == 0 || why[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* URLs are C strings; 8 KB is far beyond any real one */
    if (size > 8192) {
        return 0;
    }
    const size_t extra = 64;
    char *url = malloc(size + 1);
    char *with = malloc(size + extra);
    CHECK(url && with);
    memcpy(url, data, size);
    url[size] = '\0';

    sl_guard_target t;
    check_url(url, &t);

    /* the same URL with a password and with a query signature */
    if (!strstr(url, MARK)) {
        /* userinfo only exists after a scheme (letters, digits, + - .) */
        const char *sep = strstr(url, "://");
        int scheme = sep && sep > url;
        for (const char *q = url; scheme && q < sep; q++) {
            scheme = (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
                     (*q >= '0' && *q <= '9') || *q == '+' || *q == '-' || *q == '.';
        }
        if (scheme) {
            size_t pre = (size_t)(sep + 3 - url);
            snprintf(with, size + extra, "%.*suser:" MARK "@%s", (int)pre, url, sep + 3);
            check_secret_hidden(with);
        }
        snprintf(with, size + extra, "%s?X-Amz-Signature=" MARK, url);
        check_secret_hidden(with);
        snprintf(with, size + extra, "%s#" MARK, url);
        check_secret_hidden(with);
    }

    /* the raw bytes as a host name */
    int m = sl_guard_match(guard, url, 443);
    CHECK(m >= 0 && m <= 2);

    sl_guard_target none;
    memset(&none, 0, sizeof(none));
    check_addresses(data, size, &none);
    check_addresses(data, size, &t);

    free(with);
    free(url);
    return 0;
}
