/*
 * handler.c - the program an inetd-style server execs with the connected
 * socket as its stdin and stdout (claim C14: descriptors survive exec).
 *
 * Reports, on the report descriptor ($VERIFIER_REPORT_FD, or --report-fd N,
 * else stderr), getsockname and getpeername of fd 0, then writes --send STR
 * to fd 1, reads fd 0 until EOF unless --no-read, and closes 0 and 1.  Each
 * report line carries this process's pid, which equals the forked child's:
 * exec keeps the pid.
 * Exit: 0 ok, 1 a call failed, 2 bad usage.
 */
#define _GNU_SOURCE
#include "report.h"

#include <getopt.h>

static void usage(FILE *out)
{
    fprintf(out,
        "usage: handler [--send STR] [--no-read] [--report-fd N]\n"
        "Serve the connection on stdin/stdout (as exec'd by an inetd-style server),\n"
        "reporting each socket call as a JSON line.\n"
        "  -s, --send STR     write STR to stdout (the socket)\n"
        "      --no-read      do not read stdin until EOF before closing\n"
        "      --report-fd N  report descriptor (default $VERIFIER_REPORT_FD, else 2)\n"
        "  -h, --help         this help\n");
}

enum { OPT_NOREAD = 256, OPT_REPFD };

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"send", required_argument, 0, 's'},
        {"no-read", no_argument, 0, OPT_NOREAD},
        {"report-fd", required_argument, 0, OPT_REPFD},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *send = NULL;
    int no_read = 0;
    prog_name = "handler";
    const char *env = getenv("VERIFIER_REPORT_FD");
    if (env)
        set_report_fd(env);
    else
        report_fd = 2;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":s:h", opts, NULL)) != -1) {
        switch (c) {
        case 's': send = optarg; break;
        case OPT_NOREAD: no_read = 1; break;
        case OPT_REPFD: set_report_fd(optarg); break;
        case 'h': usage(stdout); return 0;
        default: bad_option(c, argv);
        }
    }
    if (optind != argc)
        die_usage("unexpected argument '%s'", argv[optind]);
    int failed = 0;
    if (rep_getname(0, 0, NULL) < 0 || rep_getname(0, 1, NULL) < 0)
        failed = 1;
    if (send && rep_write_all(1, send, strlen(send)) < 0)
        failed = 1;
    if (!no_read) {
        char buf[4096];
        ssize_t n;
        while ((n = rep_read(0, buf, sizeof buf)) > 0)
            ;
        if (n < 0)
            failed = 1;
    }
    if (rep_close(0) < 0 || rep_close(1) < 0)
        failed = 1;
    return failed;
}
