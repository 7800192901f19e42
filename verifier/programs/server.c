/*
 * server.c - TCP server for the verifier's testbeds.
 *
 * Reports every socket call it makes as one JSON line (see report.h) on the
 * report descriptor (stdout by default).  The "listen" line is the readiness
 * line: once it is written the socket listens.
 *
 * Order of operations:
 *   socket, [setsockopt SO_REUSEADDR], bind, getsockname, listen,
 *   then --accept N times: accept, and
 *     iterative: serve the connection, then accept the next one;
 *     fork:      fork (reported by the parent, with the child's pid); the
 *                child closes the listening socket, serves and exits; the
 *                parent closes its copy of the connected socket;
 *     exec:      as fork, but the child (inetd-style) makes the connected
 *                socket its stdin and stdout and execs the program given
 *                after "--" (reported as an "execve" line written just
 *                before the call; the report descriptor stays open across
 *                the exec and its number is in $VERIFIER_REPORT_FD);
 *     batch:     accept all N connections first (distinct descriptors, all
 *                open at once), then serve them one after another;
 *   close the listening socket; in fork mode wait until every child exited.
 * Serving a connection:
 *   getsockname, getpeername, [write --send],
 *   read until EOF (--echo: writing each chunk back; --close-unread: no
 *   reading at all), [sleep --hold-ms], [setsockopt SO_LINGER], close.
 *
 * SIGTERM/SIGINT: stop (interrupting a blocked accept/read), close what is
 * open (reported), make fork-mode children stop too, exit 0.
 * Exit status otherwise: 0 no reported call failed; 1 some call failed (or a
 * child did); 2 bad usage.
 */
#define _GNU_SOURCE
#include "report.h"

#include <getopt.h>
#include <signal.h>
#include <sys/wait.h>

static void usage(FILE *out)
{
    fprintf(out,
        "usage: server [options] ADDR PORT [-- PROGRAM ARGS...]\n"
        "       server [options] --listen ADDR PORT [-- PROGRAM ARGS...]\n"
        "Listen on ADDR PORT (numeric; 0.0.0.0 or :: for the wildcard, PORT may be 0)\n"
        "and report every socket call as one JSON line on the report descriptor.\n"
        "  -f, --family 4|6        address family (default 4)\n"
        "  -l, --listen ADDR       address to listen on (or give it positionally)\n"
        "      --backlog N         listen() backlog (default 128)\n"
        "  -n, --accept N          connections to accept, then exit (default 1;\n"
        "                          0 = listen, never accept, run until SIGTERM)\n"
        "  -m, --mode iterative|fork|exec|batch\n"
        "                          serve in the process itself (iterative), fork a\n"
        "                          child per connection (fork), fork and exec the\n"
        "                          program given after -- with the connection as\n"
        "                          stdin/stdout (exec, inetd-style), or accept all N\n"
        "                          first and then serve them (batch); default iterative\n"
        "      --cloexec           exec mode: set FD_CLOEXEC on stdin/stdout first\n"
        "      --delay-accept-ms N sleep N ms after listen() before the first accept()\n"
        "      --stop-after-listen stop (SIGSTOP itself) right after listen(), before any\n"
        "                          accept(): a test lets it go on with SIGCONT\n"
        "  -e, --echo              write back what is read, until EOF\n"
        "  -s, --send STR          write STR after accepting\n"
        "      --close-unread      close without reading what the peer sent\n"
        "      --linger-abort      SO_LINGER {1,0} before close (close sends RST)\n"
        "      --hold-ms N         sleep N ms before closing a connection\n"
        "      --reuseaddr         setsockopt SO_REUSEADDR before bind\n"
        "      --report-fd N       write the JSON report lines to fd N (default 1)\n"
        "  -h, --help              this help\n"
        "Exit: 0 ok (and on SIGTERM), 1 a socket call failed, 2 bad usage.\n");
}

enum { MODE_ITERATIVE, MODE_FORK, MODE_EXEC, MODE_BATCH };

static struct {
    int echo, close_unread, linger, fork_mode, mode, cloexec;
    long hold, delay_accept;
    const char *send;
    char **exec_argv;
} cfg;

/* ------------------------------------------------------------- signals */

static void on_term(int sig)
{
    (void)sig;
    stop_requested = 1;
    /* If the signal landed between a check of stop_requested and the
     * blocking call, SIGALRM interrupts that call a second later. */
    alarm(1);
}

static void on_alarm(int sig)
{
    (void)sig;
    if (stop_requested)
        alarm(1);
}

/* Fork mode bookkeeping, updated by the SIGCHLD handler. */
static pid_t *children;
static long n_children;
static volatile sig_atomic_t live_children, child_failed;

static void note_exit(pid_t pid, int status)
{
    for (long i = 0; i < n_children; i++) {
        if (children[i] == pid) {
            children[i] = 0;
            live_children--;
            break;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        child_failed = 1;
}

static void on_chld(int sig)
{
    (void)sig;
    int saved = errno, status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        note_exit(pid, status);
    errno = saved;
}

static void handle(int sig, void (*fn)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static void block_chld(int how)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGCHLD);
    sigprocmask(how, &s, NULL);
}

static void forward_term(void)
{
    block_chld(SIG_BLOCK);
    for (long i = 0; i < n_children; i++)
        if (children[i] > 0)
            kill(children[i], SIGTERM);
    block_chld(SIG_UNBLOCK);
}

/* ------------------------------------------------------------- serving */

/* Serve one connected socket and close it; returns 1 if a call failed. */
static int serve(int cfd)
{
    int failed = 0;
    if (rep_getname(cfd, 0, NULL) < 0 || rep_getname(cfd, 1, NULL) < 0)
        failed = 1;
    if (!stop_requested && cfg.send && rep_write_all(cfd, cfg.send, strlen(cfg.send)) < 0)
        failed = 1;
    if (!cfg.close_unread) {
        char buf[4096];
        while (!stop_requested) {
            ssize_t n = rep_read(cfd, buf, sizeof buf);
            if (n > 0) {
                if (cfg.echo && rep_write_all(cfd, buf, (size_t)n) < 0) {
                    failed = 1;
                    break;
                }
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;                    /* loop re-checks stop_requested */
            if (n < 0)
                failed = 1;
            break;
        }
    }
    if (cfg.hold > 0 && !stop_requested)
        hold_ms(cfg.hold);
    if (cfg.linger && rep_linger_abort(cfd) < 0)
        failed = 1;
    if (rep_close(cfd) < 0)
        failed = 1;
    return failed;
}

static int do_accept(int lfd)
{
    long long t0, t1;
    int err, cfd;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    TIMED(cfd, accept(lfd, (struct sockaddr *)&ss, &len));
    struct report r;
    r_begin(&r, "accept");
    r_int(&r, "fd", lfd);
    r_result(&r, cfd, err, t0, t1);
    if (cfd >= 0) {
        r_addr(&r, &ss);
        r_int(&r, "conn_fd", cfd);
    }
    r_emit(&r);
    errno = err;
    return cfd;
}

static pid_t do_fork(void)
{
    long long t0, t1;
    int err;
    pid_t pid;
    TIMED(pid, fork());
    if (pid == 0)
        return 0;                            /* the parent reports the fork */
    struct report r;
    r_begin(&r, "fork");
    r_result(&r, pid, err, t0, t1);
    if (pid > 0)
        r_int(&r, "child", pid);
    r_emit(&r);
    errno = err;
    return pid;
}

/* Fork mode: wait until every child exited, forwarding a SIGTERM. */
static void wait_children(void)
{
    block_chld(SIG_BLOCK);
    handle(SIGCHLD, SIG_DFL, 0);
    block_chld(SIG_UNBLOCK);
    int forwarded = 0;
    while (live_children > 0) {
        if (stop_requested && !forwarded) {
            forward_term();
            forwarded = 1;
        }
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid > 0)
            note_exit(pid, status);
        else if (errno != EINTR)
            break;                           /* ECHILD: nothing left */
    }
}

/* Exec mode, in the child: the connection becomes stdin and stdout, then exec. */
static int exec_handler(int cfd)
{
    /* Keep the report descriptor out of the way of 0 and 1, open across exec. */
    int rfd = fcntl(report_fd, F_DUPFD, 3);
    if (rfd < 0)
        return 1;
    report_fd = rfd;
    char num[16];
    snprintf(num, sizeof num, "%d", rfd);
    setenv("VERIFIER_REPORT_FD", num, 1);
    if (dup2(cfd, 0) < 0 || dup2(cfd, 1) < 0)
        return 1;
    if (cfd > 1)
        close(cfd);
    if (cfg.cloexec) {
        long long t0 = now_ns();
        int r0 = fcntl(0, F_SETFD, FD_CLOEXEC), r1 = fcntl(1, F_SETFD, FD_CLOEXEC);
        int err = errno;
        struct report r;
        r_begin(&r, "fcntl");
        r_str(&r, "fds", "0,1");
        r_str(&r, "cmd", "F_SETFD");
        r_str(&r, "arg", "FD_CLOEXEC");
        r_result(&r, (r0 < 0 || r1 < 0) ? -1 : 0, err, t0, now_ns());
        r_emit(&r);
    }
    struct report r;
    long long t0 = now_ns();
    r_begin(&r, "execve");
    r_str(&r, "path", cfg.exec_argv[0]);
    r_int(&r, "stdin", 0);
    r_int(&r, "stdout", 1);
    r_result(&r, 0, 0, t0, t0);
    r_emit(&r);
    execvp(cfg.exec_argv[0], cfg.exec_argv);
    int err = errno;                         /* only reached when exec failed */
    r_begin(&r, "execve");
    r_str(&r, "path", cfg.exec_argv[0]);
    r_result(&r, -1, err, t0, now_ns());
    r_emit(&r);
    return 1;
}

enum { OPT_BACKLOG = 256, OPT_UNREAD, OPT_LINGER, OPT_HOLD, OPT_REUSE, OPT_REPFD, OPT_CLOEXEC, OPT_DELAY,
       OPT_STOP };

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"family", required_argument, 0, 'f'},
        {"listen", required_argument, 0, 'l'},
        {"backlog", required_argument, 0, OPT_BACKLOG},
        {"accept", required_argument, 0, 'n'},
        {"mode", required_argument, 0, 'm'},
        {"echo", no_argument, 0, 'e'},
        {"send", required_argument, 0, 's'},
        {"close-unread", no_argument, 0, OPT_UNREAD},
        {"linger-abort", no_argument, 0, OPT_LINGER},
        {"hold-ms", required_argument, 0, OPT_HOLD},
        {"reuseaddr", no_argument, 0, OPT_REUSE},
        {"report-fd", required_argument, 0, OPT_REPFD},
        {"cloexec", no_argument, 0, OPT_CLOEXEC},
        {"delay-accept-ms", required_argument, 0, OPT_DELAY},
        {"stop-after-listen", no_argument, 0, OPT_STOP},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int family = AF_INET, backlog = 128, reuse = 0, stop_after_listen = 0;
    long n_accept = 1;
    const char *listen_addr = NULL;

    prog_name = "server";
    opterr = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {        /* what exec mode runs */
            cfg.exec_argv = argv + i + 1;
            argv[i] = NULL;
            argc = i;
            break;
        }
    }
    int c;
    while ((c = getopt_long(argc, argv, ":f:l:n:m:es:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f': family = parse_family(optarg); break;
        case 'l': listen_addr = optarg; break;
        case OPT_BACKLOG: backlog = (int)parse_long("--backlog", optarg, 0, INT_MAX); break;
        case 'n': n_accept = parse_long("--accept", optarg, 0, 1000000); break;
        case 'm':
            if (!strcmp(optarg, "iterative"))
                cfg.mode = MODE_ITERATIVE;
            else if (!strcmp(optarg, "fork"))
                cfg.mode = MODE_FORK;
            else if (!strcmp(optarg, "exec"))
                cfg.mode = MODE_EXEC;
            else if (!strcmp(optarg, "batch"))
                cfg.mode = MODE_BATCH;
            else
                die_usage("bad --mode '%s' (expected iterative, fork, exec or batch)", optarg);
            cfg.fork_mode = cfg.mode == MODE_FORK || cfg.mode == MODE_EXEC;
            break;
        case 'e': cfg.echo = 1; break;
        case 's': cfg.send = optarg; break;
        case OPT_UNREAD: cfg.close_unread = 1; break;
        case OPT_LINGER: cfg.linger = 1; break;
        case OPT_HOLD: cfg.hold = parse_long("--hold-ms", optarg, 0, 86400000L); break;
        case OPT_REUSE: reuse = 1; break;
        case OPT_REPFD: set_report_fd(optarg); break;
        case OPT_CLOEXEC: cfg.cloexec = 1; break;
        case OPT_DELAY: cfg.delay_accept = parse_long("--delay-accept-ms", optarg, 0, 86400000L); break;
        case OPT_STOP: stop_after_listen = 1; break;
        case 'h': usage(stdout); return 0;
        default: bad_option(c, argv);
        }
    }
    if (cfg.echo && cfg.close_unread)
        die_usage("--echo and --close-unread exclude each other");
    if ((cfg.mode == MODE_EXEC) != (cfg.exec_argv != NULL && cfg.exec_argv[0] != NULL))
        die_usage("--mode exec needs a program after --, and a program after -- needs --mode exec");
    if (cfg.cloexec && cfg.mode != MODE_EXEC)
        die_usage("--cloexec applies to --mode exec only");
    const char *addr, *port;
    addr_port_operands(argc, argv, "--listen", listen_addr, &addr, &port);
    struct sockaddr_storage local;
    socklen_t local_len = make_addr(family, addr, port, &local);

    signal(SIGPIPE, SIG_IGN);
    handle(SIGTERM, on_term, 0);             /* no SA_RESTART: interrupt */
    handle(SIGINT, on_term, 0);
    handle(SIGALRM, on_alarm, 0);
    if (cfg.fork_mode && n_accept > 0) {
        children = calloc((size_t)n_accept, sizeof *children);
        if (!children) {
            perror("server: calloc");
            return 1;
        }
        handle(SIGCHLD, on_chld, SA_RESTART | SA_NOCLDSTOP);
    }

    int lfd = rep_socket(family);
    if (lfd < 0)
        return 1;
    if ((reuse && rep_setsockopt_int(lfd, SOL_SOCKET, "SOL_SOCKET", SO_REUSEADDR,
                                     "SO_REUSEADDR", 1) < 0) ||
        rep_bind(lfd, &local, local_len) < 0 || rep_getname(lfd, 0, NULL) < 0 ||
        rep_listen(lfd, backlog) < 0) {
        rep_close(lfd);
        return 1;
    }

    int failed = 0;
    if (stop_after_listen)
        raise(SIGSTOP);                      /* no race with the test: stopped before accept() */
    if (n_accept == 0) {
        sigset_t none;
        sigemptyset(&none);
        while (!stop_requested)
            sigsuspend(&none);               /* the alarm covers the race */
    }
    if (cfg.delay_accept > 0 && !stop_requested)
        hold_ms(cfg.delay_accept);
    int *batch = NULL;
    long n_batch = 0;
    if (cfg.mode == MODE_BATCH && n_accept > 0 && !(batch = calloc((size_t)n_accept, sizeof *batch))) {
        perror("server: calloc");
        return 1;
    }
    for (long i = 0; i < n_accept && !stop_requested; i++) {
        int cfd = do_accept(lfd);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                i--;                         /* not a connection handed off */
                continue;
            }
            failed = 1;
            break;
        }
        if (cfg.mode == MODE_BATCH) {
            batch[n_batch++] = cfd;
            continue;
        }
        if (!cfg.fork_mode) {
            failed |= serve(cfd);
            continue;
        }
        block_chld(SIG_BLOCK);
        pid_t pid = do_fork();
        if (pid == 0) {
            free(children);
            children = NULL;
            n_children = 0;
            handle(SIGCHLD, SIG_DFL, 0);
            block_chld(SIG_UNBLOCK);
            int f = rep_close(lfd) < 0;
            if (cfg.mode == MODE_EXEC)
                _exit(exec_handler(cfd));
            f |= serve(cfd);
            _exit(f);
        }
        if (pid > 0) {
            children[n_children++] = pid;
            live_children++;
        } else {
            failed = 1;
        }
        block_chld(SIG_UNBLOCK);
        if (rep_close(cfd) < 0)
            failed = 1;
    }
    for (long i = 0; i < n_batch; i++)
        failed |= serve(batch[i]);
    free(batch);
    if (rep_close(lfd) < 0)
        failed = 1;
    if (cfg.fork_mode && n_children > 0)
        wait_children();
    if (stop_requested)
        return 0;
    return failed || child_failed;
}
