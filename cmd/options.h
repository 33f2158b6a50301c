/*
 * Command-line options: one table declares every option, its default and
 * its help line; parsing, defaults and --help are all generated from it.
 * Defaults are strings run through the same checks as user input.
 */
#ifndef STASHD_CMD_OPTIONS_H
#define STASHD_CMD_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum opt_type {
    OPT_UINT,    /* decimal, within [min, max] */
    OPT_SIZE,    /* bytes, with an optional k/m/g suffix */
    OPT_DOUBLE,  /* decimal fraction, > min */
    OPT_STR,     /* any text */
    OPT_FLAG,    /* no argument: true when given */
    OPT_COUNT    /* no argument: how many times given (-vv) */
} opt_type_e;

/*        name          short long             type        default    min  max          help */
#define STASHD_OPTIONS(X) \
    X(port,          'p', "port",          OPT_UINT,   "11211",   0, 65535, \
      "TCP port to listen on") \
    X(listen,        'l', "listen",        OPT_STR,    "127.0.0.1", 0, 0, \
      "interface to listen on") \
    X(socketpath,    's', "unix-socket",   OPT_STR,    NULL,      0, 0, \
      "UNIX socket to listen on (disables TCP)") \
    X(udpport,       'U', "udp-port",      OPT_UINT,   "0",       0, 0, \
      "UDP port: only 0 (off) is accepted, stashd speaks TCP only") \
    X(maxconns,      'c', "conn-limit",    OPT_UINT,   "1024",    1, 1000000, \
      "max simultaneous connections") \
    X(threads,       't', "threads",       OPT_UINT,   "4",       1, 256, \
      "worker threads, one event loop each") \
    X(memory,        'm', "memory-limit",  OPT_UINT,   "64",      1, 1048576, \
      "item memory in megabytes") \
    X(noevict,       'M', "disable-evictions", OPT_FLAG, NULL,    0, 0, \
      "return an error on memory exhausted instead of evicting") \
    X(itemmax,       'I', "max-item-size", OPT_SIZE,   "1m",      1024, 1073741824, \
      "largest item, with k/m suffix (1024..1g)") \
    X(factor,        'f', "slab-growth-factor", OPT_DOUBLE, "1.25", 1, 0, \
      "slab chunk size growth factor (> 1)") \
    X(chunkmin,      'n', "slab-min-size", OPT_UINT,   "48",      1, 1048576, \
      "minimum space for key, value and flags in a chunk") \
    X(shutdown,      'A', "enable-shutdown", OPT_FLAG, NULL,      0, 0, \
      "enable the text protocol's shutdown command") \
    X(verbose,       'v', "verbose",       OPT_COUNT,  NULL,      0, 0, \
      "verbose: -v errors and warnings, -vv also every request") \
    X(daemon,        'd', "daemon",        OPT_FLAG,   NULL,      0, 0, \
      "run as a daemon") \
    X(pidfile,       'P', "pidfile",       OPT_STR,    NULL,      0, 0, \
      "save the process id in this file") \
    X(user,          'u', "user",          OPT_STR,    NULL,      0, 0, \
      "when started as root, run as this user") \
    X(backend,        0,  "backend",       OPT_STR,    "lmdb",    0, 0, \
      "storage backend: lmdb | sqlite (persistent) | memory") \
    X(datadir,        0,  "data-dir",      OPT_STR,    "./stashd-data", 0, 0, \
      "data directory of a persistent backend") \
    X(sync,           0,  "sync",          OPT_STR,    "periodic", 0, 0, \
      "durability of a persistent backend: always | periodic | none") \
    X(syncinterval,   0,  "sync-interval", OPT_UINT,   "100",     1, 3600000, \
      "milliseconds between syncs with --sync=periodic") \
    X(version,       'V', "version",       OPT_FLAG,   NULL,      0, 0, \
      "print the version and exit") \
    X(help,          'h', "help",          OPT_FLAG,   NULL,      0, 0, \
      "print this help and exit")

struct opt {
    bool        set;     /* given on the command line */
    uint64_t    u;       /* OPT_UINT, OPT_SIZE, OPT_FLAG, OPT_COUNT */
    double      d;       /* OPT_DOUBLE */
    const char *s;       /* OPT_STR, or NULL */
};

#define OPT_FIELD(n, sh, lg, t, def, mn, mx, h) struct opt n;
struct options {
    STASHD_OPTIONS(OPT_FIELD)
};
#undef OPT_FIELD

/*
 * Fills o from the defaults and argv. On a bad option or value prints a
 * message naming it to err and returns -1.
 */
int options_parse(struct options *o, int argc, char **argv, FILE *err);

/* Prints the usage and every option with its default. */
void options_help(FILE *out);

#endif
