/* sql_table, Redshift dialect: the COPY path (to come). */
#include "rs.h"

int rs_copy_init(rsb *p, sl_error *err)
{
    (void)err;
    p->copy = NULL;
    return 0;
}

int rs_copy_stage(rsb *p, sl_error *err)
{
    (void)p;
    (void)err;
    return 0;
}

sl_verdict rs_copy_batch(rsb *p, sl_batch *b, sl_error *err)
{
    return rs_insert_batch(p, b, err);
}

int rs_copy_load(rsb *p, sl_error *err)
{
    (void)p;
    (void)err;
    return 0;
}

void rs_copy_done(rsb *p)
{
    (void)p;
}

void rs_copy_abort(rsb *p)
{
    (void)p;
}

void rs_copy_free(rsb *p)
{
    (void)p;
}
