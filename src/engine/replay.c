/* Dead letters as a source: `sluice retry` replays a pipeline's dead
 * letters through the steps after the one that rejected them, to the sink.
 * A replayed record's pos carries its dead-letter id (finalize deletes or
 * bumps that row); its stage says where processing resumes. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

static const char *intern_name(void *ud, const char *name);

static int load_cb(void *ud, const sl_dead_letter *d)
{
    runner *r = ud;
    if (d->stage == SL_STAGE_SOURCE) {
        r->not_retryable++;
        return 0;
    }
    if (r->nitems >= RETRY_MAX_LOAD) {
        return 1;
    }
    replay_item *it = &r->items[r->nitems];
    it->record = strdup(d->record);
    if (!it->record) {
        return 1;
    }
    it->id = d->id;
    it->stage = d->stage;
    it->line = d->line;
    it->attempts = d->attempts;
    it->action = d->action ? intern_name(r, d->action) : NULL;
    r->nitems++;
    return 0;
}

/* Replayed records enter the steps where they were rejected; ordered by that
 * stage (then by id), a batch holds records of one stage (see reader.c). */
static int by_stage(const void *a, const void *b)
{
    const replay_item *x = a, *y = b;
    if (x->stage != y->stage) {
        return x->stage < y->stage ? -1 : 1;
    }
    return x->id < y->id ? -1 : x->id > y->id;
}

int sl_replay_load(runner *r, sl_error *err)
{
    r->items = calloc(RETRY_MAX_LOAD, sizeof(*r->items));
    if (!r->items) {
        return sl_error_set(err, SL_ERR_NOMEM, "out of memory");
    }
    if (sl_state_dl_each(r->st, r->p->name, 0, load_cb, r, err) < 0) {
        return SL_ERR;
    }
    qsort(r->items, r->nitems, sizeof(*r->items), by_stage);
    if (r->not_retryable) {
        sl_warn(sl_ctx_name(r->src_ctx),
                "%" PRIu64 " dead letters were rejected by the source (bad input rows) and "
                "cannot be retried: fix the input and run again",
                r->not_retryable);
    }
    return 0;
}

static const char *intern_name(void *ud, const char *name)
{
    runner *r = ud;
    for (size_t i = 0; i < r->nnames; i++) {
        if (strcmp(r->names[i], name) == 0) {
            return r->names[i];
        }
    }
    char **n = realloc(r->names, (r->nnames + 1) * sizeof(*n));
    if (!n) {
        return NULL;
    }
    r->names = n;
    if (!(r->names[r->nnames] = strdup(name))) {
        return NULL;
    }
    return r->names[r->nnames++];
}

int sl_replay_next(runner *r, sl_record *rec, uint64_t *next_pos, sl_error *err)
{
    if (r->next_item >= r->nitems) {
        return 0;
    }
    replay_item *it = &r->items[r->next_item++];
    if (sl_record_from_json(rec, it->record, intern_name, r, err) < 0) {
        sl_record_reject(rec, it->stage, "stored record cannot be rebuilt: %s", err->msg);
    }
    rec->pos = (uint64_t)it->id;
    rec->line = it->line;
    rec->stage = (int8_t)it->stage;
    rec->action = it->action;
    *next_pos = (uint64_t)it->id + 1;
    return 1;
}

void sl_replay_free(runner *r)
{
    for (size_t i = 0; i < r->nitems; i++) {
        free(r->items[i].record);
    }
    free(r->items);
    for (size_t i = 0; i < r->nnames; i++) {
        free(r->names[i]);
    }
    free(r->names);
}
