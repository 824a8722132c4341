/* kafka_mock: librdkafka's mock cluster on loopback, for the Kafka tests.
 *
 *   kafka_mock [--brokers N] [--topic NAME --partitions P] --port-file FILE
 *
 * Writes the bootstrap servers ("127.0.0.1:p1,127.0.0.1:p2,...") to FILE
 * (via a temporary file and rename, so a reader never sees half of it), then
 * reads commands on stdin, one per line, and answers each on stdout with one
 * line "ok <command>" or "error <command>: <why>":
 *
 *   down ID                       broker ID (1..N) stops answering, connections close
 *   up ID                         broker ID is back
 *   rtt ID MS                     broker ID answers MS milliseconds late
 *   leader TOPIC PARTITION ID     move a partition's leadership to broker ID
 *   produce TOPIC PARTITION KEY VALUE...
 *                                 produce one message (PARTITION -1: by key; VALUE is the
 *                                 rest of the line, sent as is) and wait for its delivery
 *   quit
 *
 * Exits on `quit`, at end of stdin or on SIGTERM/SIGINT. Consumer groups
 * work (JoinGroup/SyncGroup/Heartbeat/LeaveGroup, OffsetCommit/OffsetFetch
 * in librdkafka 2.0.2's mock), topics are auto-created with 4 partitions
 * when a client asks for an unknown one; CreateTopics is not implemented by
 * the 2.0.2 mock, so create topics here with --topic. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: kafka_mock [--brokers N] [--topic NAME --partitions P] "
                    "--port-file FILE\n");
    exit(64);
}

static int write_port_file(const char *path, const char *text)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "kafka_mock: %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    fprintf(f, "%s\n", text);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "kafka_mock: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static rd_kafka_resp_err_t last_dr;
static int dr_seen;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    last_dr = m->err;
    dr_seen = 1;
}

static rd_kafka_t *p;

static rd_kafka_t *producer(const char *bootstraps, char *why, size_t cap)
{
    if (p) {
        return p;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, why, cap) ||
        rd_kafka_conf_set(conf, "message.timeout.ms", "10000", why, cap) ||
        rd_kafka_conf_set(conf, "linger.ms", "0", why, cap)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, cap);
    if (!p) {
        rd_kafka_conf_destroy(conf);
    }
    return p;
}

/* produce TOPIC PARTITION KEY VALUE... */
static int cmd_produce(const char *bootstraps, char *args, char *why, size_t cap)
{
    char *save = NULL;
    char *topic = strtok_r(args, " ", &save);
    char *part = topic ? strtok_r(NULL, " ", &save) : NULL;
    char *key = part ? strtok_r(NULL, " ", &save) : NULL;
    char *value = save;
    if (!topic || !part || !key || !value) {
        snprintf(why, cap, "expected: produce TOPIC PARTITION KEY VALUE");
        return -1;
    }
    if (!producer(bootstraps, why, cap)) {
        return -1;
    }
    dr_seen = 0;
    rd_kafka_resp_err_t e =
        rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION((int32_t)atoi(part)),
                          RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(value, strlen(value)),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (e) {
        snprintf(why, cap, "%s", rd_kafka_err2str(e));
        return -1;
    }
    rd_kafka_flush(p, 15000);
    if (!dr_seen || last_dr) {
        snprintf(why, cap, "not delivered: %s",
                 dr_seen ? rd_kafka_err2str(last_dr) : "no delivery report");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int nbrokers = 3, partitions = 4;
    const char *topic = NULL, *port_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc) {
            nbrokers = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc) {
            topic = argv[++i];
        } else if (strcmp(argv[i], "--partitions") == 0 && i + 1 < argc) {
            partitions = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc) {
            port_file = argv[++i];
        } else {
            usage();
        }
    }
    if (!port_file || nbrokers < 1 || partitions < 1) {
        usage();
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char es[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", es, sizeof(es));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof(es));
    if (!rk) {
        fprintf(stderr, "kafka_mock: %s\n", es);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, nbrokers);
    if (!mc) {
        fprintf(stderr, "kafka_mock: could not create a mock cluster of %d brokers\n", nbrokers);
        return 1;
    }
    if (topic) {
        int repl = nbrokers < 3 ? nbrokers : 3;
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, topic, partitions, repl);
        if (e) {
            fprintf(stderr, "kafka_mock: topic %s: %s\n", topic, rd_kafka_err2str(e));
            return 1;
        }
    }
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (write_port_file(port_file, bootstraps) < 0) {
        return 1;
    }
    fprintf(stderr, "kafka_mock: %d brokers at %s\n", nbrokers, bootstraps);

    char line[65536];
    size_t have = 0;
    while (!stop_flag) {
        struct pollfd pfd = {.fd = 0, .events = POLLIN};
        int n = poll(&pfd, 1, 200);
        if (n < 0 && errno != EINTR) {
            break;
        }
        if (n <= 0) {
            continue;
        }
        ssize_t got = read(0, line + have, sizeof(line) - 1 - have);
        if (got <= 0) {
            break; /* EOF: the test is gone */
        }
        have += (size_t)got;
        line[have] = '\0';
        char *nl;
        int quit = 0;
        while ((nl = strchr(line, '\n')) != NULL) {
            *nl = '\0';
            char cmd[65536], why[512] = "";
            snprintf(cmd, sizeof(cmd), "%s", line);
            int rc = 0;
            int id, part;
            char tname[256];
            if (strncmp(cmd, "down ", 5) == 0 && sscanf(cmd + 5, "%d", &id) == 1) {
                rd_kafka_resp_err_t e = rd_kafka_mock_broker_set_down(mc, id);
                rc = e ? -1 : 0;
                snprintf(why, sizeof(why), "%s", rd_kafka_err2str(e));
            } else if (strncmp(cmd, "up ", 3) == 0 && sscanf(cmd + 3, "%d", &id) == 1) {
                rd_kafka_resp_err_t e = rd_kafka_mock_broker_set_up(mc, id);
                rc = e ? -1 : 0;
                snprintf(why, sizeof(why), "%s", rd_kafka_err2str(e));
            } else if (strncmp(cmd, "rtt ", 4) == 0 && sscanf(cmd + 4, "%d %d", &id, &part) == 2) {
                /* every answer of broker ID comes MS later: a slow cluster */
                rd_kafka_resp_err_t e = rd_kafka_mock_broker_set_rtt(mc, id, part);
                rc = e ? -1 : 0;
                snprintf(why, sizeof(why), "%s", rd_kafka_err2str(e));
            } else if (strncmp(cmd, "leader ", 7) == 0 &&
                       sscanf(cmd + 7, "%255s %d %d", tname, &part, &id) == 3) {
                rd_kafka_resp_err_t e = rd_kafka_mock_partition_set_leader(mc, tname, part, id);
                rc = e ? -1 : 0;
                snprintf(why, sizeof(why), "%s", rd_kafka_err2str(e));
            } else if (strncmp(cmd, "produce ", 8) == 0) {
                char args[65536];
                snprintf(args, sizeof(args), "%s", cmd + 8);
                rc = cmd_produce(bootstraps, args, why, sizeof(why));
            } else if (strcmp(cmd, "quit") == 0) {
                quit = 1;
            } else if (cmd[0]) {
                rc = -1;
                snprintf(why, sizeof(why), "unknown command");
            }
            if (cmd[0]) {
                if (rc == 0) {
                    printf("ok %s\n", cmd);
                } else {
                    printf("error %s: %s\n", cmd, why);
                }
                fflush(stdout);
            }
            size_t used = (size_t)(nl + 1 - line);
            memmove(line, nl + 1, have - used + 1);
            have -= used;
        }
        if (quit) {
            break;
        }
        if (have == sizeof(line) - 1) {
            have = 0; /* an over-long line: dropped */
        }
    }
    if (p) {
        rd_kafka_destroy(p);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
