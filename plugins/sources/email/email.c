/* Email source: an exported CSV that arrives as a zipped e-mail attachment
 * (the ActionKit export), from one .eml file or a Maildir. See
 * docs/sources/email.md.
 *
 * Everything that can reject a message is checked before the first record
 * leaves: the headers (sender allow-list, subject, Authentication-Results),
 * the MIME structure, the attachment (one zip holding exactly one CSV, not
 * encrypted), a full decompression of the CSV (size and ratio caps, CRC) and
 * its header row. Only then is the CSV read again, streaming, by the csv
 * source's row reader (sluice/csv.h), so its rows become records exactly as
 * the csv source makes them. Nothing is sent from a rejected message.
 *
 * One message per run: a diff downstream needs exactly one snapshot. In a
 * Maildir the newest valid message wins; older valid ones are superseded.
 * Outcomes are kept in the plugin's state, keyed by the SHA-256 of the
 * message file, so each message is looked at once: rejections whatever
 * became of the run, the delivered and superseded ones only when the run
 * completed (a failed run looks at its message again).
 *
 * A path that is neither maildir: nor a .eml file is a plain CSV export
 * (the same export downloaded by hand): read directly by the same row
 * reader, no message checks, nothing recorded. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gmime/gmime.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "email.h"
#include "sluice/csv.h"
#include "sluice/plugin.h"
#include "sluice/reader.h"

#define EM_SCRATCH ((size_t)256 * 1024)
#define EM_STATE_PREFIX "msg."
/* Longest Subject / From / Message-ID shown in messages and state. */
#define EM_SHOW_MAX 200

static const sl_option email_options[] = {
    {"path", SL_OPT_STRING, NULL, SL_OPT_REQUIRED, NULL,
     "a message file (.eml), maildir:/dir for a Maildir (its new/ and cur/ messages), or any "
     "other file: a plain CSV export, read directly"},
    {"from", SL_OPT_LIST, NULL, 0, NULL,
     "allowed senders: addresses (ak@example.org) or whole domains (@example.org); required "
     "for .eml and maildir:"},
    {"subject", SL_OPT_STRING, NULL, 0, NULL,
     "the Subject must contain this text, or match it as a glob when it holds * ? or [ "
     "(case-insensitive); unset: any subject"},
    {"require_auth", SL_OPT_ENUM, "none", 0, "none|dkim|spf|any",
     "require the receiving server's Authentication-Results to show a DKIM (or SPF) pass for "
     "the From domain"},
    {"authserv_id", SL_OPT_STRING, NULL, 0, NULL,
     "the receiving server's authserv-id (the first word of the Authentication-Results it "
     "adds); required with require_auth"},
    {"max_message_bytes", SL_OPT_SIZE, "1GB", 0, NULL,
     "largest accepted message file; a larger one is rejected"},
    {"max_decompressed", SL_OPT_SIZE, "8GB", 0, NULL,
     "largest accepted CSV after unzipping; a larger one rejects the message"},
    {"max_ratio", SL_OPT_INT, "1000", 0, NULL,
     "the CSV may be at most this many times the size of the zip (checked once 64MB came out; "
     "0 = no limit): a zip bomb rejects the message"},
    SL_CSV_PARSE_OPTIONS,
    SL_OPTIONS_END,
};

typedef enum em_outcome {
    EM_NEW = 0,
    EM_SEEN,       /* recorded by an earlier run: not looked at */
    EM_DELIVERED,  /* the one read this run */
    EM_REJECTED,   /* with its reason */
    EM_SUPERSEDED, /* valid headers, but a newer valid message was read */
} em_outcome;

static const char *const outcome_names[] = {"new", "seen", "delivered", "rejected", "superseded"};

typedef struct em_msg {
    char *file;       /* path of the message file */
    char hash[65];    /* SHA-256 of the file, hex: its key in state */
    char *message_id; /* shown as is ("" when absent) */
    char *from;       /* the From address ("" when absent) */
    char *subject;    /* decoded, control characters replaced */
    int64_t date;     /* Date header, else the file's mtime (unix seconds) */
    int headers_ok;   /* passed the header checks */
    em_outcome outcome;
    char *reason; /* rejected / superseded: why */
} em_msg;

typedef struct em_src {
    sl_ctx *ctx;
    char *path; /* as configured */
    int maildir;
    int plain; /* path is a plain CSV file: no message */
    char **allow;
    size_t nallow;
    char *subject;
    em_auth_mode auth;
    char *authserv;
    uint64_t max_message;
    uint64_t max_decompressed;
    uint32_t max_ratio;

    em_msg *msgs;
    size_t nmsgs;
    size_t nseen;
    em_msg *chosen;

    /* the chosen message's zip and the archive streaming its CSV */
    unsigned char *zip;
    size_t zip_len;
    struct archive *ar;
    sl_csv *csv;
    char *input_name; /* "<message file>!<csv entry>", or the configured path */
    sl_error none;    /* no valid message: what next() reports */
    int have_none;
} em_src;

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;

static void gmime_start(void)
{
    g_mime_init();
}

/* --------------------------------------------------------------- helpers */

/* A copy of s fit for one log line: control characters become '?', at most
 * EM_SHOW_MAX bytes (cut at a character boundary). */
static char *shown(const char *s)
{
    if (!s) {
        s = "";
    }
    size_t n = strlen(s);
    if (n > EM_SHOW_MAX) {
        n = EM_SHOW_MAX;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
            n--;
        }
    }
    char *out = malloc(n + 1);
    if (!out) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    out[n] = '\0';
    return out;
}

static int has_suffix_ci(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcasecmp(s + n - m, suf) == 0;
}

/* A path that is not a message (.eml) nor a Maildir: a plain CSV export. */
static int is_plain_csv(const char *path)
{
    return path && *path && strncmp(path, "maildir:", 8) != 0 && !has_suffix_ci(path, ".eml");
}

static void msg_free(em_msg *m)
{
    free(m->file);
    free(m->message_id);
    free(m->from);
    free(m->subject);
    free(m->reason);
}

static void reject(em_src *s, em_msg *m, const char *fmt, ...) SL_PRINTF(3, 4);

/* Mark m rejected with a reason and log it, naming the message. */
static void reject(em_src *s, em_msg *m, const char *fmt, ...)
{
    char why[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    free(m->reason);
    m->reason = strdup(why);
    m->outcome = EM_REJECTED;
    sl_plog(s->ctx, SL_LOG_WARN,
            "message %s rejected (Message-ID %s, From %s, Subject \"%s\"): %s; nothing is sent "
            "from it",
            m->file, m->message_id && *m->message_id ? m->message_id : "none",
            m->from && *m->from ? m->from : "none", m->subject ? m->subject : "", why);
}

static int sha256_file(const char *path, char hex[65], sl_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return sl_error_set(err, SL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *buf = malloc(EM_SCRATCH);
    int rc = 0;
    if (!md || !buf || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "%s: cannot start SHA-256", path);
        goto done;
    }
    for (;;) {
        ssize_t k = read(fd, buf, EM_SCRATCH);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0) {
            rc = sl_error_set(err, SL_ERR_IO, "%s: read error: %s", path, strerror(errno));
            goto done;
        }
        if (k == 0) {
            break;
        }
        EVP_DigestUpdate(md, buf, (size_t)k);
    }
    unsigned char d[32];
    unsigned int dl = 0;
    EVP_DigestFinal_ex(md, d, &dl);
    for (unsigned i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    }
done:
    EVP_MD_CTX_free(md);
    free(buf);
    close(fd);
    return rc;
}

/* --------------------------------------------------------------- MIME */

typedef struct parse_issue {
    int critical;
    char what[160];
} parse_issue;

static void on_parser_warning(gint64 offset, GMimeParserWarning code, const gchar *item,
                              gpointer ud)
{
    parse_issue *pi = ud;
    const char *what = NULL;
    switch (code) {
    case GMIME_WARN_TRUNCATED_MESSAGE:
        what = "the message is truncated";
        break;
    case GMIME_WARN_MALFORMED_MULTIPART:
        what = "a multipart holds no parts (its boundary never appears)";
        break;
    case GMIME_WARN_MALFORMED_MESSAGE:
        what = "the message is malformed";
        break;
    case GMIME_CRIT_INVALID_HEADER_NAME:
        what = "an invalid header name";
        break;
    case GMIME_CRIT_CONFLICTING_HEADER:
        what = "conflicting headers";
        break;
    case GMIME_CRIT_CONFLICTING_PARAMETER:
        what = "conflicting header parameters";
        break;
    case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY:
        what = "a multipart without a boundary parameter";
        break;
    case GMIME_CRIT_NESTING_OVERFLOW:
        what = "MIME parts nested too deep";
        break;
    case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT:
        what = "a MIME part without headers or content";
        break;
    default:
        return; /* tolerated: duplicated parameters, 8-bit headers, ... */
    }
    if (!pi->critical) {
        pi->critical = 1;
        snprintf(pi->what, sizeof(pi->what), "%s (near byte %lld%s%.60s)", what, (long long)offset,
                 item ? ": " : "", item ? item : "");
        for (char *p = pi->what; *p; p++) {
            if ((unsigned char)*p < 0x20) {
                *p = '?';
            }
        }
    }
}

/* Parse m->file. Returns the message (unref it) or NULL with m rejected.
 * Fills m's Message-ID, From, Subject and date. */
static GMimeMessage *parse_message(em_src *s, em_msg *m)
{
    int fd = open(m->file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        reject(s, m, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        reject(s, m, "not a regular file");
        return NULL;
    }
    if (m->date == 0) {
        m->date = (int64_t)st.st_mtime;
    }
    if ((uint64_t)st.st_size > s->max_message) {
        close(fd);
        reject(s, m, "the message is %lld bytes, more than max_message_bytes (%llu)",
               (long long)st.st_size, (unsigned long long)s->max_message);
        return NULL;
    }
    GMimeStream *stream = g_mime_stream_fs_new(fd); /* owns fd */
    GMimeParser *parser = g_mime_parser_new_with_stream(stream);
    g_object_unref(stream);
    GMimeParserOptions *po = g_mime_parser_options_new();
    parse_issue pi = {0};
    g_mime_parser_options_set_warning_callback(po, on_parser_warning, &pi);
    GMimeMessage *msg = g_mime_parser_construct_message(parser, po);
    g_object_unref(parser);
    g_mime_parser_options_free(po);
    if (!msg) {
        reject(s, m, "invalid MIME: not an e-mail message (no header block)");
        return NULL;
    }
    const char *mid = g_mime_message_get_message_id(msg);
    free(m->message_id);
    m->message_id = shown(mid ? mid : "");
    free(m->subject);
    m->subject = shown(g_mime_message_get_subject(msg));
    GDateTime *dt = g_mime_message_get_date(msg);
    if (dt) {
        m->date = (int64_t)g_date_time_to_unix(dt);
    }
    /* the From address: exactly one mailbox, in exactly one From header */
    GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(msg));
    int nfrom = 0;
    for (int i = 0; i < g_mime_header_list_get_count(hl); i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        nfrom += strcasecmp(g_mime_header_get_name(h), "From") == 0;
    }
    InternetAddressList *from = g_mime_message_get_from(msg);
    int naddr = from ? internet_address_list_length(from) : 0;
    InternetAddress *a = naddr == 1 ? internet_address_list_get_address(from, 0) : NULL;
    if (a && INTERNET_ADDRESS_IS_MAILBOX(a)) {
        free(m->from);
        m->from = shown(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a)));
    }
    if (pi.critical) {
        reject(s, m, "invalid MIME: %s", pi.what);
    } else if (nfrom != 1) {
        reject(s, m, "%d From headers (expected exactly one)", nfrom);
    } else if (!m->from || !*m->from) {
        reject(s, m, "the From header holds %d addresses (expected exactly one mailbox)", naddr);
    } else {
        return msg;
    }
    g_object_unref(msg);
    return NULL;
}

/* Sender, subject and authentication. 1 passed, 0 rejected. */
static int check_headers(em_src *s, em_msg *m, GMimeMessage *msg)
{
    const char *const *allow = (const char *const *)s->allow;
    if (!em_sender_allowed(m->from, allow, s->nallow)) {
        char list[256] = "";
        for (size_t i = 0; i < s->nallow; i++) {
            size_t k = strlen(list);
            snprintf(list + k, sizeof(list) - k, "%s%s", i ? ", " : "", s->allow[i]);
        }
        reject(s, m, "sender %s is not on the from allow-list (%s)", m->from, list);
        return 0;
    }
    if (!em_subject_matches(g_mime_message_get_subject(msg), s->subject)) {
        reject(s, m, "the subject does not match '%s'", s->subject);
        return 0;
    }
    if (s->auth == EM_AUTH_NONE) {
        return 1;
    }
    GMimeHeaderList *hl = g_mime_object_get_header_list(GMIME_OBJECT(msg));
    int n = g_mime_header_list_get_count(hl);
    const char **vals = calloc(n > 0 ? (size_t)n : 1, sizeof(*vals));
    if (!vals) {
        reject(s, m, "out of memory");
        return 0;
    }
    size_t k = 0;
    for (int i = 0; i < n; i++) { /* in file order: the topmost first */
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        if (strcasecmp(g_mime_header_get_name(h), "Authentication-Results") == 0) {
            vals[k++] = g_mime_header_get_raw_value(h);
        }
    }
    const char *dom = strrchr(m->from, '@') + 1; /* em_sender_allowed saw an '@' */
    char why[640];
    int ok = em_auth_check(vals, k, s->authserv, s->auth, dom, why, sizeof(why));
    free(vals);
    if (!ok) {
        reject(s, m, "%s", why);
    }
    return ok;
}

typedef struct att_scan {
    int nparts;       /* attachments */
    int nzip;         /* of which zips */
    GMimeStream *zip; /* the first zip, decoded (a GMimeStreamMem) */
    char other[200];  /* what the non-zip attachments were */
    char zipname[128];
} att_scan;

static int is_zip_magic(const unsigned char *p, size_t n)
{
    return n >= 4 && p[0] == 'P' && p[1] == 'K' &&
           ((p[2] == 3 && p[3] == 4) || (p[2] == 5 && p[3] == 6) || (p[2] == 7 && p[3] == 8));
}

static void scan_part(GMimeObject *parent, GMimeObject *part, gpointer ud)
{
    (void)parent;
    att_scan *as = ud;
    if (!GMIME_IS_PART(part)) {
        return;
    }
    GMimePart *p = GMIME_PART(part);
    GMimeContentType *ct = g_mime_object_get_content_type(part);
    const char *fname = g_mime_part_get_filename(p);
    int is_text = ct && strcasecmp(g_mime_content_type_get_media_type(ct), "text") == 0;
    if (!g_mime_part_is_attachment(p) && !fname && is_text) {
        return; /* a body */
    }
    as->nparts++;
    /* a zip by its content's first bytes, whatever its name or type says */
    GMimeStream *mem = g_mime_stream_mem_new();
    GMimeDataWrapper *w = g_mime_part_get_content(p);
    const unsigned char *head = NULL;
    size_t got = 0;
    if (w && g_mime_data_wrapper_write_to_stream(w, mem) >= 0) {
        GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
        head = ba->data;
        got = ba->len;
    }
    char *ctype = ct ? g_mime_content_type_get_mime_type(ct) : NULL;
    if (head && is_zip_magic(head, got)) {
        if (as->nzip++ == 0) {
            as->zip = mem; /* decoded: kept */
            mem = NULL;
            snprintf(as->zipname, sizeof(as->zipname), "%s", fname ? fname : "(unnamed)");
        }
    } else {
        size_t k = strlen(as->other);
        snprintf(as->other + k, sizeof(as->other) - k, "%s'%.60s' (%.40s)", k ? ", " : "",
                 fname ? fname : "(unnamed)", ctype ? ctype : "?");
    }
    g_free(ctype);
    if (mem) {
        g_object_unref(mem);
    }
}

/* ---------------------------------------------------------------- zip */

static struct archive *zip_open(const unsigned char *zip, size_t len)
{
    struct archive *a = archive_read_new();
    if (!a) {
        return NULL;
    }
    archive_read_support_format_zip(a);
    if (archive_read_open_memory(a, zip, len) != ARCHIVE_OK) {
        return a; /* the caller reads the error from the first header */
    }
    return a;
}

static int is_metadata_entry(const char *name)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    return strncmp(name, "__MACOSX/", 9) == 0 || strncmp(base, "._", 2) == 0;
}

/* Find the CSV in the zip, check it is alone and not encrypted, and
 * decompress it once, counting against the caps (and checking its CRC).
 * Returns the entry name (free it) or NULL with m rejected. */
static char *zip_check(em_src *s, em_msg *m, const unsigned char *zip, size_t len)
{
    char *entry = NULL;
    char csvs[256] = "";
    int ncsv = 0;
    unsigned char *scratch = NULL;
    struct archive *a = zip_open(zip, len);
    if (!a) {
        reject(s, m, "out of memory");
        return NULL;
    }
    struct archive_entry *e;
    int first = 1;
    for (;;) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) {
            break;
        }
        if (r < ARCHIVE_WARN) {
            reject(s, m, "the attachment is %s: %s", first ? "not a readable zip" : "a damaged zip",
                   archive_error_string(a) ? archive_error_string(a) : "unknown error");
            goto fail;
        }
        first = 0;
        const char *name = archive_entry_pathname(e);
        if (!name || archive_entry_filetype(e) == AE_IFDIR || is_metadata_entry(name)) {
            continue;
        }
        if (archive_entry_is_encrypted(e)) {
            reject(s, m, "encrypted zip: entry '%.100s' is password-protected", name);
            goto fail;
        }
        if (has_suffix_ci(name, ".csv")) {
            size_t k = strlen(csvs);
            snprintf(csvs + k, sizeof(csvs) - k, "%s'%.80s'", k ? ", " : "", name);
            if (ncsv++ == 0) {
                entry = strdup(name);
            }
        } else {
            sl_plog(s->ctx, SL_LOG_INFO, "message %s: zip entry '%.100s' is not a CSV: ignored",
                    m->file, name);
        }
    }
    if (ncsv == 0) {
        reject(s, m, "the zip holds no .csv file");
        goto fail;
    }
    if (ncsv > 1) {
        reject(s, m, "the zip holds %d CSV files (%s); expected exactly one", ncsv, csvs);
        goto fail;
    }
    if (!entry) {
        reject(s, m, "out of memory");
        goto fail;
    }
    archive_read_free(a);
    /* second pass: decompress the CSV once, counting */
    a = zip_open(zip, len);
    scratch = malloc(EM_SCRATCH);
    if (!a || !scratch) {
        reject(s, m, "out of memory");
        goto fail;
    }
    for (;;) {
        int r = archive_read_next_header(a, &e);
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            reject(s, m, "damaged zip: %s",
                   archive_error_string(a) ? archive_error_string(a) : "entry not found again");
            goto fail;
        }
        if (strcmp(archive_entry_pathname(e), entry) == 0) {
            break;
        }
    }
    uint64_t out = 0;
    for (;;) {
        la_ssize_t k = archive_read_data(a, scratch, EM_SCRATCH);
        if (k < 0) {
            reject(s, m, "damaged zip: %s: %s", entry,
                   archive_error_string(a) ? archive_error_string(a) : "read error");
            goto fail;
        }
        if (k == 0) {
            break;
        }
        out += (uint64_t)k;
        if (s->max_decompressed && out > s->max_decompressed) {
            reject(s, m,
                   "zip bomb? %s is larger than max_decompressed (%llu bytes) after unzipping",
                   entry, (unsigned long long)s->max_decompressed);
            goto fail;
        }
        if (s->max_ratio && out > SL_READER_RATIO_FLOOR && out / len >= s->max_ratio) {
            reject(s, m,
                   "zip bomb? %s expanded to %llu bytes from a %zu-byte zip: more than %u times "
                   "(max_ratio)",
                   entry, (unsigned long long)out, len, s->max_ratio);
            goto fail;
        }
    }
    free(scratch);
    archive_read_free(a);
    return entry;

fail:
    free(scratch);
    free(entry);
    if (a) {
        archive_read_free(a);
    }
    return NULL;
}

static long zip_read(void *ud, void *buf, size_t n, sl_error *err)
{
    em_src *s = ud;
    la_ssize_t k = archive_read_data(s->ar, buf, n);
    if (k < 0) {
        sl_error_set(err, SL_ERR_INPUT, "%s: damaged zip: %s", s->input_name,
                     archive_error_string(s->ar) ? archive_error_string(s->ar) : "read error");
        return -1;
    }
    return (long)k;
}

/* Open the CSV of the zip in s->zip for reading (the third pass). 0, or
 * <0 with m rejected (the CSV's header is wrong) or err set. */
static int open_csv(em_src *s, em_msg *m, const char *entry, const sl_opts *o)
{
    s->ar = zip_open(s->zip, s->zip_len);
    if (!s->ar) {
        reject(s, m, "out of memory");
        return SL_ERR_NOMEM;
    }
    struct archive_entry *e;
    for (;;) {
        int r = archive_read_next_header(s->ar, &e);
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            reject(s, m, "damaged zip: entry %s not found again", entry);
            return SL_ERR_INPUT;
        }
        if (strcmp(archive_entry_pathname(e), entry) == 0) {
            break;
        }
    }
    int64_t size = archive_entry_size_is_set(e) ? (int64_t)archive_entry_size(e) : -1;
    free(s->input_name);
    size_t n = strlen(m->file) + strlen(entry) + 2;
    s->input_name = malloc(n);
    if (!s->input_name) {
        reject(s, m, "out of memory");
        return SL_ERR_NOMEM;
    }
    snprintf(s->input_name, n, "%s!%s", m->file, entry);
    sl_reader_opts ro = {0};
    ro.compression = SL_COMPRESS_NONE;
    ro.max_bytes = s->max_decompressed;
    sl_error err;
    sl_error_clear(&err);
    sl_reader *r = sl_reader_open_fn(s->input_name, zip_read, s, size, &ro, &err);
    if (!r) {
        reject(s, m, "%s", err.msg);
        return SL_ERR_INPUT;
    }
    if (sl_csv_open(&s->csv, r, o, &err) != 0) {
        reject(s, m, "the CSV cannot be read: %s", err.msg);
        return SL_ERR_INPUT;
    }
    return 0;
}

static void close_zip(em_src *s)
{
    sl_csv_free(s->csv);
    s->csv = NULL;
    if (s->ar) {
        archive_read_free(s->ar);
        s->ar = NULL;
    }
    free(s->zip);
    s->zip = NULL;
    s->zip_len = 0;
}

/* The attachment of m: one zip holding one CSV, which is opened for reading.
 * 0 ok (s->csv open), 1 rejected. */
static int load_export(em_src *s, em_msg *m, const sl_opts *o)
{
    GMimeMessage *msg = parse_message(s, m);
    if (!msg) {
        return 1;
    }
    att_scan as = {0};
    g_mime_message_foreach(msg, scan_part, &as);
    if (as.nparts == 0) {
        reject(s, m, "no attachment (expected a zip holding one CSV)");
        goto rejected;
    }
    if (as.nzip == 0) {
        reject(s, m, "no zip attachment: %s %s not a zip", as.other, as.nparts == 1 ? "is" : "are");
        goto rejected;
    }
    if (as.nzip > 1) {
        reject(s, m, "%d zip attachments (expected one)", as.nzip);
        goto rejected;
    }
    GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(as.zip));
    s->zip = malloc(ba->len ? ba->len : 1);
    if (s->zip) {
        memcpy(s->zip, ba->data, ba->len);
        s->zip_len = ba->len;
    }
    g_object_unref(as.zip);
    as.zip = NULL;
    g_object_unref(msg);
    msg = NULL;
    if (!s->zip) {
        reject(s, m, "out of memory");
        goto rejected;
    }
    char *entry = zip_check(s, m, s->zip, s->zip_len);
    if (!entry) {
        goto rejected;
    }
    int rc = open_csv(s, m, entry, o);
    free(entry);
    if (rc != 0) {
        goto rejected;
    }
    return 0;

rejected:
    if (as.zip) {
        g_object_unref(as.zip);
    }
    if (msg) {
        g_object_unref(msg);
    }
    close_zip(s);
    return 1;
}

/* ---------------------------------------------------------------- candidates */

static int add_candidate(em_src *s, const char *file, sl_error *err)
{
    em_msg *grown = realloc(s->msgs, (s->nmsgs + 1) * sizeof(*grown));
    if (!grown) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    s->msgs = grown;
    em_msg *m = &s->msgs[s->nmsgs];
    memset(m, 0, sizeof(*m));
    m->file = strdup(file);
    if (!m->file) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    s->nmsgs++;
    return 0;
}

static int list_maildir(em_src *s, const char *dir, sl_error *err)
{
    static const char *const subs[] = {"new", "cur"};
    int found_sub = 0;
    for (int i = 0; i < 2; i++) {
        char sub[4096];
        snprintf(sub, sizeof(sub), "%s/%s", dir, subs[i]);
        DIR *d = opendir(sub);
        if (!d) {
            if (errno == ENOENT) {
                continue;
            }
            return sl_error_set(err, SL_ERR_IO, "%s: cannot list: %s", sub, strerror(errno));
        }
        found_sub = 1;
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.') {
                continue;
            }
            char f[4096 + 256];
            snprintf(f, sizeof(f), "%s/%s", sub, de->d_name);
            struct stat st;
            if (stat(f, &st) != 0 || !S_ISREG(st.st_mode)) {
                continue;
            }
            if (add_candidate(s, f, err) != 0) {
                closedir(d);
                return SL_ERR_NOMEM;
            }
        }
        closedir(d);
    }
    if (!found_sub) {
        return sl_error_set(err, SL_ERR_INPUT,
                            "%s: not a Maildir (expected the folders new/ and cur/ in it)", dir);
    }
    return 0;
}

/* Newest first; ties by file name, the later one first. */
static int by_date_desc(const void *a, const void *b)
{
    const em_msg *x = *(em_msg *const *)a, *y = *(em_msg *const *)b;
    if (x->date != y->date) {
        return x->date < y->date ? 1 : -1;
    }
    return -strcmp(x->file, y->file);
}

/* The selection: see the file comment. */
static int select_message(em_src *s, const sl_opts *o, sl_error *err)
{
    int again = sl_ctx_again(s->ctx);
    size_t nnew = 0;
    for (size_t i = 0; i < s->nmsgs; i++) {
        em_msg *m = &s->msgs[i];
        int rc = sha256_file(m->file, m->hash, err);
        if (rc != 0) {
            return rc;
        }
        sl_buf prev;
        sl_buf_init(&prev, 64 * 1024);
        char key[80];
        snprintf(key, sizeof(key), EM_STATE_PREFIX "%s", m->hash);
        int found = sl_ctx_state_get(s->ctx, key, &prev, err);
        if (found < 0 && sl_ctx_dry_run(s->ctx)) {
            /* a dry run has no state store: it cannot know what earlier runs saw */
            if (i == 0) {
                sl_plog(s->ctx, SL_LOG_INFO,
                        "dry run: the state store is not open, so messages earlier runs looked "
                        "at are looked at again");
            }
            found = 0;
        } else if (found < 0) {
            sl_buf_free(&prev);
            return found;
        }
        if (found == 1 && !again) {
            m->outcome = EM_SEEN;
            s->nseen++;
            sl_plog(s->ctx, SL_LOG_DEBUG, "message %s was looked at by an earlier run: %s", m->file,
                    sl_buf_cstr(&prev));
            sl_buf_free(&prev);
            continue;
        }
        sl_buf_free(&prev);
        nnew++;
        GMimeMessage *msg = parse_message(s, m);
        if (msg) {
            m->headers_ok = check_headers(s, m, msg);
            g_object_unref(msg);
        }
    }
    em_msg **order = calloc(s->nmsgs ? s->nmsgs : 1, sizeof(*order));
    if (!order) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < s->nmsgs; i++) {
        if (s->msgs[i].headers_ok) {
            order[n++] = &s->msgs[i];
        }
    }
    qsort(order, n, sizeof(*order), by_date_desc);
    for (size_t i = 0; i < n; i++) {
        em_msg *m = order[i];
        if (s->chosen) {
            char why[512];
            snprintf(why, sizeof(why), "superseded by the newer export %s (Message-ID %s)",
                     s->chosen->file, *s->chosen->message_id ? s->chosen->message_id : "none");
            m->reason = strdup(why);
            m->outcome = EM_SUPERSEDED;
            sl_plog(s->ctx, SL_LOG_WARN,
                    "message %s (Message-ID %s, Subject \"%s\") is %s: not read (one export "
                    "per run: the newest)",
                    m->file, *m->message_id ? m->message_id : "none", m->subject, why);
            continue;
        }
        if (load_export(s, m, o) == 0) {
            m->outcome = EM_DELIVERED;
            s->chosen = m;
            sl_plog(s->ctx, SL_LOG_INFO, "reading %s (Message-ID %s, From %s, Subject \"%s\")",
                    s->input_name, *m->message_id ? m->message_id : "none", m->from, m->subject);
        }
    }
    free(order);
    if (s->chosen) {
        return 0;
    }
    size_t nrej = 0;
    const char *first = NULL;
    for (size_t i = 0; i < s->nmsgs; i++) {
        if (s->msgs[i].outcome == EM_REJECTED) {
            nrej++;
            if (!first) {
                first = s->msgs[i].reason;
            }
        }
    }
    s->have_none = 1;
    if (nnew == 0) {
        /* nothing arrived since the last run: nothing to do, not a failure
         * (a schedule polls the Maildir more often than exports arrive) */
        sl_ctx_skip_run(s->ctx,
                        "%s: no new message (%zu looked at by earlier runs; --again looks at them "
                        "again)",
                        s->path, s->nseen);
    } else {
        sl_error_set(&s->none, SL_ERR_INPUT,
                     "%s: no valid export: %zu new message%s, %zu rejected (%s%s); nothing sent",
                     s->path, nnew, nnew == 1 ? "" : "s", nrej, first ? first : "",
                     nrej > 1 ? "; see the warnings above for the others" : "");
    }
    return 0;
}

/* ---------------------------------------------------------------- source */

static void src_destroy(void *self)
{
    em_src *s = self;
    if (!s) {
        return;
    }
    close_zip(s);
    for (size_t i = 0; i < s->nmsgs; i++) {
        msg_free(&s->msgs[i]);
    }
    free(s->msgs);
    for (size_t i = 0; i < s->nallow; i++) {
        free(s->allow[i]);
    }
    free(s->allow);
    free(s->subject);
    free(s->authserv);
    free(s->input_name);
    free(s->path);
    free(s);
}

static int src_validate(const sl_opts *o, sl_report_fn report, void *ud)
{
    int bad = 0;
    const char *path = sl_opt_str(o, "path");
    int plain = is_plain_csv(path);
    if (plain && (strncmp(path, "http://", 7) == 0 || strncmp(path, "https://", 8) == 0)) {
        report(ud, "path",
               "'%s' is a URL; the email source reads a local .eml, maildir:/dir or CSV file "
               "(for a CSV at a URL use the csv source)",
               path);
        bad++;
    }
    size_t n = plain ? 0 : sl_opt_count(o, "from");
    for (size_t i = 0; i < n; i++) {
        const char *a = sl_opt_item(o, "from", i);
        const char *at = a ? strchr(a, '@') : NULL;
        if (!at || !at[1] || strchr(at + 1, '@') || strpbrk(a, " \t<>,")) {
            report(ud, "from",
                   "entry '%s' is not an address (ak@example.org) or a domain (@example.org)",
                   a ? a : "");
            bad++;
        }
    }
    if (n == 0 && !plain) {
        report(ud, "from",
               "required for a .eml or maildir: path, lists no sender (expected addresses or "
               "@domains; is the environment "
               "variable empty?)");
        bad++;
    }
    const char *auth = sl_opt_str(o, "require_auth");
    const char *id = sl_opt_str(o, "authserv_id");
    if (auth && strcmp(auth, "none") != 0 && (!id || !*id)) {
        report(ud, "authserv_id",
               "required with require_auth: %s (the name your receiving mail server writes first "
               "in the Authentication-Results it adds, e.g. mx.example.org)",
               auth);
        bad++;
    }
    if (path && strncmp(path, "maildir:", 8) == 0 && !path[8]) {
        report(ud, "path", "maildir: needs a folder (maildir:/var/mail/ak)");
        bad++;
    }
    int64_t ratio = sl_opt_int(o, "max_ratio");
    if (ratio < 0 || ratio > UINT32_MAX) {
        report(ud, "max_ratio", "expected 0 (no limit) to 4294967295, got %lld", (long long)ratio);
        bad++;
    }
    if (sl_opt_size(o, "max_message_bytes") <= 0) {
        report(ud, "max_message_bytes", "must be more than 0 bytes");
        bad++;
    }
    if (sl_opt_size(o, "max_decompressed") <= 0) {
        report(ud, "max_decompressed", "must be more than 0 bytes");
        bad++;
    }
    return bad;
}

/* A plain CSV export at s->path: read directly, as the csv source would
 * (.gz / .bz2 decompressed). */
static int open_plain(em_src *s, const sl_opts *o, sl_error *err)
{
    s->plain = 1;
    sl_reader_opts ro = {0};
    ro.compression = SL_COMPRESS_AUTO;
    ro.max_bytes = s->max_decompressed;
    sl_reader *r = sl_reader_open(s->path, &ro, err);
    if (!r) {
        return err && err->code ? err->code : SL_ERR_IO;
    }
    return sl_csv_open(&s->csv, r, o, err);
}

static int src_init(void **self, const sl_opts *o, sl_ctx *ctx, sl_error *err)
{
    pthread_once(&gmime_once, gmime_start);
    if (sl_opts_validate(o, src_validate, err) > 0) {
        return SL_ERR_CONFIG;
    }
    int rc = 0;
    em_src *s = calloc(1, sizeof(*s));
    if (!s) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    s->ctx = ctx;
    const char *path = sl_opt_str(o, "path");
    s->path = strdup(path ? path : "");
    s->nallow = sl_opt_count(o, "from");
    s->allow = calloc(s->nallow, sizeof(*s->allow));
    const char *subj = sl_opt_str(o, "subject");
    s->subject = subj && *subj ? strdup(subj) : NULL;
    const char *id = sl_opt_str(o, "authserv_id");
    s->authserv = strdup(id ? id : "");
    if (!s->path || !s->allow || (subj && *subj && !s->subject) || !s->authserv) {
        rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < s->nallow; i++) {
        s->allow[i] = strdup(sl_opt_item(o, "from", i));
        if (!s->allow[i]) {
            rc = sl_error_set(err, SL_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    s->auth = (em_auth_mode)em_auth_parse_mode(sl_opt_str(o, "require_auth"));
    s->max_message = (uint64_t)sl_opt_size(o, "max_message_bytes");
    s->max_decompressed = (uint64_t)sl_opt_size(o, "max_decompressed");
    s->max_ratio = (uint32_t)sl_opt_int(o, "max_ratio");

    if (strncmp(s->path, "maildir:", 8) == 0) {
        s->maildir = 1;
        rc = list_maildir(s, s->path + 8, err);
    } else {
        struct stat st;
        if (stat(s->path, &st) != 0) {
            rc = sl_error_set(err, SL_ERR_IO, "%s: cannot open: %s", s->path, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            rc = sl_error_set(err, SL_ERR_INPUT,
                              "%s: is a folder; for a Maildir write path: maildir:%s", s->path,
                              s->path);
        } else if (is_plain_csv(s->path)) {
            rc = open_plain(s, o, err);
        } else {
            rc = add_candidate(s, s->path, err);
        }
    }
    if (rc == 0 && !s->plain) {
        rc = select_message(s, o, err);
    }
    if (rc != 0) {
        goto fail;
    }
    *self = s;
    return 0;

fail:
    src_destroy(s);
    return rc ? rc : SL_ERR;
}

static int src_next(void *self, sl_record *rec, uint64_t *next_pos, sl_error *err)
{
    em_src *s = self;
    if (!s->csv) {
        if (err) {
            *err = s->none;
        }
        return s->none.code ? s->none.code : SL_ERR_INPUT;
    }
    return sl_csv_next(s->csv, rec, next_pos, err);
}

static int src_checkpoint(void *self, uint64_t pos, uint64_t line, sl_buf *out, sl_error *err)
{
    em_src *s = self;
    if (!s->csv) {
        return sl_error_set(err, SL_ERR, "%s: no message is being read", s->path);
    }
    if (s->plain) {
        return sl_csv_checkpoint(s->csv, pos, line, out, err);
    }
    sl_buf tmp;
    sl_buf_init(&tmp, 0);
    int rc = sl_csv_checkpoint(s->csv, pos, line, &tmp, err);
    if (rc == 0) {
        /* the csv checkpoint, plus which message it is in */
        json_t *j = json_loads(sl_buf_cstr(&tmp), 0, NULL);
        json_object_set_new(j, "message", json_string(s->chosen->hash));
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (!text || sl_buf_puts(out, text) != 0) {
            rc = sl_error_set(err, SL_ERR_NOMEM, "%s: cannot write the checkpoint", s->input_name);
        }
        free(text);
        json_decref(j);
    }
    sl_buf_free(&tmp);
    return rc;
}

static int src_resume(void *self, const char *checkpoint, sl_error *err)
{
    em_src *s = self;
    if (!s->csv) {
        return 0; /* next() reports why nothing can be read */
    }
    if (s->plain) {
        return sl_csv_resume(s->csv, checkpoint, err);
    }
    json_t *j = json_loads(checkpoint ? checkpoint : "", 0, NULL);
    const char *h = json_string_value(json_object_get(j, "message"));
    int same = h && strcmp(h, s->chosen->hash) == 0;
    json_decref(j);
    if (!same) {
        return sl_error_set(err, SL_ERR_INPUT,
                            "%s: the interrupted run was reading another message; use "
                            "--from-start",
                            s->input_name);
    }
    return sl_csv_resume(s->csv, checkpoint, err);
}

static const char *const *src_columns(void *self, size_t *n)
{
    em_src *s = self;
    if (!s->csv) {
        *n = 0;
        return NULL;
    }
    return sl_csv_columns(s->csv, n);
}

static const char *src_input_name(void *self)
{
    em_src *s = self;
    return s->input_name ? s->input_name : s->path;
}

static void src_progress(void *self, int64_t *done, int64_t *total)
{
    em_src *s = self;
    *done = s->csv ? (int64_t)sl_reader_offset(sl_csv_reader(s->csv)) : 0;
    *total = s->csv ? sl_reader_size(sl_csv_reader(s->csv)) : -1;
}

static int record_outcome(em_src *s, const em_msg *m, const sl_run_end *e, sl_error *err)
{
    sl_buf b;
    sl_buf_init(&b, 64 * 1024);
    sl_jw w;
    sl_jw_init(&w, &b);
    sl_jw_obj_open(&w);
    sl_jw_keyz(&w, "outcome");
    sl_jw_str(&w, outcome_names[m->outcome], strlen(outcome_names[m->outcome]));
    sl_jw_keyz(&w, "file");
    sl_jw_str(&w, m->file, strlen(m->file));
    sl_jw_keyz(&w, "message_id");
    sl_jw_str(&w, m->message_id ? m->message_id : "", m->message_id ? strlen(m->message_id) : 0);
    sl_jw_keyz(&w, "from");
    sl_jw_str(&w, m->from ? m->from : "", m->from ? strlen(m->from) : 0);
    sl_jw_keyz(&w, "subject");
    sl_jw_str(&w, m->subject ? m->subject : "", m->subject ? strlen(m->subject) : 0);
    sl_jw_keyz(&w, "date");
    sl_jw_int(&w, m->date);
    if (m->reason) {
        sl_jw_keyz(&w, "reason");
        sl_jw_str(&w, m->reason, strlen(m->reason));
    }
    sl_jw_keyz(&w, "run_started");
    sl_jw_int(&w, (int64_t)e->started_at);
    sl_jw_obj_close(&w);
    int rc = 0;
    if (w.err) {
        rc = sl_error_set(err, w.err, "%s: cannot record the outcome", m->file);
    } else {
        char key[80];
        snprintf(key, sizeof(key), EM_STATE_PREFIX "%s", m->hash);
        rc = sl_ctx_state_set(s->ctx, key, b.data, b.len, err);
    }
    sl_buf_free(&b);
    return rc;
}

static int src_commit(void *self, const sl_run_end *e, sl_error *err)
{
    em_src *s = self;
    for (size_t i = 0; i < s->nmsgs; i++) {
        const em_msg *m = &s->msgs[i];
        int keep = m->outcome == EM_REJECTED ||
                   (e->complete && (m->outcome == EM_DELIVERED || m->outcome == EM_SUPERSEDED));
        if (!keep) {
            continue;
        }
        if (e->dry_run) {
            sl_plog(s->ctx, SL_LOG_INFO, "dry run: would record message %s as %s", m->file,
                    outcome_names[m->outcome]);
            continue;
        }
        int rc = record_outcome(s, m, e, err);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

const sl_source_plugin sl_source_email = {
    .name = "email",
    .summary = "the zipped CSV attached to an e-mail (.eml file or Maildir), checked "
               "(sender, subject, DKIM/SPF) and read once",
    .options = email_options,
    .validate = src_validate,
    .init = src_init,
    .resume = src_resume,
    .next = src_next,
    .checkpoint = src_checkpoint,
    .columns = src_columns,
    .input_name = src_input_name,
    .progress = src_progress,
    .commit = src_commit,
    .destroy = src_destroy,
};
