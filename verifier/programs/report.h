/*
 * report.h - shared helpers for the verifier's test programs (client.c,
 * server.c): one JSON line per socket call, written with write(2) straight
 * to the report descriptor (no stdio buffering), plus address parsing and
 * formatting.  Every helper is static: each program is one translation unit.
 *
 * A report line looks like
 *   {"pid":123,"call":"connect","args":{"fd":3,"addr":"127.0.0.1","port":5000},
 *    "ret":-1,"errno":"ECONNREFUSED","t_enter_ns":...,"t_return_ns":...}
 * with call-specific result fields (addr, port, fd, child, data) after it.
 */
#ifndef VERIFIER_REPORT_H
#define VERIFIER_REPORT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Lines stay below PIPE_BUF so that lines written by forked children to a
 * shared pipe never interleave. */
#define REPORT_MAX 4000
/* At most this many bytes of read/written payload are echoed in "data". */
#define REPORT_DATA_MAX 256

static int report_fd = 1;
/* Set by a program's SIGTERM/SIGINT handler (server.c); ends hold_ms(). */
static volatile sig_atomic_t stop_requested;
static const char *prog_name = "program";

struct report {
    char buf[REPORT_MAX + 64];
    size_t len;
    int overflow;
    int first;           /* no member written yet in the current object */
};

static inline long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void r_raw(struct report *r, const char *s, size_t n)
{
    if (r->len + n > REPORT_MAX) {
        r->overflow = 1;
        return;
    }
    memcpy(r->buf + r->len, s, n);
    r->len += n;
}

static inline void r_puts(struct report *r, const char *s) { r_raw(r, s, strlen(s)); }

static inline void r_printf(struct report *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void r_printf(struct report *r, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof tmp)
        n = sizeof tmp - 1;
    r_raw(r, tmp, (size_t)n);
}

/* A JSON string literal of arbitrary bytes: printable ASCII as is, the rest
 * as \u00XX (so bytes >= 0x80 map to U+0080..U+00FF, i.e. latin-1). */
static inline void r_jstr(struct report *r, const char *s, size_t n)
{
    r_puts(r, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            r_puts(r, "\\\"");
        else if (c == '\\')
            r_puts(r, "\\\\");
        else if (c == '\n')
            r_puts(r, "\\n");
        else if (c == '\r')
            r_puts(r, "\\r");
        else if (c == '\t')
            r_puts(r, "\\t");
        else if (c < 0x20 || c >= 0x7f)
            r_printf(r, "\\u%04x", c);
        else
            r_raw(r, (const char *)&c, 1);
    }
    r_puts(r, "\"");
}

static inline void r_key(struct report *r, const char *key)
{
    if (!r->first)
        r_puts(r, ",");
    r->first = 0;
    r_jstr(r, key, strlen(key));
    r_puts(r, ":");
}

static inline void r_int(struct report *r, const char *key, long long v)
{
    r_key(r, key);
    r_printf(r, "%lld", v);
}

static inline void r_str(struct report *r, const char *key, const char *v)
{
    r_key(r, key);
    if (v)
        r_jstr(r, v, strlen(v));
    else
        r_puts(r, "null");
}

static inline void r_bytes(struct report *r, const char *key, const char *v, size_t n)
{
    r_key(r, key);
    r_jstr(r, v, n > REPORT_DATA_MAX ? REPORT_DATA_MAX : n);
}

static inline void r_bool(struct report *r, const char *key, int v)
{
    r_key(r, key);
    r_puts(r, v ? "true" : "false");
}

/* Start a line: {"pid":..,"call":"..","args":{ */
static inline void r_begin(struct report *r, const char *call)
{
    r->len = 0;
    r->overflow = 0;
    r->first = 1;
    r_puts(r, "{");
    r_int(r, "pid", (long long)getpid());
    r_str(r, "call", call);
    r_key(r, "args");
    r_puts(r, "{");
    r->first = 1;
}

static inline const char *errno_name(int e);

/* Close "args" and add ret, errno, timestamps. */
static inline void r_result(struct report *r, long long ret, int err,
                     long long t_enter, long long t_return)
{
    r_puts(r, "}");
    r->first = 0;
    r_int(r, "ret", ret);
    r_key(r, "errno");
    if (ret < 0) {
        const char *name = errno_name(err);
        r_jstr(r, name, strlen(name));
    } else {
        r_puts(r, "null");
    }
    r_int(r, "t_enter_ns", t_enter);
    r_int(r, "t_return_ns", t_return);
}

static inline void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;              /* reporting must never kill the program */
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Finish the line and write it with a single write(2). */
static inline void r_emit(struct report *r)
{
    if (r->overflow) {
        /* Cannot happen with the limits above; keep the line valid JSON. */
        r->len = 0;
        r->overflow = 0;
        r->first = 1;
        r_puts(r, "{");
        r_int(r, "pid", (long long)getpid());
        r_str(r, "call", "report-overflow");
        r_key(r, "args");
        r_puts(r, "{}");
        r_int(r, "ret", -1);
        r_str(r, "errno", "E2BIG");
        r_int(r, "t_enter_ns", 0);
        r_int(r, "t_return_ns", 0);
    }
    r->buf[r->len++] = '}';
    r->buf[r->len++] = '\n';
    int saved = errno;
    write_all(report_fd, r->buf, r->len);
    errno = saved;
}

/* ---------------------------------------------------------------- errno */

#define E(x) case x: return #x;
static inline const char *errno_name(int e)
{
    static char other[32];
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
    const char *n = strerrorname_np(e);
    if (n)
        return n;
#endif
    switch (e) {
    E(EPERM) E(ENOENT) E(EINTR) E(EIO) E(EBADF) E(EAGAIN) E(ENOMEM)
    E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(EINVAL) E(ENFILE) E(EMFILE)
    E(ENOSPC) E(EPIPE) E(ENOTSOCK) E(EDESTADDRREQ) E(EMSGSIZE)
    E(EPROTOTYPE) E(ENOPROTOOPT) E(EPROTONOSUPPORT) E(EOPNOTSUPP)
    E(EAFNOSUPPORT) E(EADDRINUSE) E(EADDRNOTAVAIL) E(ENETDOWN)
    E(ENETUNREACH) E(ENETRESET) E(ECONNABORTED) E(ECONNRESET) E(ENOBUFS)
    E(EISCONN) E(ENOTCONN) E(ESHUTDOWN) E(ETIMEDOUT) E(ECONNREFUSED)
    E(EHOSTDOWN) E(EHOSTUNREACH) E(EALREADY) E(EINPROGRESS)
    default:
        snprintf(other, sizeof other, "E%d", e);
        return other;
    }
}
#undef E

/* ------------------------------------------------------------ addresses */

static inline void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void die_usage(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Exactly one line on stderr. */
    for (char *p = msg; *p; p++)
        if (*p == '\n')
            *p = ' ';
    fprintf(stderr, "%s: %s (try --help)\n", prog_name, msg);
    exit(2);
}

/* getopt_long returned ':' (missing argument) or '?' (bad option). */
static inline void bad_option(int c, char **argv) __attribute__((noreturn));
static inline void bad_option(int c, char **argv)
{
    const char *arg = argv[optind - 1];
    int is_long = !strncmp(arg, "--", 2);
    if (c == ':') {
        if (is_long)
            die_usage("option '%s' needs an argument", arg);
        die_usage("option '-%c' needs an argument", optopt);
    }
    if (is_long) {
        if (optopt && strchr(arg, '='))
            die_usage("option '%s' takes no argument", arg);
        die_usage("unknown or ambiguous option '%s'", arg);
    }
    die_usage("unknown option '-%c'", optopt);
}

/* The operands after the options: ADDR PORT, or only PORT when ADDR came with
 * option `opt` (e.g. "--connect") as `opt_addr`. */
static inline void addr_port_operands(int argc, char **argv, const char *opt, const char *opt_addr,
                                      const char **addr, const char **port)
{
    int npos = argc - optind;
    if (opt_addr) {
        if (npos != 1)
            die_usage("expected PORT after %s ADDR (got %d positional arguments)", opt, npos);
        *addr = opt_addr;
        *port = argv[optind];
    } else {
        if (npos != 2)
            die_usage("expected ADDR PORT (got %d positional arguments)", npos);
        *addr = argv[optind];
        *port = argv[optind + 1];
    }
}

static inline long parse_long(const char *what, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die_usage("bad %s '%s' (expected an integer in %ld..%ld)", what, s, lo, hi);
    return v;
}

static inline int parse_family(const char *s)
{
    if (!strcmp(s, "4"))
        return AF_INET;
    if (!strcmp(s, "6"))
        return AF_INET6;
    die_usage("bad --family '%s' (expected 4 or 6)", s);
}

/* Fill *ss from a numeric address of the given family and a port. */
static inline socklen_t make_addr(int family, const char *addr, const char *port,
                           struct sockaddr_storage *ss)
{
    long p = parse_long("port", port, 0, 65535);
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)p);
        if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
            die_usage("bad IPv4 address '%s'", addr);
        return sizeof *sin;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)p);
    if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) != 1)
        die_usage("bad IPv6 address '%s'", addr);
    return sizeof *sin6;
}

/* "ADDR:PORT", "[V6ADDR]:PORT" or "V6ADDR:PORT" (split at the last colon). */
static inline socklen_t parse_addr_port(int family, const char *spec,
                                 struct sockaddr_storage *ss)
{
    char buf[128];
    if (strlen(spec) >= sizeof buf)
        die_usage("bad ADDR:PORT '%s'", spec);
    strcpy(buf, spec);
    char *colon = strrchr(buf, ':');
    if (!colon || colon == buf)
        die_usage("bad ADDR:PORT '%s' (expected e.g. 127.0.0.1:0 or [::1]:0)", spec);
    *colon = '\0';
    char *addr = buf;
    size_t al = strlen(addr);
    if (addr[0] == '[' && al >= 2 && addr[al - 1] == ']') {
        addr[al - 1] = '\0';
        addr++;
    }
    return make_addr(family, addr, colon + 1, ss);
}

/* Numeric host and port of a socket address. */
static inline void addr_str(const struct sockaddr_storage *ss, char *host, size_t hl,
                     int *port)
{
    host[0] = '\0';
    *port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, host, (socklen_t)hl);
        *port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, (socklen_t)hl);
        *port = ntohs(sin6->sin6_port);
    }
}

static inline void r_addr(struct report *r, const struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN];
    int port;
    addr_str(ss, host, sizeof host, &port);
    r_str(r, "addr", host);
    r_int(r, "port", port);
}

static inline const char *family_name(int f)
{
    return f == AF_INET ? "AF_INET" : f == AF_INET6 ? "AF_INET6" : "AF_UNSPEC";
}

/* -------------------------------------------------- reported socket calls */

#define TIMED(retvar, expr)                                                   \
    do {                                                                      \
        t0 = now_ns();                                                        \
        retvar = (expr);                                                      \
        err = errno;                                                          \
        t1 = now_ns();                                                        \
    } while (0)

static inline int rep_socket(int family)
{
    long long t0, t1;
    int err, fd;
    TIMED(fd, socket(family, SOCK_STREAM, 0));
    struct report r;
    r_begin(&r, "socket");
    r_str(&r, "domain", family_name(family));
    r_str(&r, "type", "SOCK_STREAM");
    r_int(&r, "protocol", 0);
    r_result(&r, fd, err, t0, t1);
    r_emit(&r);
    errno = err;
    return fd;
}

static inline int rep_setsockopt_int(int fd, int level, const char *level_name,
                              int name, const char *opt_name, int value)
{
    long long t0, t1;
    int err, ret;
    TIMED(ret, setsockopt(fd, level, name, &value, sizeof value));
    struct report r;
    r_begin(&r, "setsockopt");
    r_int(&r, "fd", fd);
    r_str(&r, "level", level_name);
    r_str(&r, "name", opt_name);
    r_int(&r, "value", value);
    r_result(&r, ret, err, t0, t1);
    r_emit(&r);
    errno = err;
    return ret;
}

/* SO_LINGER {l_onoff=1, l_linger=0}: close() aborts with an RST. */
static inline int rep_linger_abort(int fd)
{
    long long t0, t1;
    int err, ret;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    TIMED(ret, setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    struct report r;
    r_begin(&r, "setsockopt");
    r_int(&r, "fd", fd);
    r_str(&r, "level", "SOL_SOCKET");
    r_str(&r, "name", "SO_LINGER");
    r_key(&r, "value");
    r_puts(&r, "{");
    r.first = 1;
    r_int(&r, "l_onoff", 1);
    r_int(&r, "l_linger", 0);
    r_puts(&r, "}");
    r.first = 0;
    r_result(&r, ret, err, t0, t1);
    r_emit(&r);
    errno = err;
    return ret;
}

static inline int rep_bind(int fd, const struct sockaddr_storage *ss, socklen_t len)
{
    long long t0, t1;
    int err, ret;
    TIMED(ret, bind(fd, (const struct sockaddr *)ss, len));
    struct report r;
    r_begin(&r, "bind");
    r_int(&r, "fd", fd);
    r_addr(&r, ss);
    r_result(&r, ret, err, t0, t1);
    r_emit(&r);
    errno = err;
    return ret;
}

static inline int rep_connect(int fd, const struct sockaddr_storage *ss, socklen_t len)
{
    long long t0, t1;
    int err, ret;
    TIMED(ret, connect(fd, (const struct sockaddr *)ss, len));
    struct report r;
    r_begin(&r, "connect");
    r_int(&r, "fd", fd);
    r_addr(&r, ss);
    r_result(&r, ret, err, t0, t1);
    r_emit(&r);
    errno = err;
    return ret;
}

static inline int rep_listen(int fd, int backlog)
{
    long long t0, t1;
    int err, ret;
    TIMED(ret, listen(fd, backlog));
    struct report r;
    r_begin(&r, "listen");
    r_int(&r, "fd", fd);
    r_int(&r, "backlog", backlog);
    r_result(&r, ret, err, t0, t1);
    r_emit(&r);
    errno = err;
    return ret;
}

/* getsockname / getpeername: result in "addr" / "port". */
static inline int rep_getname(int fd, int peer, struct sockaddr_storage *out)
{
    long long t0, t1;
    int err, ret;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (peer)
        TIMED(ret, getpeername(fd, (struct sockaddr *)&ss, &len));
    else
        TIMED(ret, getsockname(fd, (struct sockaddr *)&ss, &len));
    struct report r;
    r_begin(&r, peer ? "getpeername" : "getsockname");
    r_int(&r, "fd", fd);
    r_result(&r, ret, err, t0, t1);
    if (ret == 0)
        r_addr(&r, &ss);
    r_emit(&r);
    if (out)
        *out = ss;
    errno = err;
    return ret;
}

static inline ssize_t rep_write(int fd, const char *buf, size_t n)
{
    long long t0, t1;
    int err;
    ssize_t ret;
    TIMED(ret, write(fd, buf, n));
    struct report r;
    r_begin(&r, "write");
    r_int(&r, "fd", fd);
    r_int(&r, "count", (long long)n);
    r_result(&r, ret, err, t0, t1);
    if (ret > 0)
        r_bytes(&r, "data", buf, (size_t)ret);
    r_emit(&r);
    errno = err;
    return ret;
}

/* Write all of buf, one reported write per write(2). */
static inline int rep_write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = rep_write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static inline ssize_t rep_read(int fd, char *buf, size_t n)
{
    long long t0, t1;
    int err;
    ssize_t ret;
    TIMED(ret, read(fd, buf, n));
    struct report r;
    r_begin(&r, "read");
    r_int(&r, "fd", fd);
    r_int(&r, "count", (long long)n);
    r_result(&r, ret, err, t0, t1);
    if (ret > 0)
        r_bytes(&r, "data", buf, (size_t)ret);
    r_emit(&r);
    errno = err;
    return ret;
}

static inline int rep_shutdown(int fd, int how)
{
    long long t0, t1;
    int err, ret;
    TIMED(ret, shutdown(fd, how));
    struct report r;
    r_begin(&r, "shutdown");
    r_int(&r, "fd", fd);
    r_str(&r, "how", how == SHUT_WR ? "SHUT_WR" : how == SHUT_RD ? "SHUT_RD" : "SHUT_RDWR");
    r_result(&r, ret, err, t0, t1);
    r_emit(&r);
    errno = err;
    return ret;
}

static inline int rep_close(int fd)
{
    long long t0, t1;
    int err, ret;
    TIMED(ret, close(fd));
    struct report r;
    r_begin(&r, "close");
    r_int(&r, "fd", fd);
    r_result(&r, ret, err, t0, t1);
    r_emit(&r);
    errno = err;
    return ret;
}

/* Sleep for ms milliseconds (the program's own behaviour, not a sync). */
static inline void hold_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (!stop_requested && nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static inline void set_report_fd(const char *s)
{
    long fd = parse_long("--report-fd", s, 0, INT_MAX);
    if (fd != 1 && fcntl(fd, F_GETFD) < 0)
        die_usage("--report-fd %ld is not an open descriptor", fd);
    report_fd = (int)fd;
}

#endif /* VERIFIER_REPORT_H */
