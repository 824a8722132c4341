/* Helpers shared by the files of the config module (not used elsewhere). */
#ifndef SLUICE_CONFIG_INTERNAL_H
#define SLUICE_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

/* Longest dotted key path kept for messages ("pipelines.x.steps[2].types"). */
#define CFG_PATH_MAX 512
/* Longest "file:line:col" kept for sl_opt_where and the *_cfg.where fields. */
#define CFG_WHERE_MAX 160

/* Append one error line "FILE:LINE:COL: PATH: message\n" to errors. The
 * position is left out when line <= 0 (then "FILE: " when file is set) and the
 * path when it is NULL or empty. errors may be NULL (message dropped). */
void cfg_err(sl_buf *errors, const char *file, int line, int col, const char *path, const char *fmt,
             ...) SL_PRINTF(6, 7);
/* Same, with an already formatted "file:line:col" (or "") as position. */
void cfg_errw(sl_buf *errors, const char *where, const char *path, const char *fmt, ...)
    SL_PRINTF(4, 5);

/* Redact registered secrets in errors->data[from..len). Used once validation
 * registered every secret, so a secret echoed earlier is hidden too. */
void cfg_redact_tail(sl_buf *errors, size_t from);

/* Order the message lines in errors->data[from..len) by the line and column
 * of file they name (stable; lines without a position first), so a user
 * reads them top to bottom along the file. */
void cfg_sort_tail(sl_buf *errors, size_t from, const char *file);

/* "file:line:col" into out (cap bytes). */
void cfg_where(char *out, size_t cap, const char *file, int line, int col);

/* path + "." + key (or just key when path is empty) into out. */
void cfg_path_key(char *out, size_t cap, const char *path, const char *key);
/* path + "[i]" into out. */
void cfg_path_index(char *out, size_t cap, const char *path, size_t i);

/* A value quoted for a message: at most ~48 bytes, control characters shown
 * as '?', so one error stays one line. out must hold 64 bytes. */
const char *cfg_quote(const char *s, char *out, size_t cap);

/* Index of key in a MAP node, or -1. */
long cfg_map_find(const sl_node *map, const char *key);

/* Interpolate every scalar under n in place (sl_interpolate). A scalar whose
 * interpolation fails is reported once ("PATH: environment variable X is not
 * set") and its value becomes NULL, which later validation skips silently so
 * one missing variable gives one message. Returns the number of failures. */
int cfg_interpolate_tree(sl_node *n, const char *file, const char *path, sl_buf *errors);

/* How cfg_opts_build treats scalars that carry job variables (node->tmpl). */
typedef enum cfg_tmpl_mode {
    /* The value is final (substituted by sl_config_instantiate): checked
     * like any other; its messages end "(value from job variable {{x}})". */
    CFG_TMPL_CHECK = 0,
    /* The value is still a template (loading a triggered pipeline): the key
     * is checked and the option counts as present, the value is not. */
    CFG_TMPL_DEFER,
} cfg_tmpl_mode;

/* sl_opts_from_node that also returns the options when some had problems
 * (those are left unset, *nbad is non-zero), so the engine's own checks can
 * go on and report everything at once. NULL only when the block itself is
 * unusable (not a mapping, out of memory). */
sl_opts *cfg_opts_build(const sl_option *table, const sl_node *map, const char *file,
                        const char *ctx_name, const char *const *ignore, sl_buf *errors, int *nbad,
                        cfg_tmpl_mode mode);

/* Job variables (template.c). */

/* Interpolate every scalar of a pipeline's body in place, as
 * cfg_interpolate_tree does, and turn values using `{{name}}` into templates
 * (node->tmpl). `{{{{` is a literal `{{` anywhere in the body. A `{{name}}`
 * is allowed only in the options of source, steps and sink (not their
 * `type:`) and only when has_trigger; elsewhere it is reported ("PATH:
 * {{url}} is a job variable, available only in pipelines with a trigger"),
 * as is a malformed reference, and the value becomes NULL (skipped by later
 * validation). Only the text written in the file is scanned: `{{` coming
 * from an environment variable is plain text. *templated is set to 1 when
 * some value became a template. Returns the number of problems. */
int cfg_prepare_pipeline(sl_node *body, const char *file, const char *path, int has_trigger,
                         int *templated, sl_buf *errors);

/* A job's variables, parsed from their JSON object. */
typedef struct cfg_vars cfg_vars;
/* NULL or "" is no variables. Returns NULL with a message on errors when
 * json is not a JSON object. Free with cfg_vars_free. */
cfg_vars *cfg_vars_parse(const char *json, sl_buf *errors);
void cfg_vars_free(cfg_vars *v);

/* Deep copy of a plugin block (the MAP node under source:, steps[i] or
 * sink:) with every template replaced by its text with vars substituted.
 * table is the plugin's: in a secret option, each substituted value is
 * registered with the redactor. An unknown variable (or one holding an
 * object or array) is reported at the value's position and that value
 * becomes NULL; *nbad counts such problems. NULL only when out of memory
 * (reported). The caller owns the copy (sl_node_free). */
sl_node *cfg_subst_block(const sl_node *block, const sl_option *table, const cfg_vars *vars,
                         const char *file, const char *path, sl_buf *errors, int *nbad);

/* Strict number parsers: the whole string must be consumed. 0 ok, -1 invalid. */
int cfg_parse_int(const char *s, int64_t *out);
int cfg_parse_float(const char *s, double *out);

/* Smallest edit distance (with transpositions, case-insensitive) between a
 * and b, capped at cap+1 for speed. */
int cfg_edit_distance(const char *a, const char *b, int cap);

/* Description of what an option of this type accepts, for "(expected ...)". */
const char *cfg_type_expect(const sl_option *opt, char *buf, size_t cap);

#endif
