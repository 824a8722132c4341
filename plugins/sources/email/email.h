/* Internal to the email source (plugins/sources/email): the header checks,
 * pure functions so that tests/unit/test_email.c can drive them directly. */
#ifndef SLUICE_EMAIL_INTERNAL_H
#define SLUICE_EMAIL_INTERNAL_H

#include <stddef.h>

typedef enum em_auth_mode {
    EM_AUTH_NONE = 0,
    EM_AUTH_DKIM, /* dkim=pass header.d=<From domain> */
    EM_AUTH_SPF,  /* spf=pass smtp.mailfrom=<From domain> */
    EM_AUTH_ANY,  /* either */
} em_auth_mode;

/* "none|dkim|spf|any" -> mode; -1 when unknown. */
int em_auth_parse_mode(const char *s);

/* Check the receiving server's verdict: values are the raw values of the
 * message's Authentication-Results headers, topmost first. Only the topmost
 * one whose authserv-id is authserv_id (case-insensitive) is trusted: the
 * ones below it may have been written by anyone before the message reached
 * that server. Returns 1 when it holds a pass of the kind mode asks for,
 * for from_domain exactly (case-insensitive), else 0 with why (a sentence
 * fragment naming what was found) filled. */
int em_auth_check(const char *const *values, size_t n, const char *authserv_id, em_auth_mode mode,
                  const char *from_domain, char *why, size_t whylen);

/* Whether addr (a bare address, "user@example.org") is on the allow-list:
 * entries are addresses (equal, case-insensitive) or "@domain" (the
 * address's domain equal, case-insensitive; subdomains are not included). */
int em_sender_allowed(const char *addr, const char *const *allow, size_t n);

/* Whether subject matches pattern: a glob over the whole subject when the
 * pattern holds *, ? or [ (fnmatch), else a substring; both ignore case.
 * A NULL or empty pattern matches everything. */
int em_subject_matches(const char *subject, const char *pattern);

#endif
