/*
 * stashd-bench's entry point: parses the command line into a bench_cfg,
 * runs the load (or the restart probe) and prints a human summary plus one
 * machine-readable RESULT line that compare.sh parses. Bad usage exits 64,
 * a failed run 1.
 */
#include "benchmarks/bench.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_USAGE 64

enum long_only {
    OPT_WINDOW = 256,
    OPT_KEY_SIZE,
    OPT_PREFILL_DEPTH,
    OPT_VERIFY,
    OPT_SEED,
    OPT_SERVER_PID,
    OPT_LABEL,
    OPT_WAIT_HIT,
    OPT_WAIT_LISTEN,
    OPT_TIMEOUT,
    OPT_PROBE_KEY,
    OPT_STALL,
    OPT_PIN,
    OPT_PER_THREAD
};

static const struct option longopts[] = {
    { "server",        required_argument, NULL, 's' },
    { "protocol",      required_argument, NULL, 'P' },
    { "conns",         required_argument, NULL, 'c' },
    { "threads",       required_argument, NULL, 'T' },
    { "depth",         required_argument, NULL, 'd' },
    { "window",        no_argument,       NULL, OPT_WINDOW },
    { "ratio",         required_argument, NULL, 'r' },
    { "value",         required_argument, NULL, 'v' },
    { "keys",          required_argument, NULL, 'k' },
    { "key-size",      required_argument, NULL, OPT_KEY_SIZE },
    { "dist",          required_argument, NULL, 'z' },
    { "prefill",       no_argument,       NULL, 'p' },
    { "prefill-depth", required_argument, NULL, OPT_PREFILL_DEPTH },
    { "verify",        no_argument,       NULL, OPT_VERIFY },
    { "warmup",        required_argument, NULL, 'w' },
    { "duration",      required_argument, NULL, 'D' },
    { "seed",          required_argument, NULL, OPT_SEED },
    { "server-pid",    required_argument, NULL, OPT_SERVER_PID },
    { "label",         required_argument, NULL, OPT_LABEL },
    { "wait-hit",      no_argument,       NULL, OPT_WAIT_HIT },
    { "wait-listen",   no_argument,       NULL, OPT_WAIT_LISTEN },
    { "timeout",       required_argument, NULL, OPT_TIMEOUT },
    { "probe-key",     required_argument, NULL, OPT_PROBE_KEY },
    { "pin",           no_argument,       NULL, OPT_PIN },
    { "per-thread",    no_argument,       NULL, OPT_PER_THREAD },
    { "stall",         required_argument, NULL, OPT_STALL },
    { "help",          no_argument,       NULL, 'h' },
    { NULL, 0, NULL, 0 }
};

static void
usage(FILE *out)
{
    fprintf(out,
"usage: stashd-bench [options]                       run a load\n"
"       stashd-bench --wait-hit [options] [-- CMD..] time to the first hit\n"
"\n"
"  -s, --server HOST:PORT   server (127.0.0.1:11211)\n"
"  -P, --protocol P         binary | text (binary)\n"
"  -c, --conns N            connections, spread over the threads (50)\n"
"  -T, --threads N          client threads, one epoll loop each (1)\n"
"      --pin                pin client thread i to CPU i mod CPUs (as\n"
"                           memcaslap does)\n"
"      --per-thread         also print ops and latency per client thread\n"
"                           (a tail that only some threads see is the\n"
"                           scheduler's, not the server's)\n"
"  -d, --depth N            requests in flight per connection (1)\n"
"      --window             refill after every read (memtier-style) instead\n"
"                           of after the whole batch is answered\n"
"  -r, --ratio S:G          set:get ratio (1:10)\n"
"  -v, --value N|MIN-MAX    value bytes, fixed or uniform in a range (32)\n"
"  -k, --keys N             key space (100000)\n"
"      --key-size N         bytes per key, \"key:\" + digits (16)\n"
"  -z, --dist D             uniform | zipf[:THETA] (uniform; theta 0.99)\n"
"  -p, --prefill            set every key once before the load\n"
"      --prefill-depth N    pipeline depth of prefill and verify (64)\n"
"      --verify             get every key once after prefill, report hits\n"
"  -w, --warmup SECS        load before measuring (2)\n"
"  -D, --duration SECS      measured load; 0 = prefill/verify only (10)\n"
"      --seed N             random seed (1)\n"
"      --stall SECS         fail if replies stop coming for SECS (10)\n"
"      --server-pid PID     also report the server's CPU per op\n"
"      --label TEXT         echoed in the RESULT line\n"
"      --wait-hit           probe: get --probe-key until it hits; with\n"
"                           -- CMD.., start CMD first and time from fork\n"
"      --wait-listen        probe: stop at the first accepted connection\n"
"      --timeout SECS       probe deadline (60)\n"
"      --probe-key N        key index the probe asks for (0)\n"
"\n"
"Prints a summary and one line:\n"
"RESULT label= proto= conns= threads= depth= ratio= value= keys= dist=\n"
"  secs= ops= ops_s= hit= p50_us= p90_us= p99_us= p999_us= max_us=\n"
"  mean_us= errors= client_cpu_ns_op= server_cpu_ns_op= prefill_s=\n"
"  verify_hit=\n");
}

static int
parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s == NULL || *s < '0' || *s > '9') {
        return -1;
    }
    v = strtoull(s, &end, 10);
    if (*end == 'k' || *end == 'K') {
        v *= 1000;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        v *= 1000000;
        end++;
    }
    if (*end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

static int
parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    uint64_t v;

    if (parse_u64(s, lo, hi, &v) != 0) {
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int
parse_secs(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end != '\0' || v < 0 || v > 86400) {
        return -1;
    }
    *out = v;
    return 0;
}

static int
parse_server(char *s, struct bench_cfg *c)
{
    char *colon = strrchr(s, ':');

    if (colon == NULL) {
        c->host = s;
        return 0;
    }
    *colon = '\0';
    c->host = *s ? s : "127.0.0.1";
    c->port = colon + 1;
    return *c->port ? 0 : -1;
}

static int
parse_ratio(const char *s, struct bench_cfg *c)
{
    char buf[64], *colon;

    snprintf(buf, sizeof(buf), "%s", s);
    colon = strchr(buf, ':');
    if (colon == NULL) {
        return -1;
    }
    *colon = '\0';
    if (parse_u32(buf, 0, 1000000, &c->set_weight) != 0 ||
        parse_u32(colon + 1, 0, 1000000, &c->get_weight) != 0 ||
        c->set_weight + c->get_weight == 0) {
        return -1;
    }
    return 0;
}

static int
parse_value(const char *s, struct bench_cfg *c)
{
    char buf[64], *dash;

    snprintf(buf, sizeof(buf), "%s", s);
    dash = strchr(buf, '-');
    if (dash == NULL) {
        if (parse_u32(buf, 0, 64 << 20, &c->vmin) != 0) {
            return -1;
        }
        c->vmax = c->vmin;
        return 0;
    }
    *dash = '\0';
    if (parse_u32(buf, 0, 64 << 20, &c->vmin) != 0 ||
        parse_u32(dash + 1, 0, 64 << 20, &c->vmax) != 0 ||
        c->vmin > c->vmax) {
        return -1;
    }
    return 0;
}

static int
parse_dist(const char *s, struct bench_cfg *c)
{
    char *end;

    if (strcmp(s, "uniform") == 0) {
        c->dist = BENCH_UNIFORM;
        return 0;
    }
    if (strncmp(s, "zipf", 4) != 0) {
        return -1;
    }
    c->dist = BENCH_ZIPF;
    if (s[4] == '\0') {
        return 0;
    }
    if (s[4] != ':') {
        return -1;
    }
    c->theta = strtod(s + 5, &end);
    return *end == '\0' && c->theta > 0 && c->theta < 1 ? 0 : -1;
}

static int
bad(const char *opt, const char *val)
{
    fprintf(stderr, "stashd-bench: %s: bad value '%s'\n", opt, val);
    return -1;
}

static int
parse_args(int argc, char **argv, struct bench_cfg *c)
{
    uint64_t v;
    int ch;

    memset(c, 0, sizeof(*c));
    c->host = "127.0.0.1";
    c->port = "11211";
    c->conns = 50;
    c->threads = 1;
    c->depth = 1;
    c->set_weight = 1;
    c->get_weight = 10;
    c->vmin = c->vmax = 32;
    c->keys = 100000;
    c->key_size = 16;
    c->theta = 0.99;
    c->prefill_depth = 64;
    c->warmup_s = 2;
    c->duration_s = 10;
    c->seed = 1;
    c->timeout_s = 60;
    c->stall_s = 10;
    while ((ch = getopt_long(argc, argv, "s:P:c:T:d:r:v:k:z:pw:D:h",
                             longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            if (parse_server(optarg, c) != 0) {
                return bad("--server", optarg);
            }
            break;
        case 'P':
            if (strcmp(optarg, "binary") == 0) {
                c->proto = BENCH_BINARY;
            } else if (strcmp(optarg, "text") == 0 ||
                       strcmp(optarg, "ascii") == 0) {
                c->proto = BENCH_TEXT;
            } else {
                return bad("--protocol", optarg);
            }
            break;
        case 'c':
            if (parse_u32(optarg, 1, 100000, &c->conns) != 0) {
                return bad("--conns", optarg);
            }
            break;
        case 'T':
            if (parse_u32(optarg, 1, 1024, &c->threads) != 0) {
                return bad("--threads", optarg);
            }
            break;
        case 'd':
            if (parse_u32(optarg, 1, 65536, &c->depth) != 0) {
                return bad("--depth", optarg);
            }
            break;
        case OPT_WINDOW:
            c->window = true;
            break;
        case 'r':
            if (parse_ratio(optarg, c) != 0) {
                return bad("--ratio", optarg);
            }
            break;
        case 'v':
            if (parse_value(optarg, c) != 0) {
                return bad("--value", optarg);
            }
            break;
        case 'k':
            if (parse_u64(optarg, 1, 1ull << 32, &c->keys) != 0) {
                return bad("--keys", optarg);
            }
            break;
        case OPT_KEY_SIZE:
            if (parse_u32(optarg, 5, 250, &c->key_size) != 0) {
                return bad("--key-size", optarg);
            }
            break;
        case 'z':
            if (parse_dist(optarg, c) != 0) {
                return bad("--dist", optarg);
            }
            break;
        case 'p':
            c->prefill = true;
            break;
        case OPT_PREFILL_DEPTH:
            if (parse_u32(optarg, 1, 65536, &c->prefill_depth) != 0) {
                return bad("--prefill-depth", optarg);
            }
            break;
        case OPT_VERIFY:
            c->verify = true;
            break;
        case 'w':
            if (parse_secs(optarg, &c->warmup_s) != 0) {
                return bad("--warmup", optarg);
            }
            break;
        case 'D':
            if (parse_secs(optarg, &c->duration_s) != 0) {
                return bad("--duration", optarg);
            }
            break;
        case OPT_PIN:
            c->pin = true;
            break;
        case OPT_PER_THREAD:
            c->per_thread = true;
            break;
        case OPT_STALL:
            if (parse_secs(optarg, &c->stall_s) != 0 || c->stall_s <= 0) {
                return bad("--stall", optarg);
            }
            break;
        case OPT_SEED:
            if (parse_u64(optarg, 0, UINT64_MAX, &c->seed) != 0) {
                return bad("--seed", optarg);
            }
            break;
        case OPT_SERVER_PID:
            if (parse_u64(optarg, 1, 1u << 30, &v) != 0) {
                return bad("--server-pid", optarg);
            }
            c->server_pid = (long)v;
            break;
        case OPT_LABEL:
            c->label = optarg;
            break;
        case OPT_WAIT_HIT:
            c->wait_hit = true;
            break;
        case OPT_WAIT_LISTEN:
            c->wait_hit = true;
            c->wait_listen = true;
            break;
        case OPT_TIMEOUT:
            if (parse_secs(optarg, &c->timeout_s) != 0) {
                return bad("--timeout", optarg);
            }
            break;
        case OPT_PROBE_KEY:
            if (parse_u64(optarg, 0, UINT64_MAX, &c->probe_key) != 0) {
                return bad("--probe-key", optarg);
            }
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (optind < argc) {
        if (!c->wait_hit) {
            fprintf(stderr, "stashd-bench: a command (%s) is only taken "
                    "with --wait-hit\n", argv[optind]);
            return -1;
        }
        c->exec_argv = argv + optind;
    }
    if (c->threads > c->conns) {
        c->threads = c->conns;
    }
    if (c->probe_key >= c->keys) {
        return bad("--probe-key", "beyond --keys");
    }
    /* the prefill batch stays under ~1 MB per connection */
    while (c->prefill_depth > 1 &&
           (uint64_t)c->prefill_depth * (c->vmax + 64 + c->key_size) >
               (1u << 20)) {
        c->prefill_depth /= 2;
    }
    return 0;
}

static double
us(uint64_t ns)
{
    return ns / 1000.0;
}

static void
report(const struct bench_cfg *c, const struct bench_report *r)
{
    const struct bench_stats *m = &r->measured;
    const struct bench_hist *h = &m->hist;
    double ops_s = r->measured_s > 0 ? m->ops / r->measured_s : 0;
    double hit = m->gets ? (double)m->hits / (double)m->gets : 0;
    const char *dist = c->dist == BENCH_ZIPF ? "zipf" : "uniform";
    char value[48], verify[32];

    if (c->vmin == c->vmax) {
        snprintf(value, sizeof(value), "%u", c->vmin);
    } else {
        snprintf(value, sizeof(value), "%u-%u", c->vmin, c->vmax);
    }
    snprintf(verify, sizeof(verify), "%.6f", r->verify_gets ?
             (double)r->verify_hits / (double)r->verify_gets : -1.0);
    if (c->prefill) {
        printf("prefill: %llu sets (%llu refused) in %.2f s\n",
               (unsigned long long)r->prefill_sets,
               (unsigned long long)r->prefill_errors, r->prefill_s);
    }
    if (c->verify) {
        printf("verify: %llu of %llu keys hit in %.2f s\n",
               (unsigned long long)r->verify_hits,
               (unsigned long long)r->verify_gets, r->verify_s);
    }
    if (c->duration_s > 0) {
        printf("%s %s:%s  %u conns / %u threads, depth %u%s, set:get %u:%u, "
               "value %s B, %llu keys %s\n",
               c->proto == BENCH_TEXT ? "text" : "binary", c->host, c->port,
               c->conns, c->threads, c->depth, c->window ? " (window)" : "",
               c->set_weight, c->get_weight, value,
               (unsigned long long)c->keys, dist);
        printf("  %.0f ops/s over %.2f s (%llu gets, %llu sets, "
               "%llu errors), hit rate %.4f\n", ops_s, r->measured_s,
               (unsigned long long)m->gets, (unsigned long long)m->sets,
               (unsigned long long)m->errors, hit);
        printf("  latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  "
               "max %.1f  mean %.1f\n",
               us(bench_hist_percentile(h, 50)),
               us(bench_hist_percentile(h, 90)),
               us(bench_hist_percentile(h, 99)),
               us(bench_hist_percentile(h, 99.9)), us(h->max),
               h->count ? us(h->sum / h->count) : 0.0);
        printf("  client CPU %.0f ns/op (%.0f%% of one core)",
               m->ops ? r->client_cpu_s * 1e9 / m->ops : 0,
               r->measured_s > 0 ? 100 * r->client_cpu_s / r->measured_s : 0);
        if (r->server_cpu_s >= 0) {
            printf(", server CPU %.0f ns/op (%.0f%% of one core)",
                   m->ops ? r->server_cpu_s * 1e9 / m->ops : 0,
                   100 * r->server_cpu_s / r->measured_s);
        }
        printf("\n");
    }
    printf("RESULT label=%s proto=%s conns=%u threads=%u depth=%u ratio=%u:%u "
           "value=%s keys=%llu dist=%s secs=%.2f ops=%llu ops_s=%.0f "
           "hit=%.6f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f "
           "max_us=%.1f mean_us=%.1f errors=%llu client_cpu_ns_op=%.0f "
           "server_cpu_ns_op=%.0f prefill_s=%.3f prefill_errors=%llu "
           "verify_hit=%s\n",
           c->label ? c->label : "-", c->proto == BENCH_TEXT ? "text"
           : "binary", c->conns, c->threads, c->depth, c->set_weight,
           c->get_weight, value, (unsigned long long)c->keys, dist,
           r->measured_s, (unsigned long long)m->ops, ops_s, hit,
           us(bench_hist_percentile(h, 50)), us(bench_hist_percentile(h, 90)),
           us(bench_hist_percentile(h, 99)),
           us(bench_hist_percentile(h, 99.9)), us(h->max),
           h->count ? us(h->sum / h->count) : 0.0,
           (unsigned long long)m->errors,
           m->ops ? r->client_cpu_s * 1e9 / m->ops : 0,
           m->ops && r->server_cpu_s >= 0 ? r->server_cpu_s * 1e9 / m->ops
                                          : -1.0,
           r->prefill_s, (unsigned long long)r->prefill_errors, verify);
}

int
main(int argc, char **argv)
{
    struct bench_cfg cfg;
    struct bench_gen gen;
    static struct bench_report rep;     /* histograms: keep off the stack */
    int rc;

    if (parse_args(argc, argv, &cfg) != 0) {
        fprintf(stderr, "Try 'stashd-bench --help'.\n");
        return EXIT_USAGE;
    }
    if (bench_gen_init(&gen, &cfg) != 0) {
        bench_gen_deinit(&gen);
        return EXIT_USAGE;
    }
    if (cfg.wait_hit) {
        rc = bench_probe(&cfg, &gen);
    } else {
        rc = bench_run(&cfg, &gen, &rep);
        if (rc == 0) {
            report(&cfg, &rep);
        }
    }
    bench_gen_deinit(&gen);
    return rc == 0 ? 0 : 1;
}
