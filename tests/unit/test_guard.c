/* Download guard: host matching, address classification, URL rules, and the
 * guard enforced end to end by the HTTP client (streams and requests), the
 * reader and the csv source against a libmicrohttpd server on 127.0.0.1. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include <setjmp.h>
#include <cmocka.h>

#include "config/config.h"
#include "core/ctx.h"
#include "sluice/guard.h"
#include "sluice/http.h"
#include "sluice/plugin.h"
#include "sluice/reader.h"

extern const sl_source_plugin sl_source_csv;

/* ------------------------------------------------------------------------ */
/* Server                                                                    */

#define DATA_SIZE ((size_t)100000)

static unsigned char DATA[DATA_SIZE];
static const char USERS_CSV[] = "id,email\n1,a@x.org\n2,b@x.org\n";

static struct {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    int hits_data, hits_redirect, hits_any;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER};

static ssize_t chunked_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    if (pos >= DATA_SIZE) {
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    size_t n = DATA_SIZE - (size_t)pos;
    if (n > max) {
        n = max;
    }
    memcpy(buf, DATA + pos, n);
    return (ssize_t)n;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)method;
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    struct MHD_Response *r = NULL;
    unsigned status = 200;
    pthread_mutex_lock(&S.mu);
    S.hits_any++;
    if (strcmp(url, "/data.bin") == 0) {
        S.hits_data++;
    } else if (strcmp(url, "/redirect") == 0) {
        S.hits_redirect++;
    }
    pthread_mutex_unlock(&S.mu);
    if (strcmp(url, "/data.bin") == 0) {
        r = MHD_create_response_from_buffer(DATA_SIZE, DATA, MHD_RESPMEM_PERSISTENT);
    } else if (strcmp(url, "/chunked.bin") == 0) {
        /* no Content-Length: the limit can only be seen while reading */
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, chunked_cb, NULL, NULL);
    } else if (strcmp(url, "/users.csv") == 0) {
        r = MHD_create_response_from_buffer(strlen(USERS_CSV), (void *)USERS_CSV,
                                            MHD_RESPMEM_PERSISTENT);
    } else if (strcmp(url, "/redirect") == 0) {
        static const char moved[] = "moved";
        char loc[128];
        snprintf(loc, sizeof(loc), "http://127.0.0.1:%d/data.bin", S.port);
        r = MHD_create_response_from_buffer(strlen(moved), (void *)moved, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Location", loc);
        status = 302;
    } else {
        static const char nf[] = "no such route";
        r = MHD_create_response_from_buffer(strlen(nf), (void *)nf, MHD_RESPMEM_PERSISTENT);
        status = 404;
    }
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static int hits_data(void)
{
    pthread_mutex_lock(&S.mu);
    int n = S.hits_data;
    pthread_mutex_unlock(&S.mu);
    return n;
}

static int hits_any(void)
{
    pthread_mutex_lock(&S.mu);
    int n = S.hits_any;
    pthread_mutex_unlock(&S.mu);
    return n;
}

static int group_setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < DATA_SIZE; i++) {
        DATA[i] = (unsigned char)((i * 131u) ^ (i >> 7));
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    S.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
                           NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, &sa,
                           MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!S.d) {
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(S.d, MHD_DAEMON_INFO_BIND_PORT);
    S.port = di ? di->port : 0;
    /* a proxy from the environment would change what the client connects to */
    unsetenv("http_proxy");
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("ALL_PROXY");
    unsetenv("all_proxy");
    return S.port ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    MHD_stop_daemon(S.d);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static sl_guard *guard_of(const char *list)
{
    sl_guard *g = sl_guard_new("allow_hosts");
    assert_non_null(g);
    sl_error err;
    sl_error_clear(&err);
    if (sl_guard_add(g, list, &err) != 0) {
        fail_msg("sl_guard_add(%s): %s", list, err.msg);
    }
    return g;
}

static sl_http_opts guarded_opts(const sl_guard *g)
{
    sl_http_opts o;
    sl_http_opts_default(&o);
    o.guard = g;
    o.connect_timeout_ms = 2000;
    o.timeout_ms = 5000;
    o.max_attempts = 3;
    o.backoff_base_ms = 10;
    o.backoff_max_ms = 50;
    o.log_prefix = "test:guard";
    return o;
}

static void local_url(char *out, size_t cap, const char *scheme, const char *host, const char *path)
{
    snprintf(out, cap, "%s://%s:%d%s", scheme, host, S.port, path);
}

/* Build a sockaddr from text: an IPv4 or IPv6 address. */
static socklen_t sa_of(const char *ip, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        return sizeof(*in);
    }
    if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        return sizeof(*in6);
    }
    fail_msg("not an address: %s", ip);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Host matching                                                             */

static void test_host_match(void **state)
{
    (void)state;
    sl_guard *g = guard_of("*.amazonaws.com, files.example.org ,127.0.0.1 [::1]\n"
                           "*.example.com:8443,Exact.Example.NET.");
    assert_int_equal(sl_guard_count(g), 6);
    assert_string_equal(sl_guard_describe(g), "*.amazonaws.com, files.example.org, 127.0.0.1, "
                                              "[::1], *.example.com:8443, exact.example.net");
    static const struct {
        const char *host;
        int port;
        int want;
    } cases[] = {
        /* wildcards: any depth of subdomain, never the domain itself */
        {"s3.amazonaws.com", 443, 1},
        {"bucket.s3.eu-west-1.amazonaws.com", 443, 1},
        {"amazonaws.com", 443, 0},
        {".amazonaws.com", 443, 0},
        {"evilamazonaws.com", 443, 0},
        {"amazonaws.com.evil.org", 443, 0},
        {"s3.amazonaws.com.evil.org", 443, 0},
        {"a..amazonaws.com", 443, 0},
        /* case and one trailing dot do not matter */
        {"S3.AmazonAWS.COM", 443, 1},
        {"s3.amazonaws.com.", 443, 1},
        {"s3.amazonaws.com..", 443, 0},
        /* exact names: any port, not subdomains */
        {"files.example.org", 80, 2},
        {"FILES.Example.org.", 1234, 2},
        {"x.files.example.org", 443, 0},
        {"example.org", 443, 0},
        {"exact.example.net", 443, 2},
        {"EXACT.example.net.", 443, 2},
        /* IP literals: exact only; IPv6 needs brackets, any spelling */
        {"127.0.0.1", 8080, 2},
        {"127.0.0.2", 8080, 0},
        {"[::1]", 1, 2},
        {"[0:0:0:0:0:0:0:1]", 1, 2},
        {"[::2]", 1, 0},
        {"::1", 1, 0},
        {"[::1", 1, 0},
        /* an entry with a port matches that port only */
        {"a.example.com", 8443, 1},
        {"a.example.com", 443, 0},
        {"example.com", 8443, 0},
        {"", 443, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = sl_guard_match(g, cases[i].host, cases[i].port);
        if (got != cases[i].want) {
            fail_msg("%s:%d: got %d, want %d", cases[i].host, cases[i].port, got, cases[i].want);
        }
    }
    /* the exact entry wins over a wildcard that also matches */
    sl_guard *both = guard_of("*.example.org files.example.org");
    assert_int_equal(sl_guard_match(both, "files.example.org", 443), 2);
    assert_int_equal(sl_guard_match(both, "other.example.org", 443), 1);
    assert_int_equal(sl_guard_match(NULL, "files.example.org", 443), 0);
    sl_guard_free(both);
    sl_guard_free(g);
}

static void test_entry_errors(void **state)
{
    (void)state;
    static const struct {
        const char *entry;
        const char *why;
    } bad[] = {
        {"https://files.example.org", "without scheme"},
        {"files.example.org/exports", "without scheme"},
        {"user@files.example.org", "without scheme"},
        {"*", "every host"},
        {"a.*.example.com", "whole first label"},
        {"*example.com", "whole first label"},
        {"::1", "brackets"},
        {"[::1", "both brackets"},
        {"[::1]x", "after the IPv6 address"},
        {"[zz::1]", "not a valid IPv6"},
        {"files.example.org:0", "1 to 65535"},
        {"files.example.org:99999", "1 to 65535"},
        {"files.example.org:", "1 to 65535"},
        {"*.[::1]", "not to IP addresses"},
        {"a..b", "empty label"},
        {"bad!host", "letters, digits"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sl_guard *g = sl_guard_new(NULL);
        assert_non_null(g);
        sl_error err;
        sl_error_clear(&err);
        assert_int_equal(sl_guard_add(g, bad[i].entry, &err), SL_ERR_CONFIG);
        char want[128];
        snprintf(want, sizeof(want), "allow_hosts entry '%s' is not a host: ", bad[i].entry);
        if (strncmp(err.msg, want, strlen(want)) != 0 || !strstr(err.msg, bad[i].why)) {
            fail_msg("%s: %s", bad[i].entry, err.msg);
        }
        assert_int_equal(sl_guard_count(g), 0);
        sl_guard_free(g);
    }
    /* separators only: nothing added, not an error */
    sl_guard *g = sl_guard_new("hosts");
    sl_error err;
    assert_int_equal(sl_guard_add(g, " , ,\t", &err), 0);
    assert_int_equal(sl_guard_add(g, NULL, &err), 0);
    assert_int_equal(sl_guard_count(g), 0);
    /* entries before a bad one stay; the label names the list */
    assert_int_equal(sl_guard_add(g, "a.example.org, https://b.example.org", &err), SL_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "hosts entry 'https://b.example.org'"));
    assert_int_equal(sl_guard_count(g), 1);
    /* hard maximum on entries */
    char big[64];
    int rc = 0;
    for (int i = 0; i < SL_GUARD_MAX_ENTRIES + 1 && rc == 0; i++) {
        snprintf(big, sizeof(big), "h%d.example.org", i);
        rc = sl_guard_add(g, big, &err);
    }
    assert_int_equal(rc, SL_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "more than 256 entries"));
    assert_int_equal(sl_guard_count(g), SL_GUARD_MAX_ENTRIES);
    sl_guard_free(g);
    sl_guard_free(NULL);
}

/* ------------------------------------------------------------------------ */
/* Addresses                                                                 */

static void test_addr_classify(void **state)
{
    (void)state;
    static const struct {
        const char *ip;
        sl_addr_class want;
    } cases[] = {
        {"127.0.0.1", SL_ADDR_LOOPBACK},
        {"127.255.255.254", SL_ADDR_LOOPBACK},
        {"10.0.0.1", SL_ADDR_PRIVATE},
        {"10.255.255.255", SL_ADDR_PRIVATE},
        {"172.16.0.1", SL_ADDR_PRIVATE},
        {"172.31.255.255", SL_ADDR_PRIVATE},
        {"172.15.255.255", SL_ADDR_PUBLIC},
        {"172.32.0.0", SL_ADDR_PUBLIC},
        {"192.168.0.1", SL_ADDR_PRIVATE},
        {"192.169.0.1", SL_ADDR_PUBLIC},
        {"169.254.169.254", SL_ADDR_LINK_LOCAL},
        {"169.254.0.1", SL_ADDR_LINK_LOCAL},
        {"169.253.255.255", SL_ADDR_PUBLIC},
        {"0.0.0.0", SL_ADDR_UNSPECIFIED},
        {"0.1.2.3", SL_ADDR_UNSPECIFIED},
        {"100.64.0.1", SL_ADDR_SHARED},
        {"100.127.255.255", SL_ADDR_SHARED},
        {"100.63.255.255", SL_ADDR_PUBLIC},
        {"100.128.0.0", SL_ADDR_PUBLIC},
        {"224.0.0.1", SL_ADDR_MULTICAST},
        {"239.255.255.255", SL_ADDR_MULTICAST},
        {"255.255.255.255", SL_ADDR_BROADCAST},
        {"240.0.0.1", SL_ADDR_RESERVED},
        {"192.0.2.10", SL_ADDR_RESERVED},
        {"198.18.0.1", SL_ADDR_RESERVED},
        {"8.8.8.8", SL_ADDR_PUBLIC},
        {"52.216.8.10", SL_ADDR_PUBLIC},
        {"::1", SL_ADDR_LOOPBACK},
        {"::", SL_ADDR_UNSPECIFIED},
        {"fc00::1", SL_ADDR_PRIVATE},
        {"fdff:ffff::1", SL_ADDR_PRIVATE},
        {"fe80::1", SL_ADDR_LINK_LOCAL},
        {"febf::1", SL_ADDR_LINK_LOCAL},
        {"fec0::1", SL_ADDR_PRIVATE},
        {"ff02::1", SL_ADDR_MULTICAST},
        /* IPv6 forms carrying an IPv4 address are judged by it */
        {"::ffff:127.0.0.1", SL_ADDR_LOOPBACK},
        {"::ffff:169.254.169.254", SL_ADDR_LINK_LOCAL},
        {"::ffff:10.1.2.3", SL_ADDR_PRIVATE},
        {"::ffff:0.0.0.0", SL_ADDR_UNSPECIFIED},
        {"::ffff:8.8.8.8", SL_ADDR_PUBLIC},
        {"::127.0.0.1", SL_ADDR_LOOPBACK},
        {"64:ff9b::7f00:1", SL_ADDR_LOOPBACK},
        {"64:ff9b::808:808", SL_ADDR_PUBLIC},
        {"2002:a9fe:a9fe::1", SL_ADDR_LINK_LOCAL},
        {"2002:808:808::1", SL_ADDR_PUBLIC},
        {"2001:db8::1", SL_ADDR_RESERVED},
        {"2001::1", SL_ADDR_RESERVED},
        {"100::1", SL_ADDR_RESERVED},
        {"2600:1f18::1", SL_ADDR_PUBLIC},
        {"2a05:d018::1", SL_ADDR_PUBLIC},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sockaddr_storage ss;
        socklen_t len = sa_of(cases[i].ip, &ss);
        sl_addr_class got = sl_addr_classify((struct sockaddr *)&ss, len);
        if (got != cases[i].want) {
            fail_msg("%s: got %s, want %s", cases[i].ip, sl_addr_class_name(got),
                     sl_addr_class_name(cases[i].want));
        }
    }
    /* other families and short lengths are never public */
    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    assert_int_equal(sl_addr_classify((struct sockaddr *)&un, sizeof(un)), SL_ADDR_RESERVED);
    struct sockaddr_storage ss;
    sa_of("8.8.8.8", &ss);
    assert_int_equal(sl_addr_classify((struct sockaddr *)&ss, 4), SL_ADDR_RESERVED);
    assert_int_equal(sl_addr_classify(NULL, 0), SL_ADDR_RESERVED);
    assert_string_equal(sl_addr_class_name(SL_ADDR_LINK_LOCAL), "link-local");
}

static void test_check_peer(void **state)
{
    (void)state;
    sl_guard_target wild = {.host = "evil.example", .port = 443, .exact = 0};
    sl_guard_target exact = {.host = "127.0.0.1", .port = 8080, .exact = 1};
    struct sockaddr_storage ss;
    char why[256];
    socklen_t len = sa_of("127.0.0.1", &ss);
    assert_int_equal(sl_guard_check_peer(&wild, (struct sockaddr *)&ss, len, why, sizeof(why)),
                     SL_ERR_INPUT);
    assert_string_equal(why, "refused to connect to 127.0.0.1 (loopback) for host evil.example: "
                             "not an allowed address (only hosts listed exactly may use "
                             "non-public addresses)");
    assert_int_equal(sl_guard_check_peer(&exact, (struct sockaddr *)&ss, len, why, sizeof(why)), 0);
    assert_string_equal(why, "");

    len = sa_of("169.254.169.254", &ss);
    assert_int_equal(sl_guard_check_peer(&wild, (struct sockaddr *)&ss, len, why, sizeof(why)),
                     SL_ERR_INPUT);
    assert_non_null(strstr(why, "169.254.169.254 (link-local, the cloud metadata service)"));

    len = sa_of("::ffff:10.0.0.5", &ss);
    assert_int_equal(sl_guard_check_peer(&wild, (struct sockaddr *)&ss, len, why, sizeof(why)),
                     SL_ERR_INPUT);
    assert_non_null(strstr(why, "::ffff:10.0.0.5 (private)"));

    len = sa_of("fd00:ec2::254", &ss);
    assert_int_equal(sl_guard_check_peer(&wild, (struct sockaddr *)&ss, len, NULL, 0),
                     SL_ERR_INPUT);

    len = sa_of("52.216.8.10", &ss);
    assert_int_equal(sl_guard_check_peer(&wild, (struct sockaddr *)&ss, len, why, sizeof(why)), 0);
    len = sa_of("2600:1f18::1", &ss);
    assert_int_equal(sl_guard_check_peer(&wild, (struct sockaddr *)&ss, len, why, sizeof(why)), 0);
}

/* ------------------------------------------------------------------------ */
/* URL rules                                                                 */

static void test_url_rules(void **state)
{
    (void)state;
    sl_guard *g = guard_of("*.amazonaws.com, 127.0.0.1, files.example.org");
    sl_guard_target t;
    sl_error err;

    /* allowed: https on a wildcard, with the query (credentials) ignored */
    sl_error_clear(&err);
    assert_int_equal(
        sl_guard_check_url(g, "https://bucket.s3.amazonaws.com/x.csv?X-Amz-Signature=SECRET", &t,
                           &err),
        0);
    assert_string_equal(t.host, "bucket.s3.amazonaws.com");
    assert_int_equal(t.port, 443);
    assert_int_equal(t.exact, 0);
    assert_int_equal(sl_guard_check_url(g, "HTTPS://Bucket.S3.AmazonAWS.com./x.csv", &t, &err), 0);
    assert_string_equal(t.host, "bucket.s3.amazonaws.com");
    /* exact entries: plain http too, any port */
    assert_int_equal(sl_guard_check_url(g, "http://files.example.org/x.csv", &t, &err), 0);
    assert_int_equal(t.exact, 1);
    assert_int_equal(t.port, 80);
    assert_int_equal(sl_guard_check_url(g, "https://127.0.0.1:8443/x.csv", &t, &err), 0);
    assert_int_equal(t.port, 8443);

    static const struct {
        const char *url;
        const char *want; /* the whole message */
    } refused[] = {
        {"https://evil.example/x.csv?sig=SECRET",
         "download refused: https://evil.example/x.csv: host evil.example is not in allow_hosts "
         "(*.amazonaws.com, 127.0.0.1, files.example.org)"},
        {"http://files.amazonaws.com/x.csv",
         "download refused: http://files.amazonaws.com/x.csv: plain http is only allowed for "
         "hosts listed exactly in allow_hosts (files.amazonaws.com matches only a wildcard "
         "entry; use https)"},
        {"file:///etc/passwd", "download refused: file:///etc/passwd: only https URLs are allowed"},
        {"ftp://bucket.s3.amazonaws.com/x.csv",
         "download refused: ftp://bucket.s3.amazonaws.com/x.csv: only https URLs are allowed"},
        {"gopher://127.0.0.1:70/x",
         "download refused: gopher://127.0.0.1:70/x: only https URLs are allowed"},
        {"/etc/passwd", "download refused: /etc/passwd: not a URL (expected https://host/path)"},
        {"bucket.s3.amazonaws.com/x.csv",
         "download refused: bucket.s3.amazonaws.com/x.csv: not a URL (expected "
         "https://host/path)"},
        /* userinfo is not the host, and never shown */
        {"https://bucket.s3.amazonaws.com:pw@evil.example/x.csv",
         "download refused: https://evil.example/x.csv: host evil.example is not in allow_hosts "
         "(*.amazonaws.com, 127.0.0.1, files.example.org)"},
        /* the fragment ends the authority */
        {"https://evil.example#@bucket.s3.amazonaws.com/",
         "download refused: https://evil.example: host evil.example is not in allow_hosts "
         "(*.amazonaws.com, 127.0.0.1, files.example.org)"},
        {"https://amazonaws.com/x.csv",
         "download refused: https://amazonaws.com/x.csv: host amazonaws.com is not in "
         "allow_hosts (*.amazonaws.com, 127.0.0.1, files.example.org)"},
        {"https://[::1]/x.csv",
         "download refused: https://[::1]/x.csv: host [::1] is not in allow_hosts "
         "(*.amazonaws.com, 127.0.0.1, files.example.org)"},
        {"https://[fe80::1%25eth0]/x.csv",
         "download refused: https://[fe80::1%25eth0]/x.csv: IPv6 zone ids are not allowed in "
         "download URLs"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        sl_error_clear(&err);
        memset(&t, 0x5a, sizeof(t));
        int rc = sl_guard_check_url(g, refused[i].url, &t, &err);
        if (rc != SL_ERR_INPUT || strcmp(err.msg, refused[i].want) != 0) {
            fail_msg("%s: rc %d, message:\n  %s\nwant:\n  %s", refused[i].url, rc, err.msg,
                     refused[i].want);
        }
        assert_null(strstr(err.msg, "SECRET"));
        assert_null(strstr(err.msg, "pw"));
        assert_string_equal(t.host, ""); /* cleared on refusal */
    }
    /* malformed URLs are refused with libcurl's reason */
    assert_int_equal(sl_guard_check_url(g, "https://a.amazonaws.com:99999/x.csv", &t, &err),
                     SL_ERR_INPUT);
    /* (the reason in parentheses is libcurl's wording) */
    assert_non_null(
        strstr(err.msg, "download refused: https://a.amazonaws.com:99999/x.csv: malformed URL ("));
    assert_int_equal(sl_guard_check_url(g, "https://a b.amazonaws.com/", &t, &err), SL_ERR_INPUT);
    /* two parsers, one answer: a URL that sluice's parser (sluice/url.h) and
     * libcurl's would read as different hosts, or that either refuses, is
     * refused, whatever the other one thinks */
    const char *ambiguous[] = {
        "http://2130706433/x",                       /* libcurl: 127.0.0.1 */
        "http://127.1/x",                            /* libcurl: 127.0.0.1 */
        "https://x.amazonaws.com\\@127.0.0.1/x.csv", /* which '@'? */
        "https://a:b@c@x.amazonaws.com:99999/",      /* bad port after the last '@' */
        "https://[::1/x",
    };
    for (size_t i = 0; i < sizeof(ambiguous) / sizeof(ambiguous[0]); i++) {
        int rc = sl_guard_check_url(g, ambiguous[i], &t, &err);
        if (rc == 0) {
            fail_msg("%s: allowed as %s", ambiguous[i], t.host);
        }
        assert_non_null(strstr(err.msg, "download refused: "));
    }
    /* a raw '@' in the password: libcurl reads the first '@' as the end of
     * the userinfo and so a host "ss@b.s3...", sluice the last: refused */
    assert_int_equal(sl_guard_check_url(g, "https://u:p@ss@b.s3.amazonaws.com/x", &t, &err),
                     SL_ERR_INPUT);
    assert_null(strstr(err.msg, "p@ss"));
    assert_int_equal(sl_guard_check_url(g, "https://u:p%40ss@b.s3.amazonaws.com/x", &t, &err), 0);
    assert_string_equal(t.host, "b.s3.amazonaws.com");
    /* no guard: nothing is listed, everything refused */
    assert_int_equal(sl_guard_check_url(NULL, "https://bucket.s3.amazonaws.com/x", &t, &err),
                     SL_ERR_INPUT);
    assert_string_equal(err.msg, "download refused: https://bucket.s3.amazonaws.com/x: host "
                                 "bucket.s3.amazonaws.com is not in allow_hosts (no host is "
                                 "listed)");
    sl_guard_free(g);
}

/* ------------------------------------------------------------------------ */
/* End to end through the HTTP client                                        */

static void on_done_count(void *ud, sl_http_req *req, const sl_http_resp *resp)
{
    (void)req;
    (void)resp;
    (*(int *)ud)++;
}

static void test_stream_refusals(void **state)
{
    (void)state;
    char url[256];
    sl_error err;
    int before = hits_any();

    /* the host is not listed */
    sl_guard *g = guard_of("*.example.com");
    sl_http_opts o = guarded_opts(g);
    local_url(url, sizeof(url), "http", "127.0.0.1", "/data.bin?token=SECRET");
    sl_error_clear(&err);
    assert_null(sl_http_stream_open(url, NULL, &o, 0, &err));
    char want[512];
    snprintf(want, sizeof(want),
             "download refused: http://127.0.0.1:%d/data.bin: host 127.0.0.1 is not in "
             "allow_hosts (*.example.com)",
             S.port);
    assert_string_equal(err.msg, want);
    sl_guard_free(g);

    /* only 127.0.0.1 is listed: the name localhost is another host */
    g = guard_of("127.0.0.1");
    o = guarded_opts(g);
    local_url(url, sizeof(url), "http", "localhost", "/data.bin");
    assert_null(sl_http_stream_open(url, NULL, &o, 0, &err));
    assert_non_null(strstr(err.msg, "host localhost is not in allow_hosts (127.0.0.1)"));
    sl_guard_free(g);

    /* a wildcard-matched name that resolves to loopback (libcurl resolves
     * *.localhost to 127.0.0.1 / ::1 itself): the URL passes, the peer
     * address is refused before anything is sent, and not retried */
    g = guard_of("*.localhost");
    o = guarded_opts(g);
    o.backoff_base_ms = 2000;
    o.backoff_max_ms = 2000;
    local_url(url, sizeof(url), "https", "a.localhost", "/data.bin");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sl_error_clear(&err);
    assert_null(sl_http_stream_open(url, NULL, &o, 0, &err));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(err.code, SL_ERR_INPUT);
    snprintf(want, sizeof(want),
             "download refused: https://a.localhost:%d/data.bin: refused to "
             "connect to ",
             S.port);
    if (strncmp(err.msg, want, strlen(want)) != 0 ||
        !strstr(err.msg, "(loopback) for host a.localhost: not an allowed address")) {
        fail_msg("%s", err.msg);
    }
    /* a retry would have waited the 2 s backoff */
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(dt < 1.5);

    /* the request client applies the same check, also without retrying */
    sl_http_req req;
    sl_http_req_init(&req);
    sl_buf_puts(&req.url, url);
    sl_http_resp resp;
    sl_buf store;
    sl_buf_init(&store, 1 << 20);
    assert_int_not_equal(sl_http_do(&o, &req, &resp, &store, &err), 0);
    assert_int_equal(resp.status, 0);
    assert_int_equal(resp.attempts, 1);
    assert_non_null(strstr(resp.error, "(loopback) for host a.localhost: not an allowed address"));
    assert_non_null(strstr(err.msg, "refused to connect to"));
    sl_guard_free(g);

    /* a refused URL is refused at submit, before any connection */
    g = guard_of("*.example.com");
    o = guarded_opts(g);
    sl_http *h = sl_http_new(&o, &err);
    assert_non_null(h);
    sl_buf_reset(&req.url);
    local_url(url, sizeof(url), "http", "127.0.0.1", "/data.bin");
    sl_buf_puts(&req.url, url);
    int called = 0;
    sl_error_clear(&err);
    assert_int_equal(sl_http_submit(h, &req, on_done_count, &called, &err), SL_ERR_INPUT);
    assert_non_null(strstr(err.msg, "host 127.0.0.1 is not in allow_hosts (*.example.com)"));
    assert_int_equal(sl_http_pending(h), 0);
    assert_int_equal(sl_http_run(h, 10), 0);
    assert_int_equal(called, 0);
    sl_error_clear(&err);
    assert_int_equal(sl_http_do(&o, &req, &resp, &store, &err), SL_ERR_INPUT);
    assert_non_null(strstr(err.msg, "host 127.0.0.1 is not in allow_hosts (*.example.com)"));
    sl_http_free(h);
    sl_guard_free(g);

    sl_buf_free(&store);
    sl_http_req_free(&req);
    assert_int_equal(hits_any(), before);
}

static void test_stream_allowed_exact(void **state)
{
    (void)state;
    char url[256];
    sl_error err;
    sl_guard *g = guard_of("127.0.0.1");
    sl_http_opts o = guarded_opts(g);
    local_url(url, sizeof(url), "http", "127.0.0.1", "/data.bin");
    int before = hits_data();
    sl_http_stream *s = sl_http_stream_open(url, NULL, &o, 0, &err);
    if (!s) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(sl_http_stream_size(s), DATA_SIZE);
    unsigned char buf[8192];
    size_t total = 0;
    long n;
    while ((n = sl_http_stream_read(s, buf, sizeof(buf), &err)) > 0) {
        assert_true(total + (size_t)n <= DATA_SIZE);
        assert_memory_equal(buf, DATA + total, (size_t)n);
        total += (size_t)n;
    }
    assert_int_equal(n, 0);
    assert_int_equal(total, DATA_SIZE);
    sl_http_stream_close(s);
    assert_int_equal(hits_data(), before + 1);

    /* requests too; a proxy in the environment is not used under a guard
     * (it would connect on our behalf to an address we never check) */
    setenv("http_proxy", "http://127.0.0.1:1", 1);
    sl_http_req req;
    sl_http_req_init(&req);
    local_url(url, sizeof(url), "http", "127.0.0.1", "/users.csv");
    sl_buf_puts(&req.url, url);
    sl_http_resp resp;
    sl_buf store;
    sl_buf_init(&store, 1 << 20);
    int rc = sl_http_do(&o, &req, &resp, &store, &err);
    int status = resp.status;
    int same = strcmp(resp.body, USERS_CSV) == 0;
    /* control: without a guard the (dead) proxy is used */
    sl_http_opts plain = guarded_opts(NULL);
    plain.max_attempts = 1;
    sl_error perr;
    int prc = sl_http_do(&plain, &req, &resp, &store, &perr);
    unsetenv("http_proxy");
    if (rc != 0) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(status, 200);
    assert_true(same);
    assert_int_not_equal(prc, 0);
    sl_buf_free(&store);
    sl_http_req_free(&req);
    sl_guard_free(g);
}

static void test_redirect_not_followed(void **state)
{
    (void)state;
    char url[256];
    sl_error err;
    sl_guard *g = guard_of("127.0.0.1");
    sl_http_opts o = guarded_opts(g);
    local_url(url, sizeof(url), "http", "127.0.0.1", "/redirect");
    int before = hits_data();
    sl_error_clear(&err);
    assert_null(sl_http_stream_open(url, NULL, &o, 0, &err));
    assert_non_null(strstr(err.msg, "HTTP 302 (moved)"));
    assert_int_equal(hits_data(), before);
    sl_guard_free(g);
}

static void test_max_download(void **state)
{
    (void)state;
    char url[256], shown[256];
    sl_error err;
    sl_guard *g = guard_of("127.0.0.1");
    sl_http_opts o = guarded_opts(g);
    o.max_download = 1000;

    /* announced by Content-Length: refused at open */
    local_url(url, sizeof(url), "http", "127.0.0.1", "/data.bin?sig=SECRET");
    local_url(shown, sizeof(shown), "http", "127.0.0.1", "/data.bin");
    sl_error_clear(&err);
    assert_null(sl_http_stream_open(url, NULL, &o, 0, &err));
    assert_int_equal(err.code, SL_ERR_LIMIT);
    char want[512];
    snprintf(want, sizeof(want),
             "download of %s exceeded max_download (1000 bytes): the server announced 100000 "
             "bytes",
             shown);
    assert_string_equal(err.msg, want);

    /* no Content-Length: at most the limit is delivered, then an error */
    local_url(url, sizeof(url), "http", "127.0.0.1", "/chunked.bin");
    sl_http_stream *s = sl_http_stream_open(url, NULL, &o, 0, &err);
    if (!s) {
        fail_msg("%s", err.msg);
    }
    unsigned char buf[512];
    size_t total = 0;
    long n;
    while ((n = sl_http_stream_read(s, buf, sizeof(buf), &err)) > 0) {
        total += (size_t)n;
    }
    assert_int_equal(n, -1);
    assert_true(total <= 1000);
    assert_int_equal(err.code, SL_ERR_LIMIT);
    snprintf(want, sizeof(want), "download of %s exceeded max_download (1000 bytes)", url);
    assert_string_equal(err.msg, want);
    sl_http_stream_close(s);

    /* exactly at the limit is fine */
    o.max_download = DATA_SIZE;
    s = sl_http_stream_open(url, NULL, &o, 0, &err);
    assert_non_null(s);
    total = 0;
    while ((n = sl_http_stream_read(s, buf, sizeof(buf), &err)) > 0) {
        total += (size_t)n;
    }
    assert_int_equal(n, 0);
    assert_int_equal(total, DATA_SIZE);
    sl_http_stream_close(s);

    /* through the reader the message is not buried under a read error */
    o.max_download = 2000;
    sl_reader_opts ro = {0};
    ro.http = &o;
    ro.compression = SL_COMPRESS_NONE;
    sl_reader *r = sl_reader_open(url, &ro, &err);
    assert_non_null(r);
    while ((n = sl_reader_read(r, buf, sizeof(buf), &err)) > 0) {
    }
    assert_int_equal(n, -1);
    assert_int_equal(err.code, SL_ERR_LIMIT);
    snprintf(want, sizeof(want), "download of %s exceeded max_download (2000 bytes)", url);
    assert_string_equal(err.msg, want);
    sl_reader_close(r);
    sl_guard_free(g);
}

static void test_reader_refuses_local(void **state)
{
    (void)state;
    sl_guard *g = guard_of("*.amazonaws.com");
    sl_http_opts o = guarded_opts(g);
    sl_reader_opts ro = {0};
    ro.http = &o;
    sl_error err;
    sl_error_clear(&err);
    assert_null(sl_reader_open("/etc/passwd", &ro, &err));
    assert_string_equal(err.msg,
                        "download refused: /etc/passwd: not a URL (expected https://host/path)");
    assert_null(sl_reader_open("-", &ro, &err));
    assert_string_equal(err.msg, "download refused: stdin: only https URLs are allowed");
    assert_null(sl_reader_open("file:///etc/passwd", &ro, &err));
    assert_string_equal(err.msg, "download refused: file:///etc/passwd: only https URLs are "
                                 "allowed");
    /* without a guard a local file still opens */
    sl_reader *r = sl_reader_open("/etc/passwd", NULL, &err);
    assert_non_null(r);
    sl_reader_close(r);
    sl_guard_free(g);
}

/* ------------------------------------------------------------------------ */
/* csv source options                                                        */

typedef struct src {
    sl_opts *opts;
    sl_ctx *ctx;
    void *self;
} src;

static int src_open(src *s, const char *const *pairs, size_t n, sl_error *err)
{
    sl_buf errs;
    sl_buf_init(&errs, 0);
    memset(s, 0, sizeof(*s));
    s->opts = sl_opts_from_pairs(sl_source_csv.options, pairs, n, &errs);
    if (!s->opts) {
        fail_msg("options: %s", sl_buf_cstr(&errs));
    }
    sl_buf_free(&errs);
    s->ctx = sl_ctx_new("test", "source", "csv", NULL, 0, NULL);
    assert_non_null(s->ctx);
    sl_error_clear(err);
    int rc = sl_source_csv.init(&s->self, s->opts, s->ctx, err);
    if (rc != 0) {
        assert_true(rc < 0);
        s->self = NULL;
    }
    return rc;
}

static void src_close(src *s)
{
    if (s->self) {
        sl_source_csv.destroy(s->self);
    }
    sl_ctx_free(s->ctx);
    sl_opts_free(s->opts);
}

static int src_count_rows(src *s)
{
    sl_record rec;
    sl_record_init(&rec);
    sl_error err;
    uint64_t next;
    int n = 0, rc;
    while ((rc = sl_source_csv.next(s->self, &rec, &next, &err)) == 1) {
        n++;
        sl_record_reset(&rec);
    }
    sl_record_free(&rec);
    return rc < 0 ? rc : n;
}

static void test_csv_options(void **state)
{
    (void)state;
    src s;
    sl_error err;
    char path[256];

    /* allow_hosts set: a local path, stdin or a file:// URL is refused */
    const char *local[] = {"path=/etc/passwd", "allow_hosts=*.amazonaws.com"};
    assert_int_equal(src_open(&s, local, 2, &err), SL_ERR_INPUT);
    assert_string_equal(err.msg,
                        "download refused: /etc/passwd: not a URL (expected https://host/path)");
    src_close(&s);
    const char *in[] = {"path=-", "allow_hosts=*.amazonaws.com"};
    assert_int_equal(src_open(&s, in, 2, &err), SL_ERR_INPUT);
    assert_non_null(strstr(err.msg, "download refused: stdin"));
    src_close(&s);

    /* allowed exactly: the rows arrive */
    local_url(path, sizeof(path), "path=http", "127.0.0.1", "/users.csv");
    const char *ok[] = {path, "allow_hosts=[\"*.amazonaws.com\", 127.0.0.1]", "max_download=1KB"};
    if (src_open(&s, ok, 3, &err) != 0) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(src_count_rows(&s), 2);
    src_close(&s);

    /* one string with several entries, as from an environment variable */
    const char *env[] = {path, "allow_hosts=*.amazonaws.com, 127.0.0.1"};
    if (src_open(&s, env, 2, &err) != 0) {
        fail_msg("%s", err.msg);
    }
    src_close(&s);

    /* the host is not listed */
    const char *other[] = {path, "allow_hosts=*.amazonaws.com"};
    assert_int_equal(src_open(&s, other, 2, &err), SL_ERR_INPUT);
    assert_non_null(strstr(err.msg, "host 127.0.0.1 is not in allow_hosts (*.amazonaws.com)"));
    src_close(&s);

    /* max_download: the export is larger */
    const char *small[] = {path, "max_download=10"};
    assert_int_equal(src_open(&s, small, 2, &err), SL_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "/users.csv exceeded max_download (10 bytes)"));
    src_close(&s);

    /* configuration mistakes */
    const char *empty[] = {path, "allow_hosts="};
    assert_int_equal(src_open(&s, empty, 2, &err), SL_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "allow_hosts: lists no host"));
    src_close(&s);
    const char *bad[] = {path, "allow_hosts=https://x.amazonaws.com"};
    assert_int_equal(src_open(&s, bad, 2, &err), SL_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "allow_hosts entry 'https://x.amazonaws.com' is not a host"));
    src_close(&s);
    const char *zero[] = {path, "max_download=0"};
    assert_int_equal(src_open(&s, zero, 2, &err), SL_ERR_CONFIG);
    assert_non_null(strstr(err.msg, "max_download: must be more than 0 bytes"));
    src_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_match),
        cmocka_unit_test(test_entry_errors),
        cmocka_unit_test(test_addr_classify),
        cmocka_unit_test(test_check_peer),
        cmocka_unit_test(test_url_rules),
        cmocka_unit_test(test_stream_refusals),
        cmocka_unit_test(test_stream_allowed_exact),
        cmocka_unit_test(test_redirect_not_followed),
        cmocka_unit_test(test_max_download),
        cmocka_unit_test(test_reader_refuses_local),
        cmocka_unit_test(test_csv_options),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
