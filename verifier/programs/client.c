/*
 * client.c - TCP client for the verifier's testbeds.
 *
 * Does exactly what its flags ask and reports every socket call it makes as
 * one JSON line (see report.h) on the report descriptor (stdout by default).
 *
 * Order of operations:
 *   socket, [setsockopt TCP_SYNCNT], [bind, getsockname], [SIGSTOP itself], connect
 *   (on failure: [connect again with --connect-twice], close, exit 1)
 *   getsockname, getpeername, [write --send], [shutdown SHUT_WR],
 *   [read until EOF], [sleep --hold-ms], [setsockopt SO_LINGER], close
 *
 * Exit status: 0 all went as requested; 1 a socket call failed (connect
 * refused/timed out, read reset, ...), everything still reported; 2 bad usage.
 */
#define _GNU_SOURCE
#include "report.h"

#include <getopt.h>
#include <netinet/tcp.h>
#include <signal.h>

static void usage(FILE *out)
{
    fprintf(out,
        "usage: client [options] ADDR PORT\n"
        "       client [options] --connect ADDR PORT\n"
        "Connect a TCP socket to ADDR PORT (numeric) and report every socket call\n"
        "as one JSON line on the report descriptor.\n"
        "  -f, --family 4|6        address family (default 4)\n"
        "  -c, --connect ADDR      address to connect to (or give it positionally)\n"
        "  -b, --bind ADDR:PORT    bind before connect (PORT may be 0; IPv6 as [::1]:0)\n"
        "      --syncnt N          setsockopt(IPPROTO_TCP, TCP_SYNCNT, N) before connect\n"
        "      --stop-before-connect  stop (SIGSTOP itself) right before connect(): a\n"
        "                          test lets it go on with SIGCONT, and connect() follows\n"
        "                          at once, with no program start in between\n"
        "      --connect-twice     after a failed connect(), call connect() again on the\n"
        "                          same socket and report what it returns\n"
        "  -s, --send STR          write STR after connecting\n"
        "      --shutdown-wr       shutdown(SHUT_WR) after --send (half-close)\n"
        "  -r, --read              read until EOF (or error), reporting each read\n"
        "      --hold-ms N         sleep N ms before closing\n"
        "      --linger-abort      SO_LINGER {1,0} before close (close sends RST)\n"
        "      --report-fd N       write the JSON report lines to fd N (default 1)\n"
        "  -h, --help              this help\n"
        "Exit: 0 ok, 1 a socket call failed, 2 bad usage.\n");
}

enum { OPT_SYNCNT = 256, OPT_TWICE, OPT_SHUTWR, OPT_HOLD, OPT_LINGER, OPT_REPFD, OPT_STOP };

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"family", required_argument, 0, 'f'},
        {"connect", required_argument, 0, 'c'},
        {"bind", required_argument, 0, 'b'},
        {"syncnt", required_argument, 0, OPT_SYNCNT},
        {"connect-twice", no_argument, 0, OPT_TWICE},
        {"stop-before-connect", no_argument, 0, OPT_STOP},
        {"send", required_argument, 0, 's'},
        {"shutdown-wr", no_argument, 0, OPT_SHUTWR},
        {"read", no_argument, 0, 'r'},
        {"hold-ms", required_argument, 0, OPT_HOLD},
        {"linger-abort", no_argument, 0, OPT_LINGER},
        {"report-fd", required_argument, 0, OPT_REPFD},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int family = AF_INET, syncnt = -1, twice = 0, shut_wr = 0, do_read = 0;
    int linger = 0, stop_before_connect = 0;
    long hold = 0;
    const char *connect_addr = NULL, *bind_spec = NULL, *send_str = NULL;

    prog_name = "client";
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":f:c:b:s:rh", opts, NULL)) != -1) {
        switch (c) {
        case 'f': family = parse_family(optarg); break;
        case 'c': connect_addr = optarg; break;
        case 'b': bind_spec = optarg; break;
        case OPT_SYNCNT: syncnt = (int)parse_long("--syncnt", optarg, 1, 255); break;
        case OPT_TWICE: twice = 1; break;
        case OPT_STOP: stop_before_connect = 1; break;
        case 's': send_str = optarg; break;
        case OPT_SHUTWR: shut_wr = 1; break;
        case 'r': do_read = 1; break;
        case OPT_HOLD: hold = parse_long("--hold-ms", optarg, 0, 86400000L); break;
        case OPT_LINGER: linger = 1; break;
        case OPT_REPFD: set_report_fd(optarg); break;
        case 'h': usage(stdout); return 0;
        default: bad_option(c, argv);
        }
    }
    const char *addr, *port;
    addr_port_operands(argc, argv, "--connect", connect_addr, &addr, &port);
    struct sockaddr_storage peer, local;
    socklen_t peer_len = make_addr(family, addr, port, &peer), local_len = 0;
    if (bind_spec)
        local_len = parse_addr_port(family, bind_spec, &local);

    signal(SIGPIPE, SIG_IGN);        /* a write after RST reports EPIPE */

    int failed = 0;
    int fd = rep_socket(family);
    if (fd < 0)
        return 1;
    if (syncnt > 0 &&
        rep_setsockopt_int(fd, IPPROTO_TCP, "IPPROTO_TCP", TCP_SYNCNT, "TCP_SYNCNT", syncnt) < 0)
        failed = 1;
    if (bind_spec) {
        if (rep_bind(fd, &local, local_len) < 0) {
            rep_close(fd);
            return 1;
        }
        rep_getname(fd, 0, NULL);
    }
    if (stop_before_connect)
        raise(SIGSTOP);                      /* the test says when: SIGCONT */
    if (rep_connect(fd, &peer, peer_len) < 0) {
        if (twice)
            rep_connect(fd, &peer, peer_len);
        rep_close(fd);
        return 1;
    }
    if (rep_getname(fd, 0, NULL) < 0 || rep_getname(fd, 1, NULL) < 0)
        failed = 1;
    if (send_str && rep_write_all(fd, send_str, strlen(send_str)) < 0)
        failed = 1;
    if (shut_wr && rep_shutdown(fd, SHUT_WR) < 0)
        failed = 1;
    if (do_read) {
        char buf[4096];
        for (;;) {
            ssize_t n = rep_read(fd, buf, sizeof buf);
            if (n > 0)
                continue;
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                failed = 1;
            break;
        }
    }
    if (hold > 0)
        hold_ms(hold);
    if (linger && rep_linger_abort(fd) < 0)
        failed = 1;
    if (rep_close(fd) < 0)
        failed = 1;
    return failed;
}
