/*
 * loadgen: mqttd's MQTT load generator (C, no library, Linux).
 *
 * Built by scripts/bench.py with the system compiler:  cc -O2 -pthread -o loadgen loadgen.c
 *
 * Each worker thread (-j) owns a share of the connections and one epoll instance; sockets are
 * non-blocking and edge-triggered, so a connection costs no epoll_ctl after it is registered.
 * Publishers write many PUBLISH packets with one write(); subscribers read up to 256 KiB at a
 * time and answer with one write per read. That keeps the generator's CPU small next to the
 * broker's, which is the point: on a 2-core machine the generator must not take the broker's core.
 *
 * Scenarios (-s):
 *   fan-in   P publishers (-P) on bench/in/<i>  -> 1 subscriber on bench/#
 *   fan-out  1 publisher on bench/out           -> S subscribers (-S)
 *   pairs    N publisher/subscriber pairs (-N) on bench/pair/<i>
 *   conns    C connections (-C), opened -c at a time; held -t seconds (idle-hold);
 *            -t 0 is a pure connection storm. Reports connects/s and broker RSS per connection.
 *
 * Every payload starts with a 24-byte header: magic, publisher index, per-publisher sequence
 * number and the CLOCK_MONOTONIC send time in ns. Subscribers keep one bit per (publisher,
 * sequence) and count lost, duplicated and out-of-order messages, and a latency histogram.
 *
 * Flow control: -w in-flight QoS 1/2 window per publisher (capped by an MQTT 5 server's Receive
 * Maximum); -e end-to-end window: at most E messages per publisher published and not yet received
 * by its subscribers (also bounds QoS 0); -r total offered rate in msgs/s.
 *
 * Output: progress and summary lines on stderr, then ONE line of JSON on stdout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x4c47454eu /* "LGEN" */
#define HDR 24
#define HIST_US 1000000 /* 1 us buckets below 1 s */
#define HIST_MS 600000  /* 1 ms buckets below 600 s */
#define MAX_THREADS 64

enum role { R_IDLE, R_SUB, R_PUB };
enum state { S_NEW, S_CONNECTING, S_CONNACK, S_SUBACK, S_READY, S_FAILED, S_CLOSED };

typedef struct {
    uint8_t *d;
    size_t len, cap;
} buf_t;

/* What one subscriber knows about one publisher's sequence. */
typedef struct {
    uint64_t next;  /* highest sequence seen + 1 */
    uint64_t uniq;  /* distinct sequences received */
    uint8_t *bits;  /* one bit per sequence number */
} track_t;

typedef struct conn {
    int fd, idx, role, state, thread;
    int want_write;
    buf_t in, out;
    /* publisher */
    int pub_i;                   /* index among publishers */
    uint64_t n_total, n_sent;    /* messages to send / sent */
    uint64_t n_done;             /* acknowledged (QoS 1/2) or sent (QoS 0) */
    int inflight, recv_max;
    uint16_t next_pid;
    uint8_t *pid_used;           /* 65536 flags: packet id in flight */
    int nsubs;                   /* subscribers that receive this publisher's messages */
    uint64_t e2e_writeoff;       /* messages given up on after a stall */
    double last_prog;            /* last time the e2e window moved */
    uint64_t last_recv_seen;
    uint8_t *tmpl;               /* encoded PUBLISH without packet id, payload header patched */
    size_t tmpl_len, pid_off, pay_off;
    /* subscriber */
    track_t *track;              /* per publisher (fan-in, fan-out) or one (pairs) */
    char topic[64];
    double last_io;
} conn_t;

typedef struct {
    int id, ep;
    int *conns, nconns;
    int pending;                 /* connects in progress */
    int next_start;              /* next of this thread's connections to start */
    /* statistics, read by the main thread with relaxed atomics */
    uint64_t delivered, dups, ooo, bad, stalls, pub_errs, sent, ready, failed;
    uint32_t *hist_us, *hist_ms;
    uint64_t lat_n, lat_over;
    double lat_sum_us, lat_max_us;
} worker_t;

static struct {
    const char *host, *scen, *label;
    int port, proto, qos, payload, P, S, N, C, conc, keepalive, window, e2e, threads;
    int min_batch, verbose, persist, coalesce_us;
    long M;
    double rate, hold, timeout, drain, stall;
    int bpid, sub_port;
    struct sockaddr_in sa, sa_sub; /* sa_sub: where subscribers connect (-Q), else sa */
    conn_t *c;
    int nc, npubs, nsubs, *pubs, *subs;
    uint64_t expected;
    uint64_t *pub_recv;          /* per publisher: unique deliveries over its subscribers */
    worker_t w[MAX_THREADS];
    volatile int phase;          /* 0 connect subs, 1 connect pubs, 2 run, 3 stop */
    volatile int stop;
    double t0;
    long clk_tck;
    int fanin, fanout, pairs, conns_mode;
} g;

/* ------------------------------------------------------------------ small helpers */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void note(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

/* utime + stime of another process from /proc, or -1. */
static double proc_cpu_s(int pid) {
    if (pid <= 0) return -1;
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')'); /* the command name may contain spaces */
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* fields after ')': state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)g.clk_tck;
}

/* VmRSS of another process in kB, or -1. */
static long proc_rss_kb(int pid) {
    if (pid <= 0) return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kb = atol(line + 6);
            break;
        }
    fclose(f);
    return kb;
}

static void buf_init(buf_t *b, size_t cap) {
    b->d = malloc(cap);
    if (!b->d) die("malloc");
    b->len = 0;
    b->cap = cap;
}

static void buf_reserve(buf_t *b, size_t more) {
    if (b->len + more <= b->cap) return;
    while (b->len + more > b->cap) b->cap *= 2;
    b->d = realloc(b->d, b->cap);
    if (!b->d) die("realloc");
}

static size_t put_varint(uint8_t *p, size_t v) {
    size_t n = 0;
    do {
        uint8_t byte = v % 128;
        v /= 128;
        p[n++] = byte | (v ? 0x80 : 0);
    } while (v);
    return n;
}

static void put16(uint8_t *p, unsigned v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void atomic_add(uint64_t *p, uint64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static uint64_t atomic_get(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* ------------------------------------------------------------------ packets out */

static void send_connect(conn_t *c) {
    uint8_t body[128];
    size_t n = 0;
    char cid[48];
    int cid_len = snprintf(cid, sizeof cid, "lg%d-%c%d", (int)getpid(),
                           c->role == R_PUB ? 'p' : c->role == R_SUB ? 's' : 'i', c->idx);
    int persist = g.persist > 0 && c->role == R_SUB;
    memcpy(body, "\x00\x04MQTT", 6);
    n = 6;
    body[n++] = (uint8_t)g.proto;
    /* 3.1.1: clean session 0 makes the session persistent; 5.0: session expiry does */
    body[n++] = (g.proto == 4 && persist) ? 0x00 : 0x02;
    put16(body + n, (unsigned)g.keepalive);
    n += 2;
    if (g.proto == 5) {
        if (persist) {
            body[n++] = 5; /* properties length */
            body[n++] = 0x11; /* session expiry interval */
            body[n++] = (uint8_t)(g.persist >> 24);
            body[n++] = (uint8_t)(g.persist >> 16);
            body[n++] = (uint8_t)(g.persist >> 8);
            body[n++] = (uint8_t)g.persist;
        } else {
            body[n++] = 0;
        }
    }
    put16(body + n, (unsigned)cid_len);
    n += 2;
    memcpy(body + n, cid, (size_t)cid_len);
    n += (size_t)cid_len;
    buf_reserve(&c->out, n + 5);
    uint8_t *p = c->out.d + c->out.len;
    p[0] = 0x10;
    size_t h = 1 + put_varint(p + 1, n);
    memcpy(p + h, body, n);
    c->out.len += h + n;
}

static void send_subscribe(conn_t *c) {
    size_t tl = strlen(c->topic);
    size_t n = 2 + (g.proto == 5 ? 1 : 0) + 2 + tl + 1;
    buf_reserve(&c->out, n + 5);
    uint8_t *p = c->out.d + c->out.len;
    p[0] = 0x82;
    size_t h = 1 + put_varint(p + 1, n);
    uint8_t *b = p + h;
    put16(b, 1);
    b += 2;
    if (g.proto == 5) *b++ = 0;
    put16(b, (unsigned)tl);
    b += 2;
    memcpy(b, c->topic, tl);
    b += tl;
    *b = (uint8_t)g.qos;
    c->out.len += h + n;
}

static void send_ack(conn_t *c, uint8_t type, unsigned pid) {
    buf_reserve(&c->out, 4);
    uint8_t *p = c->out.d + c->out.len;
    p[0] = type;
    p[1] = 2;
    put16(p + 2, pid);
    c->out.len += 4;
}

/* The encoded PUBLISH of a publisher with the packet id and payload header left to patch. */
static void build_template(conn_t *c) {
    size_t tl = strlen(c->topic);
    size_t rl = 2 + tl + (g.qos ? 2 : 0) + (g.proto == 5 ? 1 : 0) + (size_t)g.payload;
    c->tmpl = malloc(rl + 5);
    if (!c->tmpl) die("malloc");
    uint8_t *p = c->tmpl;
    p[0] = (uint8_t)(0x30 | (g.qos << 1));
    size_t n = 1 + put_varint(p + 1, rl);
    put16(p + n, (unsigned)tl);
    n += 2;
    memcpy(p + n, c->topic, tl);
    n += tl;
    c->pid_off = n;
    if (g.qos) n += 2;
    if (g.proto == 5) p[n++] = 0;
    c->pay_off = n;
    for (int i = 0; i < g.payload; i++) p[n + (size_t)i] = (uint8_t)('a' + i % 26);
    uint32_t magic = MAGIC, pi = (uint32_t)c->pub_i;
    memcpy(p + n, &magic, 4);
    memcpy(p + n + 4, &pi, 4);
    c->tmpl_len = n + (size_t)g.payload;
}

/* ------------------------------------------------------------------ connections */

static void mark_failed(worker_t *w, conn_t *c, const char *why) {
    if (c->state == S_FAILED || c->state == S_CLOSED) return;
    if (g.verbose || !g.conns_mode) note("connection %d failed: %s", c->idx, why);
    if (c->state == S_CONNECTING || c->state == S_CONNACK || c->state == S_SUBACK) w->pending--;
    c->state = S_FAILED;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    atomic_add(&w->failed, 1);
}

static void flush_out(worker_t *w, conn_t *c) {
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t k = write(c->fd, c->out.d + off, c->out.len - off);
        if (k > 0) {
            off += (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        mark_failed(w, c, k < 0 ? strerror(errno) : "write returned 0");
        return;
    }
    if (off == c->out.len) {
        c->out.len = 0;
        c->want_write = 0;
    } else {
        memmove(c->out.d, c->out.d + off, c->out.len - off);
        c->out.len -= off;
        c->want_write = 1; /* EPOLLOUT (edge-triggered) tells when to go on */
    }
}

/* Source ports for conns mode, taken in turn from the ephemeral range. Left to the kernel,
 * connect() searches the range for a free port; past about half of it in use (it tries
 * even ports first) each search walks thousands of taken ports, and 19,000 connections
 * cost the generator seconds of CPU. An explicit bind() of the next port is O(1). */
static unsigned port_lo = 32768, port_hi = 60999, port_next;

static void init_ports(void) {
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        unsigned lo, hi;
        if (fscanf(f, "%u %u", &lo, &hi) == 2 && lo < hi) {
            port_lo = lo;
            port_hi = hi;
        }
        fclose(f);
    }
    port_next = port_lo + (unsigned)getpid() % (port_hi - port_lo);
}

static int bind_next_port(int fd) {
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(INADDR_ANY);
    for (int tries = 0; tries < 2000; tries++) {
        unsigned p = __atomic_fetch_add(&port_next, 1, __ATOMIC_RELAXED);
        p = port_lo + (p - port_lo) % (port_hi - port_lo + 1);
        src.sin_port = htons((uint16_t)p);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) == 0) return 0;
        if (errno != EADDRINUSE) return -1;
    }
    return -1;
}

static void start_connect(worker_t *w, conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) {
        mark_failed(w, c, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = S_CONNECTING;
    w->pending++;
    if (g.conns_mode && bind_next_port(fd) < 0) {
        mark_failed(w, c, "no free source port");
        return;
    }
    /* With -Q the subscribers connect to another port: another node of a cluster. */
    const struct sockaddr_in *to = c->role == R_SUB ? &g.sa_sub : &g.sa;
    if (connect(fd, (const struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS) {
        mark_failed(w, c, strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP, .data.u32 = (uint32_t)c->idx};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
}

/* The socket connected: send CONNECT. */
static void on_connected(worker_t *w, conn_t *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        mark_failed(w, c, strerror(err));
        return;
    }
    c->state = S_CONNACK;
    send_connect(c);
    flush_out(w, c);
}

static void became_ready(worker_t *w, conn_t *c) {
    c->state = S_READY;
    w->pending--;
    atomic_add(&w->ready, 1);
}

/* ------------------------------------------------------------------ packets in */

static void record_latency(worker_t *w, double us) {
    if (us < 0) us = 0;
    w->lat_n++;
    w->lat_sum_us += us;
    if (us > w->lat_max_us) w->lat_max_us = us;
    if (us < HIST_US) w->hist_us[(size_t)us]++;
    else if (us / 1000 < HIST_MS) w->hist_ms[(size_t)(us / 1000)]++;
    else w->lat_over++;
}

static void on_publish(worker_t *w, conn_t *c, uint8_t flags, const uint8_t *b, size_t rl, uint64_t t_ns) {
    int qos = (flags >> 1) & 3;
    if (rl < 2) goto bad;
    size_t tl = ((size_t)b[0] << 8) | b[1];
    size_t n = 2 + tl;
    unsigned pid = 0;
    if (qos) {
        if (n + 2 > rl) goto bad;
        pid = ((unsigned)b[n] << 8) | b[n + 1];
        n += 2;
    }
    if (g.proto == 5) {
        size_t plen = 0, mul = 1;
        for (int i = 0; i < 4 && n < rl; i++) {
            uint8_t byte = b[n++];
            plen += (byte & 127) * mul;
            mul *= 128;
            if (!(byte & 128)) break;
        }
        n += plen;
    }
    if (qos == 1) send_ack(c, 0x40, pid);
    else if (qos == 2) send_ack(c, 0x50, pid);
    if (n + HDR > rl) goto bad;
    uint32_t magic, pi;
    uint64_t seq, ts;
    memcpy(&magic, b + n, 4);
    memcpy(&pi, b + n + 4, 4);
    memcpy(&seq, b + n + 8, 8);
    memcpy(&ts, b + n + 16, 8);
    if (magic != MAGIC || pi >= (uint32_t)g.npubs) goto bad;
    conn_t *pc = &g.c[g.pubs[pi]];
    if (seq >= pc->n_total) goto bad;
    track_t *t = &c->track[g.pairs ? 0 : pi];
    if (!t->bits) goto bad; /* a pair's subscriber got another pair's message */
    uint8_t bit = (uint8_t)(1u << (seq & 7));
    w->delivered++;
    if (t->bits[seq >> 3] & bit) {
        w->dups++;
    } else {
        t->bits[seq >> 3] |= bit;
        t->uniq++;
        atomic_add(&g.pub_recv[pi], 1);
        if (seq < t->next) w->ooo++;
        else t->next = seq + 1;
    }
    record_latency(w, (double)(int64_t)(t_ns - ts) / 1000.0);
    return;
bad:
    w->bad++;
}

static void on_pub_ack(worker_t *w, conn_t *c, unsigned pid, int final, uint8_t reason) {
    if (reason >= 0x80) w->pub_errs++;
    if (!final) { /* PUBREC: answer PUBREL, the id stays in flight until PUBCOMP */
        send_ack(c, 0x62, pid);
        return;
    }
    if (c->pid_used && c->pid_used[pid]) {
        c->pid_used[pid] = 0;
        c->inflight--;
        c->n_done++;
    } else {
        w->bad++;
    }
}

/* Parse every whole packet in c->in; returns 0 when the connection failed. */
static int parse_in(worker_t *w, conn_t *c, uint64_t t_ns) {
    uint8_t *d = c->in.d;
    size_t len = c->in.len, off = 0;
    while (off + 2 <= len) {
        size_t rl = 0, mul = 1, h = 1;
        int done = 0;
        while (off + h < len && h <= 4) {
            uint8_t byte = d[off + h++];
            rl += (byte & 127) * mul;
            mul *= 128;
            if (!(byte & 128)) {
                done = 1;
                break;
            }
        }
        if (!done) {
            if (h > 4) {
                mark_failed(w, c, "malformed remaining length");
                return 0;
            }
            break;
        }
        if (off + h + rl > len) {
            if (h + rl > c->in.cap) buf_reserve(&c->in, h + rl);
            break;
        }
        uint8_t type = d[off];
        const uint8_t *b = d + off + h;
        switch (type >> 4) {
        case 3:
            on_publish(w, c, type & 15, b, rl, t_ns);
            break;
        case 4: /* PUBACK */
        case 7: /* PUBCOMP */
            if (rl >= 2) on_pub_ack(w, c, ((unsigned)b[0] << 8) | b[1], 1, rl > 2 ? b[2] : 0);
            break;
        case 5: /* PUBREC */
            if (rl >= 2) on_pub_ack(w, c, ((unsigned)b[0] << 8) | b[1], 0, rl > 2 ? b[2] : 0);
            break;
        case 6: /* PUBREL to a subscriber */
            if (rl >= 2) send_ack(c, 0x70, ((unsigned)b[0] << 8) | b[1]);
            break;
        case 2: { /* CONNACK */
            uint8_t rc = rl >= 2 ? b[1] : 0xff;
            if (rc != 0) {
                char why[48];
                snprintf(why, sizeof why, "CONNACK code 0x%02x", rc);
                mark_failed(w, c, why);
                return 0;
            }
            if (g.proto == 5 && rl > 3) { /* properties: find Receive Maximum (0x21) */
                size_t n = 2, plen = 0, m = 1;
                for (int i = 0; i < 4 && n < rl; i++) {
                    uint8_t byte = b[n++];
                    plen += (byte & 127) * m;
                    m *= 128;
                    if (!(byte & 128)) break;
                }
                size_t end = n + plen < rl ? n + plen : rl;
                while (n < end) {
                    uint8_t id = b[n++];
                    if (id == 0x21 && n + 2 <= end) {
                        c->recv_max = ((int)b[n] << 8) | b[n + 1];
                        break;
                    }
                    /* skip the value: lengths by property type (MQTT 5 section 2.2.2.2) */
                    if (id == 0x24 || id == 0x25 || id == 0x28 || id == 0x29 || id == 0x2a || id == 0x01) n += 1;
                    else if (id == 0x13 || id == 0x22) n += 2;
                    else if (id == 0x11 || id == 0x27) n += 4;
                    else if (id == 0x26) {
                        size_t k1 = ((size_t)b[n] << 8) | b[n + 1];
                        n += 2 + k1;
                        size_t k2 = ((size_t)b[n] << 8) | b[n + 1];
                        n += 2 + k2;
                    } else if (id == 0x0b) {
                        while (n < end && (b[n++] & 128)) {}
                    } else {
                        size_t k = ((size_t)b[n] << 8) | b[n + 1];
                        n += 2 + k;
                    }
                }
            }
            if (c->role == R_SUB) {
                c->state = S_SUBACK;
                send_subscribe(c);
            } else {
                became_ready(w, c);
            }
            break;
        }
        case 9: /* SUBACK */
            if (rl < 3 || b[rl - 1] >= 0x80) {
                mark_failed(w, c, "subscription refused");
                return 0;
            }
            if (c->state == S_SUBACK) became_ready(w, c);
            break;
        case 13: /* PINGRESP */
            break;
        case 14:
            mark_failed(w, c, "DISCONNECT from the server");
            return 0;
        default:
            w->bad++;
        }
        off += h + rl;
    }
    if (off) {
        memmove(d, d + off, len - off);
        c->in.len = len - off;
    }
    return 1;
}

static void on_readable(worker_t *w, conn_t *c) {
    for (;;) {
        if (c->in.len == c->in.cap) buf_reserve(&c->in, c->in.cap);
        size_t room = c->in.cap - c->in.len;
        ssize_t k = read(c->fd, c->in.d + c->in.len, room);
        if (k > 0) {
            c->in.len += (size_t)k;
            /* All bytes of one read arrived before it returned: one clock read for all. */
            if (!parse_in(w, c, now_ns())) return;
            /* A short read emptied the socket; data arriving later raises a new edge, so
             * there is no need for the extra read() that would only return EAGAIN. */
            if ((size_t)k < room) break;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (c->state != S_CLOSED) mark_failed(w, c, k == 0 ? "closed by the broker" : strerror(errno));
        return;
    }
    if (c->out.len && c->fd >= 0) flush_out(w, c);
}

/* One short read loop above may leave bytes in the kernel (edge-triggered): drain them. */
static void drain_read(worker_t *w, conn_t *c) {
    for (;;) {
        if (c->in.len == c->in.cap) buf_reserve(&c->in, c->in.cap);
        ssize_t k = read(c->fd, c->in.d + c->in.len, c->in.cap - c->in.len);
        if (k > 0) {
            c->in.len += (size_t)k;
            if (!parse_in(w, c, now_ns())) return;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (c->state != S_CLOSED) mark_failed(w, c, k == 0 ? "closed by the broker" : strerror(errno));
        return;
    }
    if (c->out.len && c->fd >= 0) flush_out(w, c);
}

/* ------------------------------------------------------------------ publishing */

static void pump_pub(worker_t *w, conn_t *c, double t) {
    if (c->state != S_READY || c->n_sent >= c->n_total || c->want_write) return;
    uint64_t left = c->n_total - c->n_sent;
    uint64_t n = left;
    if (g.qos) {
        int win = g.window;
        if (c->recv_max > 0 && c->recv_max < win) win = c->recv_max;
        uint64_t room = c->inflight < win ? (uint64_t)(win - c->inflight) : 0;
        if (room < n) n = room;
    }
    if (g.e2e > 0) {
        uint64_t recv = atomic_get(&g.pub_recv[c->pub_i]) / (uint64_t)c->nsubs + c->e2e_writeoff;
        if (recv != c->last_recv_seen) {
            c->last_recv_seen = recv;
            c->last_prog = t;
        }
        uint64_t out = c->n_sent > recv ? c->n_sent - recv : 0;
        uint64_t room = out < (uint64_t)g.e2e ? (uint64_t)g.e2e - out : 0;
        if (room == 0 && t - c->last_prog > g.stall) {
            /* Nothing came back for -X seconds: write the window off (a QoS 0 drop) and go on. */
            c->e2e_writeoff += out;
            c->last_prog = t;
            w->stalls++;
            room = (uint64_t)g.e2e;
        }
        if (room < n) n = room;
    }
    if (g.rate > 0) {
        double due = (t - g.t0) * g.rate / g.npubs + 1;
        uint64_t d = due > (double)c->n_sent ? (uint64_t)due - c->n_sent : 0;
        if (d < n) n = d;
    } else if (n < (uint64_t)g.min_batch && n < left) {
        return; /* wait for a batch worth a system call */
    }
    if (n == 0) return;
    size_t cap_msgs = (c->out.cap - c->out.len) / c->tmpl_len;
    if (cap_msgs == 0) {
        buf_reserve(&c->out, c->tmpl_len * 64);
        cap_msgs = (c->out.cap - c->out.len) / c->tmpl_len;
    }
    if (n > cap_msgs) n = cap_msgs;
    uint64_t ts = now_ns();
    uint8_t *p = c->out.d + c->out.len;
    for (uint64_t i = 0; i < n; i++) {
        memcpy(p, c->tmpl, c->tmpl_len);
        if (g.qos) {
            uint16_t pid = c->next_pid;
            while (c->pid_used[pid] || pid == 0) pid++;
            c->pid_used[pid] = 1;
            c->next_pid = (uint16_t)(pid + 1);
            put16(p + c->pid_off, pid);
            c->inflight++;
        }
        uint64_t seq = c->n_sent++;
        memcpy(p + c->pay_off + 8, &seq, 8);
        memcpy(p + c->pay_off + 16, &ts, 8);
        p += c->tmpl_len;
    }
    c->out.len += (size_t)n * c->tmpl_len;
    if (!g.qos) c->n_done += n;
    atomic_add(&w->sent, n);
    flush_out(w, c);
}

/* ------------------------------------------------------------------ worker thread */

static void ping_all(worker_t *w) {
    for (int i = 0; i < w->nconns; i++) {
        conn_t *c = &g.c[w->conns[i]];
        if (c->state != S_READY) continue;
        buf_reserve(&c->out, 2);
        c->out.d[c->out.len++] = 0xc0;
        c->out.d[c->out.len++] = 0;
        flush_out(w, c);
    }
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    struct epoll_event evs[1024];
    int conc = g.conc / g.threads > 0 ? g.conc / g.threads : 1;
    double last_ping = now_s();
    int started_phase = -1;
    while (!g.stop) {
        int phase = g.phase;
        double t = now_s();
        if (phase != started_phase && phase <= 1) {
            started_phase = phase;
            w->next_start = 0;
        }
        if (phase <= 1) {
            /* start connects of this phase's role, at most `conc` in progress */
            int role = g.conns_mode ? R_IDLE : phase == 0 ? R_SUB : R_PUB;
            while (w->pending < conc && w->next_start < w->nconns) {
                conn_t *c = &g.c[w->conns[w->next_start++]];
                if (c->role == role && c->state == S_NEW) start_connect(w, c);
            }
        }
        if (phase == 2)
            for (int i = 0; i < w->nconns; i++) {
                conn_t *c = &g.c[w->conns[i]];
                if (c->role == R_PUB) pump_pub(w, c, t);
            }
        if (g.keepalive > 0 && t - last_ping > g.keepalive / 2.0) {
            ping_all(w);
            last_ping = t;
        }
        int timeout = phase == 2 && g.rate > 0 ? 1 : 5;
        int n = epoll_wait(w->ep, evs, 512, timeout);
        if (phase == 2 && g.rate <= 0 && g.coalesce_us > 0 && n > 0 && n < 512) {
            /* Throughput runs with many subscribers that each get a trickle (-W): let the
             * sockets fill for a moment so that one read() takes many packets. A broker that
             * writes one packet per send() would otherwise cost the generator one wake-up and
             * one read per delivery. Off by default: it delays every acknowledgement by up
             * to W us, and a subscriber's in-flight window of 100 QoS 1 messages then turns
             * into a cap on the rate (fan-in QoS 1 ran at 77 % broker CPU with -W 200,
             * 85-96 % without). */
            struct timespec ts = {0, g.coalesce_us * 1000L};
            nanosleep(&ts, NULL);
            /* edge-triggered: the events already taken are kept; new edges are appended (an fd
             * may come twice, which only costs a read that finds nothing) */
            int more = epoll_wait(w->ep, evs + n, 512 - n, 0);
            if (more > 0) n += more;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = &g.c[evs[i].data.u32];
            uint32_t e = evs[i].events;
            if (c->fd < 0) continue;
            if (c->state == S_CONNECTING) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(w, c);
                if (c->fd < 0) continue;
            }
            if ((e & EPOLLOUT) && c->want_write) flush_out(w, c);
            if (c->fd >= 0 && (e & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))) {
                on_readable(w, c);
                if (c->fd >= 0 && (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) drain_read(w, c);
            }
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ main-thread helpers */

static uint64_t sum_field(size_t off) {
    uint64_t s = 0;
    for (int i = 0; i < g.threads; i++) s += atomic_get((uint64_t *)((char *)&g.w[i] + off));
    return s;
}
#define SUM(f) sum_field(offsetof(worker_t, f))

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static uint64_t uniq_total(void) {
    uint64_t s = 0;
    for (int i = 0; i < g.npubs; i++) s += atomic_get(&g.pub_recv[i]);
    return s;
}

static int wait_ready(int want, double limit) {
    double t0 = now_s();
    while (now_s() - t0 < limit) {
        uint64_t r = SUM(ready), f = SUM(failed);
        if ((int)(r + f) >= want) return (int)r;
        sleep_s(0.001);
    }
    return (int)SUM(ready);
}

static double pct_us(double q) {
    uint64_t n = 0;
    for (int i = 0; i < g.threads; i++) n += g.w[i].lat_n;
    if (!n) return -1;
    uint64_t want = (uint64_t)(q * (double)n), acc = 0;
    if (want >= n) want = n - 1;
    for (size_t b = 0; b < HIST_US; b++) {
        for (int i = 0; i < g.threads; i++) acc += g.w[i].hist_us[b];
        if (acc > want) return (double)b + 0.5;
    }
    for (size_t b = 0; b < HIST_MS; b++) {
        for (int i = 0; i < g.threads; i++) acc += g.w[i].hist_ms[b];
        if (acc > want) return (double)b * 1000.0 + 500.0;
    }
    return (double)HIST_MS * 1000.0;
}

static void disconnect_all(void) {
    static const uint8_t disc[2] = {0xe0, 0};
    /* Thousands of idle connections closed by us would leave as many ports in TIME_WAIT and
     * slow the next run's connects: close those with a reset after the DISCONNECT. */
    struct linger lg = {1, 0};
    for (int i = 0; i < g.nc; i++) {
        conn_t *c = &g.c[i];
        if (c->fd < 0) continue;
        if (c->state == S_READY && write(c->fd, disc, 2) < 0) {}
        if (g.conns_mode) setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->fd);
        c->fd = -1;
        c->state = S_CLOSED;
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen -s fan-in|fan-out|pairs|conns [options]\n"
            "  -H host, IPv4 (127.0.0.1)  -p port (1883)  -V 4|5 MQTT 3.1.1 or 5.0 (4)\n"
            "  -Q port of the subscribers (default -p): publishers and subscribers on two cluster nodes\n"
            "  -q QoS 0|1|2 (0)  -m messages published in all (100000)  -b payload bytes (64, min 24)\n"
            "  -P publishers, fan-in (4)  -S subscribers, fan-out (50)  -N pairs (100)\n"
            "  -x S  persistent subscriber sessions: session expiry S seconds (5.0) or clean session 0 "
            "(3.1.1) (0 = clean)\n"
            "  -w in-flight window per publisher, QoS 1/2 (100)  -e end-to-end window per publisher (1000, 0 "
            "off)\n"
            "  -r offered load, msgs/s in all (0 = as fast as the windows allow)  -B min publish batch (-1 "
            "auto)\n"
            "  -C connections for conns (1000)  -c connects in progress at once (100)  -t hold seconds (5; 0 = "
            "storm only)\n"
            "  -W us: throughput runs poll the sockets at most every W us, to read many packets per "
            "read() (0 = off)\n"
            "  -j worker threads (1)  -k keepalive s (60)  -T overall timeout s (120)  -D drain s (2)  -X "
            "stall write-off s (1)\n"
            "  -R broker pid: its CPU time and RSS from /proc  -L label  -v verbose\n"
            "Output: '#' lines on stderr, one JSON object on stdout.\n");
    exit(1);
}

static void json_num(const char *k, double v, int last) {
    if (v == (double)(long long)v && v < 1e15 && v > -1e15) printf("\"%s\": %lld%s", k, (long long)v, last ? "" : ", ");
    else printf("\"%s\": %.3f%s", k, v, last ? "" : ", ");
}

static int run_conns(void) {
    long rss0 = proc_rss_kb(g.bpid);
    double bc0 = proc_cpu_s(g.bpid), gc0 = self_cpu_s(), t0 = now_s();
    g.phase = 0;
    int ok = wait_ready(g.nc, g.timeout);
    double t1 = now_s();
    double bc1 = proc_cpu_s(g.bpid), gc1 = self_cpu_s();
    long rss1 = proc_rss_kb(g.bpid);
    double th = now_s();
    long rss_max = rss1;
    while (now_s() - th < g.hold) {
        sleep_s(0.1);
        long r = proc_rss_kb(g.bpid);
        if (r > rss_max) rss_max = r;
    }
    long rss2 = proc_rss_kb(g.bpid);
    double bc2 = proc_cpu_s(g.bpid);
    int alive = 0;
    for (int i = 0; i < g.nc; i++) alive += g.c[i].state == S_READY;
    g.stop = 1;
    double cs = t1 - t0;
    int failed = (int)SUM(failed);
    note("conns: %d/%d connected in %.3f s (%.0f/s), %d alive after %.1f s hold", ok, g.nc, cs, ok / cs, alive,
         g.hold);
    note("broker RSS kB: before %ld, after connecting %ld, end of hold %ld", rss0, rss1, rss2);
    long rss_end = g.hold > 0 ? rss2 : rss1;
    printf("{\"scenario\": \"conns\", \"label\": \"%s\", ", g.label);
    json_num("proto", g.proto, 0);
    json_num("conns", g.nc, 0);
    json_num("connected", ok, 0);
    json_num("alive", g.hold > 0 ? alive : ok, 0);
    json_num("failed", failed, 0);
    json_num("threads", g.threads, 0);
    json_num("concurrency", g.conc, 0);
    json_num("connect_s", cs, 0);
    json_num("conns_per_s", cs > 0 ? ok / cs : 0, 0);
    json_num("hold_s", g.hold, 0);
    json_num("rss_before_kb", (double)rss0, 0);
    json_num("rss_after_connect_kb", (double)rss1, 0);
    json_num("rss_end_kb", (double)rss_end, 0);
    json_num("bytes_per_conn", (rss0 >= 0 && ok > 0) ? (double)(rss_end - rss0) * 1024.0 / ok : -1, 0);
    json_num("broker_cpu_connect_s", (bc0 >= 0 && bc1 >= 0) ? bc1 - bc0 : -1, 0);
    json_num("broker_us_per_conn", (bc0 >= 0 && ok > 0) ? (bc1 - bc0) * 1e6 / ok : -1, 0);
    json_num("broker_cpu_pct", (bc0 >= 0 && cs > 0) ? 100.0 * (bc1 - bc0) / cs : -1, 0);
    json_num("broker_cpu_hold_s", (bc1 >= 0 && bc2 >= 0) ? bc2 - bc1 : -1, 0);
    json_num("gen_cpu_connect_s", gc1 - gc0, 0);
    json_num("gen_cpu_s", self_cpu_s(), 0);
    json_num("gen_cpu_pct", cs > 0 ? 100.0 * (gc1 - gc0) / cs : 0, 0);
    json_num("timed_out", ok + failed < g.nc, 1);
    printf("}\n");
    return ok == g.nc ? 0 : 3;
}

int main(int argc, char **argv) {
    g.host = "127.0.0.1";
    g.port = 1883;
    g.proto = 4;
    g.M = 100000;
    g.payload = 64;
    g.P = 4;
    g.S = 50;
    g.N = 100;
    g.C = 1000;
    g.conc = 100;
    g.window = 100;
    g.e2e = 1000;
    g.keepalive = 60;
    g.hold = 5;
    g.timeout = 120;
    g.drain = 2;
    g.stall = 1;
    g.threads = 1;
    g.coalesce_us = 0;
    g.min_batch = -1;
    g.label = "-";
    int o;
    while ((o = getopt(argc, argv, "H:p:Q:V:s:q:m:b:P:S:N:x:w:e:r:B:C:c:t:j:W:k:T:D:X:R:L:vh")) != -1) {
        switch (o) {
        case 'H': g.host = optarg; break;
        case 'p': g.port = atoi(optarg); break;
        case 'Q': g.sub_port = atoi(optarg); break;
        case 'V': g.proto = atoi(optarg); break;
        case 's': g.scen = optarg; break;
        case 'q': g.qos = atoi(optarg); break;
        case 'm': g.M = atol(optarg); break;
        case 'b': g.payload = atoi(optarg); break;
        case 'P': g.P = atoi(optarg); break;
        case 'S': g.S = atoi(optarg); break;
        case 'N': g.N = atoi(optarg); break;
        case 'x': g.persist = atoi(optarg); break;
        case 'w': g.window = atoi(optarg); break;
        case 'e': g.e2e = atoi(optarg); break;
        case 'r': g.rate = atof(optarg); break;
        case 'B': g.min_batch = atoi(optarg); break;
        case 'C': g.C = atoi(optarg); break;
        case 'c': g.conc = atoi(optarg); break;
        case 't': g.hold = atof(optarg); break;
        case 'j': g.threads = atoi(optarg); break;
        case 'W': g.coalesce_us = atoi(optarg); break;
        case 'k': g.keepalive = atoi(optarg); break;
        case 'T': g.timeout = atof(optarg); break;
        case 'D': g.drain = atof(optarg); break;
        case 'X': g.stall = atof(optarg); break;
        case 'R': g.bpid = atoi(optarg); break;
        case 'L': g.label = optarg; break;
        case 'v': g.verbose = 1; break;
        default: usage();
        }
    }
    if (!g.scen || (g.proto != 4 && g.proto != 5) || g.qos < 0 || g.qos > 2 || g.payload < HDR || g.M < 1 ||
        g.window < 1 || g.window > 65000 || g.conc < 1 || g.threads < 1 || g.threads > MAX_THREADS ||
        g.timeout <= 0 || g.persist < 0 || g.coalesce_us < 0 || g.coalesce_us > 100000)
        usage();
    g.conns_mode = !strcmp(g.scen, "conns");
    g.fanin = !strcmp(g.scen, "fan-in");
    g.fanout = !strcmp(g.scen, "fan-out");
    g.pairs = !strcmp(g.scen, "pairs");
    if (!g.conns_mode && !g.fanin && !g.fanout && !g.pairs) usage();
    if (g.min_batch < 0) {
        int win = g.qos ? g.window : 0;
        if (g.e2e > 0 && (win == 0 || g.e2e < win)) win = g.e2e;
        g.min_batch = win >= 8 ? win / 4 : 1;
    }
    signal(SIGPIPE, SIG_IGN);
    init_ports();
    g.clk_tck = sysconf(_SC_CLK_TCK);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    g.sa.sin_family = AF_INET;
    g.sa.sin_port = htons((uint16_t)g.port);
    if (inet_pton(AF_INET, g.host, &g.sa.sin_addr) != 1) {
        fprintf(stderr, "-H needs an IPv4 address\n");
        return 1;
    }
    g.sa_sub = g.sa;
    if (g.sub_port) g.sa_sub.sin_port = htons((uint16_t)g.sub_port);

    /* the connections and their roles */
    if (g.conns_mode) {
        g.nc = g.C;
    } else {
        g.npubs = g.fanin ? g.P : g.fanout ? 1 : g.N;
        g.nsubs = g.fanin ? 1 : g.fanout ? g.S : g.N;
        if (g.npubs < 1 || g.nsubs < 1) usage();
        g.nc = g.npubs + g.nsubs;
    }
    g.c = calloc((size_t)g.nc, sizeof(conn_t));
    g.pubs = calloc((size_t)g.npubs + 1, sizeof(int));
    g.subs = calloc((size_t)g.nsubs + 1, sizeof(int));
    g.pub_recv = calloc((size_t)g.npubs + 1, sizeof(uint64_t));
    if (!g.c || !g.pubs || !g.subs || !g.pub_recv) die("calloc");
    size_t small = g.conns_mode ? 256 : 0;
    for (int i = 0; i < g.nc; i++) {
        conn_t *c = &g.c[i];
        c->idx = i;
        c->fd = -1;
        c->thread = i % g.threads;
        if (g.conns_mode) {
            c->role = R_IDLE;
        } else if (i < g.nsubs) {
            c->role = R_SUB;
            g.subs[i] = i;
        } else {
            c->role = R_PUB;
            c->pub_i = i - g.nsubs;
            g.pubs[c->pub_i] = i;
        }
        buf_init(&c->in, small ? small : c->role == R_SUB ? 256 * 1024 : 64 * 1024);
        buf_init(&c->out, small ? small : c->role == R_PUB ? 256 * 1024 : 64 * 1024);
    }
    for (int s = 0; s < g.nsubs; s++) {
        conn_t *c = &g.c[g.subs[s]];
        snprintf(c->topic, sizeof c->topic, "%s", g.fanin ? "bench/#" : g.fanout ? "bench/out" : "bench/pair/");
        if (g.pairs) snprintf(c->topic, sizeof c->topic, "bench/pair/%d", s);
        c->track = calloc(g.pairs ? 1 : (size_t)g.npubs, sizeof(track_t));
        if (!c->track) die("calloc");
    }
    for (int p = 0; p < g.npubs; p++) {
        conn_t *c = &g.c[g.pubs[p]];
        c->n_total = (uint64_t)(g.M / g.npubs + (p < g.M % g.npubs ? 1 : 0));
        c->next_pid = 1;
        c->nsubs = g.fanout ? g.nsubs : 1;
        if (g.fanin) snprintf(c->topic, sizeof c->topic, "bench/in/%d", p);
        else if (g.fanout) snprintf(c->topic, sizeof c->topic, "bench/out");
        else snprintf(c->topic, sizeof c->topic, "bench/pair/%d", p);
        if (g.qos) {
            c->pid_used = calloc(65536, 1);
            if (!c->pid_used) die("calloc");
        }
        build_template(c);
        g.expected += c->n_total * (uint64_t)c->nsubs;
        size_t nbytes = (size_t)(c->n_total + 7) / 8;
        if (g.pairs) {
            conn_t *s = &g.c[g.subs[p]];
            s->track[0].bits = calloc(nbytes, 1);
            if (!s->track[0].bits) die("calloc");
        } else {
            for (int s = 0; s < g.nsubs; s++) {
                conn_t *sc = &g.c[g.subs[s]];
                sc->track[p].bits = calloc(nbytes, 1);
                if (!sc->track[p].bits) die("calloc");
            }
        }
    }

    /* worker threads, each with its share of the connections */
    pthread_t tid[MAX_THREADS];
    for (int t = 0; t < g.threads; t++) {
        worker_t *w = &g.w[t];
        w->id = t;
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (w->ep < 0) die("epoll_create1");
        w->conns = calloc((size_t)g.nc / (size_t)g.threads + 1, sizeof(int));
        if (!g.conns_mode) {
            w->hist_us = calloc(HIST_US, sizeof(uint32_t));
            w->hist_ms = calloc(HIST_MS, sizeof(uint32_t));
            if (!w->hist_us || !w->hist_ms) die("calloc");
        }
    }
    for (int i = 0; i < g.nc; i++) {
        worker_t *w = &g.w[g.c[i].thread];
        w->conns[w->nconns++] = i;
    }
    /* conns: the workers wait (phase 5) until run_conns() has read the broker's figures */
    g.phase = g.conns_mode ? 5 : 0;
    for (int t = 0; t < g.threads; t++)
        if (pthread_create(&tid[t], NULL, worker_main, &g.w[t])) die("pthread_create");

    if (g.conns_mode) {
        int rc = run_conns();
        for (int t = 0; t < g.threads; t++) pthread_join(tid[t], NULL);
        disconnect_all();
        return rc;
    }

    /* pub/sub: subscribers, then publishers, then the measured run */
    const char *error = NULL;
    if (wait_ready(g.nsubs, 30) != g.nsubs) error = "subscribe_failed";
    if (!error) {
        g.phase = 1;
        if (wait_ready(g.nc, 30) != g.nc) error = "connect_failed";
    }
    if (!error) sleep_s(0.2); /* let every subscription take effect */
    int rmax = 0;
    for (int p = 0; p < g.npubs; p++) {
        int r = g.c[g.pubs[p]].recv_max;
        if (r > 0 && (rmax == 0 || r < rmax)) rmax = r;
    }
    double bc0 = proc_cpu_s(g.bpid), gc0 = self_cpu_s();
    g.t0 = now_s();
    for (int p = 0; p < g.npubs; p++) g.c[g.pubs[p]].last_prog = g.t0;
    int timed_out = 0, failed = 0;
    double t_pubs_done = 0, t_last_change = g.t0, last_rep = g.t0;
    uint64_t last_uniq = 0, rep_uniq = 0;
    long rss_max = proc_rss_kb(g.bpid);
    if (!error) {
        g.phase = 2;
        for (;;) {
            sleep_s(0.002);
            double t = now_s();
            uint64_t u = uniq_total();
            if (u != last_uniq) {
                last_uniq = u;
                t_last_change = t;
            }
            int pubs_done = 1;
            for (int p = 0; p < g.npubs && pubs_done; p++) {
                conn_t *c = &g.c[g.pubs[p]];
                if (__atomic_load_n(&c->n_done, __ATOMIC_RELAXED) < c->n_total) pubs_done = 0;
            }
            if (pubs_done && t_pubs_done == 0) t_pubs_done = t;
            if (pubs_done && u >= g.expected) break;
            if (pubs_done && t - (t_last_change > t_pubs_done ? t_last_change : t_pubs_done) > g.drain) break;
            if (t - g.t0 > g.timeout) {
                timed_out = 1;
                break;
            }
            if (SUM(failed)) {
                failed = 1;
                break;
            }
            if (t - last_rep >= 1.0) {
                long r = proc_rss_kb(g.bpid);
                if (r > rss_max) rss_max = r;
                if (g.verbose)
                    note("t=%.1f sent=%llu received=%llu (+%.0f/s)", t - g.t0, (unsigned long long)SUM(sent),
                         (unsigned long long)u, (double)(u - rep_uniq) / (t - last_rep));
                last_rep = t;
                rep_uniq = u;
            }
        }
    }
    double tend = now_s();
    double bc1 = proc_cpu_s(g.bpid), gc1 = self_cpu_s();
    g.stop = 1;
    for (int t = 0; t < g.threads; t++) pthread_join(tid[t], NULL);
    disconnect_all();

    double t_last = last_uniq ? t_last_change : tend;
    double elapsed = t_last - g.t0 > 1e-6 ? t_last - g.t0 : 1e-6;
    double loop_wall = tend - g.t0 > 1e-6 ? tend - g.t0 : 1e-6;
    double bcpu = (bc0 >= 0 && bc1 >= 0) ? bc1 - bc0 : -1;
    double gcpu = gc1 - gc0;
    uint64_t uniq = uniq_total(), delivered = SUM(delivered), sent = SUM(sent);
    uint64_t lost = g.expected > uniq ? g.expected - uniq : 0;
    double lat_sum = 0, lat_max = 0;
    uint64_t lat_n = 0;
    for (int t = 0; t < g.threads; t++) {
        lat_sum += g.w[t].lat_sum_us;
        lat_n += g.w[t].lat_n;
        if (g.w[t].lat_max_us > lat_max) lat_max = g.w[t].lat_max_us;
    }
    note("%s qos=%d proto=%d pubs=%d subs=%d payload=%d messages=%ld window=%d (server receive max %d) e2e=%d "
         "batch=%d threads=%d",
         g.scen, g.qos, g.proto, g.npubs, g.nsubs, g.payload, g.M, g.window, rmax, g.e2e, g.min_batch, g.threads);
    note("sent=%llu expected=%llu received=%llu lost=%llu dup=%llu ooo=%llu bad=%llu stalls=%llu",
         (unsigned long long)sent, (unsigned long long)g.expected, (unsigned long long)delivered,
         (unsigned long long)lost, (unsigned long long)SUM(dups), (unsigned long long)SUM(ooo),
         (unsigned long long)SUM(bad), (unsigned long long)SUM(stalls));
    note("%.3f s, %.0f deliveries/s, latency us p50 %.0f p99 %.0f max %.0f, broker CPU %.2f s, generator CPU %.2f s "
         "(%.0f%% of one core)",
         elapsed, (double)uniq / elapsed, pct_us(0.5), pct_us(0.99), lat_max, bcpu, gcpu, 100 * gcpu / loop_wall);
    printf("{\"scenario\": \"%s\", \"label\": \"%s\", ", g.scen, g.label);
    if (error) printf("\"error\": \"%s\", ", error);
    json_num("proto", g.proto, 0);
    json_num("qos", g.qos, 0);
    json_num("pubs", g.npubs, 0);
    json_num("subs", g.nsubs, 0);
    json_num("payload", g.payload, 0);
    json_num("messages", (double)g.M, 0);
    json_num("rate", g.rate, 0);
    json_num("window", g.window, 0);
    json_num("receive_max", rmax, 0);
    json_num("e2e", g.e2e, 0);
    json_num("threads", g.threads, 0);
    json_num("coalesce_us", g.rate > 0 ? 0 : g.coalesce_us, 0);
    json_num("persist", g.persist, 0);
    json_num("sent", (double)sent, 0);
    json_num("expected", (double)g.expected, 0);
    json_num("delivered", (double)delivered, 0);
    json_num("lost", (double)lost, 0);
    json_num("dup", (double)SUM(dups), 0);
    json_num("ooo", (double)SUM(ooo), 0);
    json_num("bad", (double)SUM(bad), 0);
    json_num("stalls", (double)SUM(stalls), 0);
    json_num("pub_errs", (double)SUM(pub_errs), 0);
    json_num("elapsed_s", elapsed, 0);
    json_num("msgs_per_s", (double)uniq / elapsed, 0);
    json_num("pub_msgs_per_s", (double)sent / elapsed, 0);
    json_num("p50_us", pct_us(0.5), 0);
    json_num("p90_us", pct_us(0.9), 0);
    json_num("p99_us", pct_us(0.99), 0);
    json_num("p999_us", pct_us(0.999), 0);
    json_num("max_us", lat_max, 0);
    json_num("mean_us", lat_n ? lat_sum / (double)lat_n : -1, 0);
    json_num("broker_cpu_s", bcpu, 0);
    json_num("broker_cpu_pct", bcpu >= 0 ? 100.0 * bcpu / loop_wall : -1, 0);
    json_num("msgs_per_broker_cpu_s", bcpu > 0 ? (double)uniq / bcpu : -1, 0);
    json_num("broker_rss_max_kb", (double)rss_max, 0);
    json_num("gen_cpu_s", gcpu, 0);
    json_num("gen_cpu_pct", 100.0 * gcpu / loop_wall, 0);
    json_num("timed_out", timed_out, 0);
    json_num("failed", failed || error, 1);
    printf("}\n");
    return (timed_out || failed || error) ? 3 : 0;
}
