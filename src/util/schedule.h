/* Schedules for `sluice serve`: `every 90m` or a 5-field cron line with an
 * optional IANA time zone.
 *
 *   every 90m                      slots at k * 90 minutes since the Unix epoch (UTC)
 *   every 1h30m                    the same
 *   30 6 * * mon-fri               06:30 UTC on weekdays
 *   0 6 * * mon-fri Europe/London  06:00 London time (GMT or BST)
 *   TZ=Europe/London 0 6 * * 1-5   the same (CRON_TZ= too)
 *   @daily, @hourly, ...           the usual shorthands
 *
 * Cron fields: minute hour day-of-month month day-of-week, each `*`, a
 * number, a range `a-b`, a step `*\/n`, `a-b/n` or `a/n`, or a comma list
 * of those; month and day-of-week take names (jan-dec, sun-sat); day-of-week
 * 0 and 7 are both Sunday. When day-of-month and day-of-week are both
 * restricted (neither covers its whole range), a day matching either one
 * fires (Vixie cron, croniter).
 *
 * Time zones are read from the system tzdata (TZif files under
 * /usr/share/zoneinfo, or $TZDIR) by a private reader: libc's global time
 * zone (TZ, tzset, localtime) is never touched, so schedules in different
 * zones are safe to use from any number of threads. A parsed schedule is
 * immutable.
 *
 * Daylight saving time (the rules of Vixie cron): a job whose minute and
 * hour fields are both fixed (neither starts with `*`) fires at most once
 * per local date and time: a time skipped by a spring-forward change fires
 * at the instant of the change (the first valid instant after it), and a
 * time repeated by an autumn change fires on its first occurrence only.
 * A job with `*` in its minute or hour field (every N minutes, hourly) keeps
 * to real elapsed time instead: it fires on every instant whose local time
 * matches, in both passes of a repeated hour, and not at all for local
 * times that do not exist. */
#ifndef SLUICE_SCHEDULE_H
#define SLUICE_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/error.h"

typedef struct sl_schedule sl_schedule;

/* Parse text. Returns a new schedule (free with sl_schedule_free), or NULL
 * with err set to one sentence naming the field, what was found and what is
 * expected (without the schedule text itself: the caller names the place).
 * Reads the time zone file, if any. */
sl_schedule *sl_schedule_parse(const char *text, sl_error *err);
void sl_schedule_free(sl_schedule *s);

/* The first fire time strictly after t (unix seconds), or -1 if there is
 * none before the year 10000 (or t is outside 1970..9999). Thread-safe. */
int64_t sl_schedule_next_after(const sl_schedule *s, int64_t t);

/* "UTC" or the IANA name given. Owned by s. */
const char *sl_schedule_zone(const sl_schedule *s);

/* Format t as local time in the schedule's zone: "2024-03-31 02:00:00 +01:00".
 * Returns out. */
char *sl_schedule_format(const sl_schedule *s, int64_t t, char *out, size_t n);

/* UTC offset in seconds in the schedule's zone at t. */
int32_t sl_schedule_utc_offset(const sl_schedule *s, int64_t t);

#endif
