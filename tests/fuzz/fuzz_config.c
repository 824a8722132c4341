/* libFuzzer harness: the configuration loader over arbitrary bytes.
 *
 * The bytes go through sl_yaml_parse (the YAML tree) and through
 * sl_config_load on a memfd (interpolation, validation, every plugin's
 * option table). A config that loads is also instantiated for a job when its
 * pipeline has a trigger ({{name}} templates). Errors are expected; crashes,
 * leaks, and a refusal without a message are not. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config/config.h"
#include "core/registry.h"
#include "sluice/log.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_config: invariant failed: %s (%s:%d)\n", #cond, __FILE__,        \
                    __LINE__);                                                                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Job variables as the controlshift trigger makes them, plus odd values. */
static const char *const job_vars[] = {
    "{\"url\":\"https://exports.example.com/t.csv\",\"table\":\"signatures\",\"kind\":\"full\","
    "\"mode\":\"replace\",\"compression\":\"none\",\"jid\":\"j-1\"}",
    "{\"url\":\"{{url}}\",\"table\":\"a\\\"b\\nc\",\"mode\":7,\"compression\":null,"
    "\"kind\":true,\"jid\":\"\"}",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    sl_log_level = SL_LOG_ERROR;
    /* The variables the examples use, so their configs load (and reach
     * validation) instead of stopping at interpolation. Fixed: runs are
     * deterministic. */
    setenv("CONTROLSHIFT_WEBHOOK_SECRET", "fuzz-webhook-secret", 1);
    setenv("CONTROLSHIFT_EXPORT_HOSTS", "*.example.com, 127.0.0.1", 1);
    setenv("WAREHOUSE_URL", "/nonexistent/warehouse.db", 1);
    setenv("BRAZE_API_URL", "http://127.0.0.1:9", 1);
    setenv("BRAZE_API_KEY", "fuzz-braze-key", 1);
    setenv("BRAZE_CSV", "/nonexistent/users.csv", 1);
    unsetenv("SLUICE_STATE");
    unsetenv("SLUICE_LISTEN");
    unsetenv("SLACK_WEBHOOK_URL");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_buf errors;
    sl_buf_init(&errors, 0);

    /* 1: the YAML tree alone */
    sl_node *root = sl_yaml_parse((const char *)data, size, "fuzz.yml", &errors);
    if (!root) {
        CHECK(errors.len > 0);
    }
    sl_node_free(root);
    sl_buf_reset(&errors);

    /* 2: the whole loader, from a file */
    int fd = memfd_create("fuzz_config", MFD_CLOEXEC);
    CHECK(fd >= 0);
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        CHECK(w > 0);
        off += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    sl_config *c = sl_config_load(&sl_builtin_plugins, path, NULL, 0, &errors);
    if (!c) {
        CHECK(errors.len > 0);
    } else {
        CHECK(c->npipelines == 0 || c->pipelines != NULL);
        for (size_t i = 0; i < c->npipelines; i++) {
            sl_pipeline_cfg *p = &c->pipelines[i];
            CHECK(p->name && p->source_plugin && p->sink_plugin);
            CHECK(sl_config_pipeline(c, p->name) != NULL);
            if (!p->trigger_plugin) {
                continue;
            }
            for (size_t k = 0; k < sizeof(job_vars) / sizeof(job_vars[0]); k++) {
                sl_buf_reset(&errors);
                sl_pipeline_cfg *q = sl_config_instantiate(c, p, job_vars[k], &errors);
                if (!q) {
                    CHECK(errors.len > 0);
                } else {
                    CHECK(q->source_plugin == p->source_plugin);
                    CHECK(q->sink_plugin == p->sink_plugin);
                    CHECK(q->nsteps == p->nsteps);
                }
                sl_pipeline_cfg_free(q);
            }
        }
    }
    sl_config_free(c);
    close(fd);
    sl_buf_free(&errors);
    /* secret options register values globally: start every input afresh */
    sl_secrets_clear();
    return 0;
}
