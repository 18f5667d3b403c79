/*
 * loadgen.c - single-threaded epoll WebSocket (RFC 6455) load generator for
 * the wsgiws benchmarks.  Talks to 127.0.0.1 only.
 *
 * Modes:
 *   latency     one connection, one message in flight, N round trips
 *   throughput  C connections, each keeping D messages in flight, for T s
 *   handshake   C parallel loops of: connect, upgrade, 1 message, close
 *   idle        open C connections, echo one message each, print READY,
 *               wait for a line on stdin, then close them all
 *   probe       one connection, one message; exit 0 if the echo is correct
 *   subscribe   fan-out: C subscriber connections (--path) that only listen and one
 *               publisher connection (--pub-path) whose every message the server
 *               sends to all subscribers.  Each message carries its sequence number
 *               and the monotonic time it was written, so each delivery gives a
 *               latency and each socket's sequence shows gaps and duplicates.
 *
 * Every echoed message is checked byte for byte against what was sent.
 * The result is one JSON object on stdout.  It also reports its own CPU use
 * and (with --pids) the server's CPU use over the measurement window, which
 * is how the harness shows that this client is not the bottleneck.
 *
 * Build: gcc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { M_LATENCY, M_THROUGHPUT, M_HANDSHAKE, M_IDLE, M_PROBE, M_SUBSCRIBE };
enum { ST_FREE, ST_CONNECTING, ST_HS_SENT, ST_OPEN, ST_CLOSING };
enum { PH_WARMUP, PH_MEASURE, PH_STOP };

typedef struct conn {
    int fd, st, watching_out;
    uint32_t idx, gen; /* epoll data = gen<<32 | idx, so stale events are dropped */
    const unsigned char *pre; /* handshake request or close frame */
    size_t pre_len, pre_off;
    uint64_t data_pending; /* bytes of data frames still to write */
    uint64_t data_pos;     /* offset inside the periodic frame stream */
    unsigned char *in;
    size_t in_len, in_cap;
    int inflight;
    int msg_op;            /* opcode of the message being assembled */
    size_t msg_off;        /* bytes of it seen so far */
    uint64_t win_count;    /* echoes received in the measurement window */
    uint64_t total;        /* echoes received in all */
    double t_sent, t_start;
    /* subscribe mode */
    int joined;            /* the server's hello arrived: this socket is in the room */
    uint64_t next_seq;     /* the sequence number this socket expects next */
    uint64_t gaps, dups;   /* messages skipped; messages at or below one already seen */
} conn;

/* ---- options ---- */
static int mode = M_THROUGHPUT, port = 0, nconns = 1, depth = 1, binary = 0;
static size_t msg_size = 32;
static double duration = 3.0, warmup = 0.5, max_seconds = 60.0;
static long iterations = 5000, warm_iters = 200;
static const char *path = "/echo";
static char pids_arg[512] = "";

/* ---- shared state ---- */
static int ep;
static conn *conns;
static unsigned char *payload;     /* expected echo */
static unsigned char *batch;       /* depth copies of the masked frame */
static size_t flen, batch_len;
static unsigned char hs_req[512], pub_hs_req[512];
static size_t hs_req_len, pub_hs_req_len;
static const unsigned char mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};
static unsigned char close_frame[8];
static const char *ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; /* for the key below */
static int phase = PH_WARMUP;
static double t_phase;
static uint64_t opened, errors, hs_done /* closed_ok at window start */, hs_started, open_ready, closed_ok;
static char first_error[200] = "";
static double *samples;
static long nsamples;
static uint64_t measured_msgs;

/* ---- subscribe mode ---- */
static const char *pub_path = "/pub";
static long warm_msgs = 5, gentle_msgs = 60, burst_msgs = 200;
static double gentle_rate = 20.0, drain_seconds = 30.0;
static conn *pub;                  /* the publisher (conns[nconns]) */
static unsigned char *pub_buf;     /* the publisher's frames not yet written */
static size_t pub_cap;
static uint64_t pub_seq;           /* next sequence number to publish */
static uint64_t joined_subs, unique_deliveries, all_deliveries;
static double t_recv;              /* when the bytes being parsed were read */
static double t_last_delivery;
static float *gentle_lat, *burst_lat; /* milliseconds */
static long n_gentle_lat, n_burst_lat, cap_gentle_lat, cap_burst_lat;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_self(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

/* CPU seconds used so far by the comma-separated pids in --pids */
static double cpu_pids(void) {
    if (!pids_arg[0]) return 0;
    double total = 0;
    char buf[1024], copy[512];
    strncpy(copy, pids_arg, sizeof copy - 1);
    copy[sizeof copy - 1] = 0;
    long tck = sysconf(_SC_CLK_TCK);
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
        char fn[64];
        snprintf(fn, sizeof fn, "/proc/%s/stat", tok);
        FILE *f = fopen(fn, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')');
        if (!p) continue;
        unsigned long ut = 0, stt = 0;
        /* after ") " come fields 3..; utime is field 14, stime field 15 */
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt);
        total += (double)(ut + stt) / tck;
    }
    return total;
}

static void err(const char *what) {
    errors++;
    if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s", what);
}

static void set_out(conn *c, int on) {
    if (c->watching_out == on) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0),
                             .data.u64 = (uint64_t)c->gen << 32 | c->idx};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->watching_out = on;
}

static void start_conn(conn *c);

static void finish(conn *c, int abortive) {
    if (c->fd >= 0) {
        if (abortive) {
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->st = ST_FREE;
    /* handshake mode: the slot starts its next connection right away */
    if (mode == M_HANDSHAKE && phase != PH_STOP) start_conn(c);
}

static void fail(conn *c, const char *what) {
    err(what);
    finish(c, 1);
}

/* write as much pending output as the socket takes */
static void flush(conn *c) {
    while (c->pre_off < c->pre_len) {
        ssize_t w = send(c->fd, c->pre + c->pre_off, c->pre_len - c->pre_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) { set_out(c, 1); return; }
            fail(c, "send failed");
            return;
        }
        c->pre_off += w;
    }
    while (c->data_pending) {
        size_t avail = batch_len - c->data_pos;
        size_t n = c->data_pending < avail ? c->data_pending : avail;
        ssize_t w = send(c->fd, batch + c->data_pos, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) { set_out(c, 1); return; }
            fail(c, "send failed");
            return;
        }
        c->data_pending -= w;
        c->data_pos = (c->data_pos + w) % flen;
    }
    set_out(c, 0);
}

static void queue_msgs(conn *c, int k) {
    if (k <= 0) return;
    c->data_pending += (uint64_t)k * flen;
    c->inflight += k;
    c->t_sent = now();
}

static void queue_close(conn *c) {
    c->pre = close_frame;
    c->pre_len = sizeof close_frame;
    c->pre_off = 0;
    c->st = ST_CLOSING;
}

static void start_conn(conn *c) {
    uint32_t idx = c->idx, gen = c->gen + 1;
    memset(c, 0, offsetof(conn, in));
    c->idx = idx;
    c->gen = gen;
    c->in_len = 0;
    c->inflight = 0;
    c->msg_off = 0;
    c->msg_op = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) { err("socket() failed (ulimit -n?)"); c->st = ST_FREE; c->fd = -1; return; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->st = ST_CONNECTING;
    c->t_start = now();
    hs_started++;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        err("connect failed");
        close(c->fd);
        c->fd = -1;
        c->st = ST_FREE;
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT,
                             .data.u64 = (uint64_t)c->gen << 32 | c->idx};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->watching_out = 1;
}

/* the upgrade succeeded */
static void on_open(conn *c) {
    c->st = ST_OPEN;
    switch (mode) {
    case M_THROUGHPUT:
        if (phase != PH_STOP) queue_msgs(c, depth);
        else queue_close(c); /* upgraded only after the window: just close */
        opened++;
        break;
    case M_SUBSCRIBE: /* subscribers and the publisher only listen at first */
        break;
    default: /* latency, handshake, idle, probe: one message */
        queue_msgs(c, 1);
    }
}

/* a complete, verified echo arrived */
static void on_message(conn *c) {
    double t = now();
    c->inflight--;
    c->total++;
    if (phase == PH_MEASURE) c->win_count++;
    switch (mode) {
    case M_LATENCY:
        if (phase == PH_MEASURE && nsamples < iterations) samples[nsamples++] = t - c->t_sent;
        if (phase == PH_WARMUP && (long)c->total >= warm_iters) { phase = PH_MEASURE; t_phase = t; }
        if (phase == PH_MEASURE && nsamples >= iterations) phase = PH_STOP;
        if (phase != PH_STOP) queue_msgs(c, 1);
        else queue_close(c);
        break;
    case M_THROUGHPUT:
        if (phase != PH_STOP) queue_msgs(c, 1);
        else if (c->inflight == 0) queue_close(c);
        break;
    case M_HANDSHAKE:
    case M_PROBE:
        queue_close(c);
        break;
    case M_IDLE:
        open_ready++;
        break;
    }
    /* the caller flushes once for all the frames of one recv() */
}

static uint64_t parse_digits(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v * 10 + (p[i] - '0');
    return v;
}

/* subscribe mode: one complete text message for subscriber c; -1 if c failed */
static int on_broadcast(conn *c, const unsigned char *data, uint64_t len) {
    if (c == pub) { fail(c, "the server sent a message to the publisher"); return -1; }
    if (!c->joined) { /* the server's hello: this socket is now a member */
        c->joined = 1;
        joined_subs++;
        return 0;
    }
    /* "%010u %020u ...": sequence number, then the send time in ns */
    if (len != msg_size || data[10] != ' ') { fail(c, "broadcast has the wrong size or format"); return -1; }
    uint64_t seq = parse_digits(data, 10), sent_ns = parse_digits(data + 11, 20);
    float ms = (float)((t_recv - sent_ns * 1e-9) * 1e3);
    all_deliveries++;
    c->total++;
    if (seq < c->next_seq) { c->dups++; return 0; }
    c->gaps += seq - c->next_seq;
    c->next_seq = seq + 1;
    unique_deliveries++;
    t_last_delivery = t_recv;
    if (seq < (uint64_t)warm_msgs) return 0;
    if (seq < (uint64_t)(warm_msgs + gentle_msgs)) {
        if (n_gentle_lat < cap_gentle_lat) gentle_lat[n_gentle_lat++] = ms;
    } else if (n_burst_lat < cap_burst_lat) {
        burst_lat[n_burst_lat++] = ms;
    }
    return 0;
}

/* answer a ping with a masked pong carrying its payload (control frames: <= 125 bytes);
   written at once: a pong the socket cannot take now counts as an error */
static int send_pong(conn *c, const unsigned char *data, uint64_t len) {
    unsigned char f[6 + 125];
    if (len > 125) { fail(c, "ping payload longer than 125 bytes"); return -1; }
    f[0] = 0x8A;
    f[1] = 0x80 | (unsigned char)len;
    memcpy(f + 2, mask_key, 4);
    for (uint64_t i = 0; i < len; i++) f[6 + i] = data[i] ^ mask_key[i & 3];
    if (c->pre_off < c->pre_len || c->data_pos) { fail(c, "ping while a frame is half written"); return -1; }
    ssize_t w = send(c->fd, f, 6 + len, MSG_NOSIGNAL);
    if (w != (ssize_t)(6 + len)) { fail(c, "could not write a pong"); return -1; }
    return 0;
}

/* parse complete frames in c->in; returns -1 if the conn was closed */
static int parse_frames(conn *c) {
    size_t off = 0;
    while (c->in_len - off >= 2) {
        unsigned char *p = c->in + off;
        int fin = p[0] & 0x80, op = p[0] & 0x0f;
        if (p[0] & 0x70) { fail(c, "RSV bits set by server"); return -1; }
        if (p[1] & 0x80) { fail(c, "server frame is masked"); return -1; }
        uint64_t len = p[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (c->in_len - off < 4) break;
            len = ((uint64_t)p[2] << 8) | p[3];
            hl = 4;
        } else if (len == 127) {
            if (c->in_len - off < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
            hl = 10;
        }
        if (hl + len > c->in_cap) { fail(c, "server frame larger than expected"); return -1; }
        if (c->in_len - off < hl + len) break;
        unsigned char *data = p + hl;
        if (op == 0x8) { /* close */
            if (c->st == ST_CLOSING) {
                closed_ok++;
                finish(c, mode == M_HANDSHAKE || mode == M_IDLE);
            } else {
                char m[120];
                int code = len >= 2 ? (data[0] << 8 | data[1]) : 0;
                snprintf(m, sizeof m, "server closed unexpectedly (code %d)", code);
                fail(c, m);
            }
            return -1;
        } else if (op == 0x9) {
            /* RFC 6455 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong
               frame in response" (servers with keep-alive pings on close a silent peer) */
            if (send_pong(c, data, len) < 0) return -1;
        } else if (op == 0xA) {
            /* an unsolicited pong: ignore */
        } else if (mode == M_SUBSCRIBE) {
            if (op != 1 || !fin) { fail(c, "broadcast is not one unfragmented text frame"); return -1; }
            if (on_broadcast(c, data, len) < 0) return -1;
        } else {
            int want = binary ? 2 : 1;
            if (op != 0) {
                if (c->msg_off) { fail(c, "new message inside a fragmented one"); return -1; }
                c->msg_op = op;
            }
            if (c->msg_op != want) { fail(c, "echo has the wrong opcode"); return -1; }
            if (c->msg_off + len > msg_size ||
                memcmp(data, payload + c->msg_off, len) != 0) {
                fail(c, "echo payload differs from what was sent");
                return -1;
            }
            c->msg_off += len;
            if (fin) {
                if (c->msg_off != msg_size) { fail(c, "echo is short"); return -1; }
                c->msg_off = 0;
                c->msg_op = 0;
                if (c->inflight <= 0) { fail(c, "unsolicited message"); return -1; }
                on_message(c);
                if (c->st == ST_FREE || c->fd < 0) return -1;
            }
        }
        off += hl + len;
    }
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    return 0;
}

static void on_readable(conn *c) {
    if (c->in_len == c->in_cap) { fail(c, "input buffer full"); return; }
    ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (r == 0) {
        fail(c, c->st == ST_HS_SENT ? "server closed during handshake" : "server closed the TCP connection");
        return;
    }
    if (r < 0) {
        if (errno == EAGAIN) return;
        fail(c, errno == ECONNRESET ? "connection reset by server" : "recv failed");
        return;
    }
    c->in_len += r;
    t_recv = now();
    if (c->st == ST_HS_SENT) {
        unsigned char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end) return;
        size_t hlen = end + 4 - c->in;
        if (c->in_len < 12 || memcmp(c->in, "HTTP/1.1 101", 12) != 0) {
            fail(c, "upgrade refused (no 101 response)");
            return;
        }
        if (!memmem(c->in, hlen, ACCEPT, strlen(ACCEPT))) {
            fail(c, "bad Sec-WebSocket-Accept");
            return;
        }
        memmove(c->in, c->in + hlen, c->in_len - hlen);
        c->in_len -= hlen;
        on_open(c);
        flush(c);
        if (c->fd < 0) return;
    }
    if ((c->st == ST_OPEN || c->st == ST_CLOSING) && parse_frames(c) == 0) flush(c);
}

static void on_writable(conn *c) {
    if (c->st == ST_CONNECTING) {
        int e = 0;
        socklen_t l = sizeof e;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l);
        if (e) { fail(c, "connect refused"); return; }
        c->st = ST_HS_SENT;
        c->pre = c == pub ? pub_hs_req : hs_req;
        c->pre_len = c == pub ? pub_hs_req_len : hs_req_len;
        c->pre_off = 0;
    }
    flush(c);
}

static size_t build_hs_req(unsigned char *out, size_t cap, const char *p) {
    return snprintf((char *)out, cap,
                    "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n",
                    p, port);
}

static void build_frames(void) {
    payload = malloc(msg_size ? msg_size : 1);
    for (size_t i = 0; i < msg_size; i++)
        payload[i] = binary ? (unsigned char)((i * 131 + 7) % 256) : (unsigned char)('a' + i % 26);
    unsigned char hdr[14];
    size_t hl = 0;
    hdr[hl++] = 0x80 | (binary ? 2 : 1);
    if (msg_size < 126) {
        hdr[hl++] = 0x80 | msg_size;
    } else if (msg_size < 65536) {
        hdr[hl++] = 0x80 | 126;
        hdr[hl++] = msg_size >> 8;
        hdr[hl++] = msg_size & 0xff;
    } else {
        hdr[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) hdr[hl++] = ((uint64_t)msg_size >> (8 * i)) & 0xff;
    }
    memcpy(hdr + hl, mask_key, 4);
    hl += 4;
    flen = hl + msg_size;
    int copies = depth < 1 ? 1 : depth;
    batch_len = flen * copies;
    batch = malloc(batch_len);
    for (int k = 0; k < copies; k++) {
        unsigned char *f = batch + k * flen;
        memcpy(f, hdr, hl);
        for (size_t i = 0; i < msg_size; i++) f[hl + i] = payload[i] ^ mask_key[i & 3];
    }
    /* close frame, status 1000, masked */
    close_frame[0] = 0x88;
    close_frame[1] = 0x82;
    memcpy(close_frame + 2, mask_key, 4);
    close_frame[6] = 0x03 ^ mask_key[0];
    close_frame[7] = 0xe8 ^ mask_key[1];
    hs_req_len = build_hs_req(hs_req, sizeof hs_req, path);
    pub_hs_req_len = build_hs_req(pub_hs_req, sizeof pub_hs_req, pub_path);
}

/* append k masked broadcast frames (sequence number + send time) to the publisher's output */
static void publish(long k) {
    conn *c = pub;
    if (c->fd < 0 || c->st != ST_OPEN) return;
    if (c->pre_off == c->pre_len) c->pre_len = c->pre_off = 0; /* all written: start over */
    size_t hl = msg_size < 126 ? 6 : 8, need = c->pre_len + (size_t)k * (hl + msg_size);
    if (need > pub_cap) {
        pub_cap = need * 2;
        pub_buf = realloc(pub_buf, pub_cap);
    }
    unsigned char text[65536];
    memset(text, 'x', msg_size);
    for (long i = 0; i < k; i++) {
        char head[40];
        unsigned long long ns = (unsigned long long)(now() * 1e9);
        snprintf(head, sizeof head, "%010llu %020llu ", (unsigned long long)pub_seq++, ns);
        memcpy(text, head, 32);
        unsigned char *f = pub_buf + c->pre_len;
        f[0] = 0x81;
        if (hl == 6) {
            f[1] = 0x80 | msg_size;
        } else {
            f[1] = 0x80 | 126;
            f[2] = msg_size >> 8;
            f[3] = msg_size & 0xff;
        }
        memcpy(f + hl - 4, mask_key, 4);
        for (size_t j = 0; j < msg_size; j++) f[hl + j] = text[j] ^ mask_key[j & 3];
        c->pre_len += hl + msg_size;
    }
    c->pre = pub_buf;
    flush(c);
}

static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* "p50":..,"p99":..,"max":.. of n latencies (sorted in place) */
static void print_lat(const char *name, float *v, long n) {
    qsort(v, n, sizeof(float), cmp_f);
    double p50 = n ? v[n / 2] : 0, p99 = n ? v[(long)(n * 0.99) < n ? (long)(n * 0.99) : n - 1] : 0;
    printf("\"%s_samples\":%ld,\"%s_p50_ms\":%.3f,\"%s_p99_ms\":%.3f,\"%s_max_ms\":%.3f,", name, n, name,
           p50, name, p99, name, n ? v[n - 1] : 0.0);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int count_active(void) {
    int n = 0;
    for (int i = 0; i < nconns; i++) n += conns[i].st != ST_FREE;
    return n;
}

static void event_loop_once(int timeout_ms) {
    struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, timeout_ms);
    for (int i = 0; i < n; i++) {
        conn *c = &conns[evs[i].data.u64 & 0xffffffffu];
        if (c->fd < 0 || c->gen != (uint32_t)(evs[i].data.u64 >> 32)) continue;
        uint32_t e = evs[i].events;
        if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            if (c->st == ST_CONNECTING && (e & (EPOLLERR | EPOLLHUP))) { fail(c, "connect refused"); continue; }
            if (c->st != ST_CONNECTING) on_readable(c);
        }
        if (c->fd >= 0 && (e & EPOLLOUT)) on_writable(c);
    }
}

/* run the event loop until every subscriber has every message published so far
   (or a subscriber failed, or the deadline); returns 1 when all arrived */
static int wait_deliveries(double deadline) {
    while (now() < deadline) {
        if (unique_deliveries >= joined_subs * pub_seq) return 1;
        if (errors) return 0;
        event_loop_once(1);
    }
    return unique_deliveries >= joined_subs * pub_seq;
}

static int run_subscribe(double t0, double t_end) {
    /* 1. subscribers, with bounded concurrency, until each has the server's hello */
    int next = 0;
    while (now() < t_end && !errors) {
        int setting_up = 0;
        for (int i = 0; i < next; i++) setting_up += conns[i].st != ST_FREE && !conns[i].joined;
        while (next < nconns && setting_up < 64) {
            start_conn(&conns[next++]);
            setting_up++;
        }
        if (next == nconns && setting_up == 0) break;
        event_loop_once(10);
    }
    double open_seconds = now() - t0;
    /* 2. the publisher */
    start_conn(pub);
    while (now() < t_end && !errors && pub->st != ST_OPEN) event_loop_once(10);
    if (pub->st != ST_OPEN) err("the publisher did not connect");
    printf("READY %llu %llu\n", (unsigned long long)joined_subs, (unsigned long long)errors);
    fflush(stdout);
    /* the harness measures the server's memory now, then writes a line (or closes stdin) */
    struct pollfd pf = {.fd = 0, .events = POLLIN};
    double hold = now() + 120;
    while (now() < hold && poll(&pf, 1, 0) == 0) event_loop_once(20);

    uint64_t expected = 0;
    double g_seconds = 0, g_ccpu = 0, g_scpu = 0, g_drain = 0, b_seconds = 0, b_ccpu = 0, b_scpu = 0;
    int complete = 0;
    if (!errors) {
        /* 3. warm-up: one message at a time, each to everyone before the next */
        for (long i = 0; i < warm_msgs && !errors; i++) {
            publish(1);
            wait_deliveries(now() + drain_seconds);
        }
        /* 4. gentle: an open-loop rate, then the time until the last delivery */
        double c0 = cpu_self(), s0 = cpu_pids(), g0 = now(), last_send = g0;
        for (long i = 0; i < gentle_msgs && !errors;) {
            double due = g0 + i / gentle_rate;
            if (now() >= due) {
                publish(1);
                last_send = now();
                i++;
            } else {
                event_loop_once(1);
            }
        }
        wait_deliveries(now() + drain_seconds);
        g_seconds = now() - g0;
        g_drain = t_last_delivery - last_send;
        g_ccpu = (cpu_self() - c0) / g_seconds;
        g_scpu = (cpu_pids() - s0) / g_seconds;
        /* 5. burst: every message in one write, back to back */
        if (!errors) {
            uint64_t before = unique_deliveries;
            c0 = cpu_self(), s0 = cpu_pids();
            double b0 = now();
            publish(burst_msgs);
            wait_deliveries(now() + drain_seconds);
            b_seconds = (unique_deliveries > before ? t_last_delivery : now()) - b0;
            b_ccpu = (cpu_self() - c0) / (now() - b0);
            b_scpu = (cpu_pids() - s0) / (now() - b0);
        }
        expected = joined_subs * pub_seq;
        complete = unique_deliveries == expected;
        if (!complete) {
            char m[160];
            snprintf(m, sizeof m, "%llu of %llu deliveries arrived",
                     (unsigned long long)unique_deliveries, (unsigned long long)expected);
            err(m);
        }
    }
    /* 6. close everything, cleanly where the server answers */
    phase = PH_STOP;
    uint64_t gaps = 0, dups = 0, min_count = UINT64_MAX, max_count = 0;
    for (int i = 0; i <= nconns; i++) {
        conn *c = &conns[i];
        gaps += c->gaps;
        dups += c->dups;
        if (i < nconns) {
            if (c->total < min_count) min_count = c->total;
            if (c->total > max_count) max_count = c->total;
        }
        if (c->st == ST_OPEN) { queue_close(c); flush(c); }
    }
    double dl = now() + 10;
    int active = 1;
    while (active && now() < dl) {
        active = 0;
        for (int i = 0; i <= nconns; i++) active += conns[i].st != ST_FREE;
        event_loop_once(20);
    }
    for (int i = 0; i <= nconns; i++)
        if (conns[i].st != ST_FREE) finish(&conns[i], 1);
    if (gaps || dups) err("gaps or duplicates in the subscribers' sequences");
    long bursts = burst_msgs;
    printf("{\"mode\":\"subscribe\",\"conns\":%d,\"joined\":%llu,\"open_seconds\":%.3f,"
           "\"size\":%zu,\"warmup\":%ld,\"gentle\":%ld,\"rate\":%.1f,\"burst\":%ld,",
           nconns, (unsigned long long)joined_subs, open_seconds, msg_size, warm_msgs, gentle_msgs,
           gentle_rate, bursts);
    print_lat("gentle", gentle_lat, n_gentle_lat);
    print_lat("burst", burst_lat, n_burst_lat);
    printf("\"gentle_seconds\":%.3f,\"gentle_drain_ms\":%.3f,\"gentle_client_cpu\":%.3f,"
           "\"gentle_server_cpu\":%.3f,\"burst_seconds\":%.4f,\"burst_per_s\":%.1f,"
           "\"burst_client_cpu\":%.3f,\"burst_server_cpu\":%.3f,\"expected\":%llu,"
           "\"delivered\":%llu,\"received\":%llu,\"complete\":%s,\"gaps\":%llu,\"duplicates\":%llu,"
           "\"per_socket_min\":%llu,\"per_socket_max\":%llu,\"closed_ok\":%llu,"
           "\"errors\":%llu,\"first_error\":\"%s\"}\n",
           g_seconds, g_drain * 1e3, g_ccpu, g_scpu, b_seconds,
           b_seconds > 0 ? joined_subs * (double)bursts / b_seconds : 0, b_ccpu, b_scpu,
           (unsigned long long)expected, (unsigned long long)unique_deliveries,
           (unsigned long long)all_deliveries, complete ? "true" : "false", (unsigned long long)gaps,
           (unsigned long long)dups, (unsigned long long)(min_count == UINT64_MAX ? 0 : min_count),
           (unsigned long long)max_count, (unsigned long long)closed_ok, (unsigned long long)errors,
           first_error);
    return errors ? 1 : 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen MODE --port P [--path /echo] [--conns C] [--depth D] [--size BYTES]\n"
            "               [--binary] [--duration S] [--warmup S] [--iterations N] [--pids a,b]\n"
            "       loadgen subscribe --port P [--path /sub] [--pub-path /pub] [--conns C] [--size 64]\n"
            "               [--warm N] [--gentle N] [--rate MSG_PER_S] [--burst N] [--drain S]\n"
            "MODE: latency | throughput | handshake | idle | probe | subscribe\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *m = argv[1];
    if (!strcmp(m, "latency")) mode = M_LATENCY;
    else if (!strcmp(m, "throughput")) mode = M_THROUGHPUT;
    else if (!strcmp(m, "handshake")) mode = M_HANDSHAKE;
    else if (!strcmp(m, "idle")) mode = M_IDLE;
    else if (!strcmp(m, "probe")) mode = M_PROBE;
    else if (!strcmp(m, "subscribe")) { mode = M_SUBSCRIBE; path = "/sub"; msg_size = 64; }
    else usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--binary")) { binary = 1; continue; }
        if (!v) usage();
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--path")) path = v;
        else if (!strcmp(a, "--conns")) nconns = atoi(v);
        else if (!strcmp(a, "--depth")) depth = atoi(v);
        else if (!strcmp(a, "--size")) msg_size = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--warmup")) warmup = atof(v);
        else if (!strcmp(a, "--iterations")) iterations = atol(v);
        else if (!strcmp(a, "--max-seconds")) max_seconds = atof(v);
        else if (!strcmp(a, "--pids")) snprintf(pids_arg, sizeof pids_arg, "%s", v);
        else if (!strcmp(a, "--pub-path")) pub_path = v;
        else if (!strcmp(a, "--warm")) warm_msgs = atol(v);
        else if (!strcmp(a, "--gentle")) gentle_msgs = atol(v);
        else if (!strcmp(a, "--rate")) gentle_rate = atof(v);
        else if (!strcmp(a, "--burst")) burst_msgs = atol(v);
        else if (!strcmp(a, "--drain")) drain_seconds = atof(v);
        else usage();
        i++;
    }
    if (!port || nconns < 1 || depth < 1 || depth > 64) usage();
    if (mode == M_LATENCY || mode == M_PROBE) { nconns = 1; depth = 1; }
    if (mode != M_THROUGHPUT) depth = 1;
    if (mode == M_SUBSCRIBE && (msg_size < 32 || msg_size > 65535 || gentle_rate <= 0)) usage();
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    build_frames();
    ep = epoll_create1(0);
    /* subscribe mode: conns[nconns] is the publisher; small input buffers for 10,000+ sockets */
    int slots = mode == M_SUBSCRIBE ? nconns + 1 : nconns;
    conns = calloc(slots, sizeof(conn));
    size_t cap = mode == M_SUBSCRIBE ? 16384 : msg_size + 64 < 65536 ? 65536 : msg_size + 64;
    for (int i = 0; i < slots; i++) {
        conns[i].fd = -1;
        conns[i].idx = i;
        conns[i].in_cap = cap;
        conns[i].in = malloc(cap);
    }
    samples = calloc(iterations > 0 ? iterations : 1, sizeof(double));
    if (mode == M_SUBSCRIBE) {
        pub = &conns[nconns];
        cap_gentle_lat = (long)nconns * gentle_msgs;
        cap_burst_lat = (long)nconns * burst_msgs;
        gentle_lat = malloc((cap_gentle_lat + 1) * sizeof(float));
        burst_lat = malloc((cap_burst_lat + 1) * sizeof(float));
    }

    double t0 = now(), t_end = t0 + max_seconds;
    double cpu0 = 0, cpu1 = 0, scpu0 = 0, scpu1 = 0, tm0 = 0, tm1 = 0;
    int in_flight_limit = 64; /* idle mode: connections being set up at once */
    int next = 0;

    if (mode == M_SUBSCRIBE) return run_subscribe(t0, t_end);
    if (mode == M_IDLE) {
        /* open connections with bounded concurrency, then hold them */
        while (now() < t_end) {
            int setting_up = 0;
            for (int i = 0; i < next; i++)
                setting_up += conns[i].st != ST_FREE && conns[i].total == 0;
            while (next < nconns && setting_up < in_flight_limit) {
                start_conn(&conns[next++]);
                setting_up++;
            }
            if (next == nconns && setting_up == 0) break;
            event_loop_once(10);
        }
        double t_open = now() - t0;
        printf("READY %llu %llu\n", (unsigned long long)open_ready, (unsigned long long)errors);
        fflush(stdout);
        /* wait for the harness to take its measurement (a line on stdin) */
        struct pollfd pf = {.fd = 0, .events = POLLIN};
        double deadline = now() + 120;
        while (now() < deadline) {
            if (poll(&pf, 1, 0) > 0) break;
            event_loop_once(50);
        }
        phase = PH_STOP;
        uint64_t held = (uint64_t)count_active();
        for (int i = 0; i < nconns; i++)
            if (conns[i].st == ST_OPEN) { queue_close(&conns[i]); flush(&conns[i]); }
        double dl = now() + 5;
        while (count_active() && now() < dl) event_loop_once(20);
        for (int i = 0; i < nconns; i++)
            if (conns[i].st != ST_FREE) finish(&conns[i], 1);
        printf("{\"mode\":\"idle\",\"conns\":%d,\"open\":%llu,\"held\":%llu,\"open_seconds\":%.3f,"
               "\"closed_ok\":%llu,\"errors\":%llu,\"first_error\":\"%s\"}\n",
               nconns, (unsigned long long)open_ready, (unsigned long long)held, t_open,
               (unsigned long long)closed_ok, (unsigned long long)errors, first_error);
        return errors ? 1 : 0;
    }

    for (int i = 0; i < nconns; i++) start_conn(&conns[i]);
    t_phase = now();
    if (mode == M_THROUGHPUT || mode == M_HANDSHAKE) phase = PH_WARMUP;

    int measuring_started = 0, measuring_done = 0;
    while (1) {
        double t = now();
        if (t > t_end) {
            int stuck = 0;
            for (int i = 0; i < nconns; i++) stuck += conns[i].st != ST_FREE;
            char m[160];
            snprintf(m, sizeof m, "time limit reached with %d connection(s) still waiting for echoes or close",
                     stuck);
            err(m);
            if (getenv("LOADGEN_DEBUG"))
                for (int i = 0; i < nconns; i++)
                    if (conns[i].st != ST_FREE)
                        fprintf(stderr, "conn %d st=%d inflight=%d total=%llu in_len=%zu pending=%llu\n", i,
                                conns[i].st, conns[i].inflight, (unsigned long long)conns[i].total,
                                conns[i].in_len, (unsigned long long)conns[i].data_pending);
            break;
        }
        if ((mode == M_THROUGHPUT || mode == M_HANDSHAKE)) {
            /* throughput: the window opens after the warm-up once every connection is
               upgraded (or 5 s later: a server that starves handshakes shows in Jain) */
            if (phase == PH_WARMUP && t - t_phase >= warmup &&
                (mode != M_THROUGHPUT || opened >= (uint64_t)nconns || t - t_phase >= warmup + 5)) {
                phase = PH_MEASURE;
                t_phase = t;
            }
            if (phase == PH_MEASURE && t - t_phase >= duration) phase = PH_STOP;
        }
        if (phase == PH_MEASURE && !measuring_started) {
            measuring_started = 1;
            for (int i = 0; i < nconns; i++) conns[i].win_count = 0;
            hs_done = closed_ok;
            cpu0 = cpu_self();
            scpu0 = cpu_pids();
            tm0 = now();
        }
        if (phase == PH_STOP && measuring_started && !measuring_done) {
            measuring_done = 1;
            tm1 = now();
            cpu1 = cpu_self();
            scpu1 = cpu_pids();
            measured_msgs = 0;
            for (int i = 0; i < nconns; i++) measured_msgs += conns[i].win_count;
            if (mode == M_HANDSHAKE) measured_msgs = closed_ok - hs_done;
            /* drain: no new messages; close each conn once its echoes are in */
            if (mode == M_THROUGHPUT)
                for (int i = 0; i < nconns; i++)
                    if (conns[i].st == ST_OPEN && conns[i].inflight == 0) {
                        queue_close(&conns[i]);
                        flush(&conns[i]);
                    }
            t_end = now() + 5 < t_end ? now() + 5 : t_end;
        }
        if ((phase == PH_STOP || mode == M_PROBE) && count_active() == 0) break;
        event_loop_once(5);
    }
    for (int i = 0; i < nconns; i++)
        if (conns[i].st != ST_FREE) { err("connection still open at the end"); finish(&conns[i], 1); }

    double win = tm1 - tm0;
    double ccpu = win > 0 ? (cpu1 - cpu0) / win : 0;
    double scpu = win > 0 ? (scpu1 - scpu0) / win : 0;

    if (mode == M_PROBE) {
        int ok = errors == 0 && conns[0].total == 1;
        printf("{\"mode\":\"probe\",\"ok\":%s,\"errors\":%llu,\"first_error\":\"%s\"}\n",
               ok ? "true" : "false", (unsigned long long)errors, first_error);
        return ok ? 0 : 1;
    }
    if (mode == M_LATENCY) {
        qsort(samples, nsamples, sizeof(double), cmp_d);
        double sum = 0;
        for (long i = 0; i < nsamples; i++) sum += samples[i];
        double p50 = nsamples ? samples[nsamples / 2] : 0;
        double p99 = nsamples ? samples[(long)(nsamples * 0.99) < nsamples ? (long)(nsamples * 0.99) : nsamples - 1] : 0;
        printf("{\"mode\":\"latency\",\"samples\":%ld,\"p50_us\":%.2f,\"p99_us\":%.2f,\"mean_us\":%.2f,"
               "\"errors\":%llu,\"first_error\":\"%s\"}\n",
               nsamples, p50 * 1e6, p99 * 1e6, nsamples ? sum / nsamples * 1e6 : 0,
               (unsigned long long)errors, first_error);
        return errors ? 1 : 0;
    }
    /* throughput / handshake */
    double sum = 0, sq = 0;
    for (int i = 0; i < nconns; i++) {
        double x = (double)conns[i].win_count;
        sum += x;
        sq += x * x;
    }
    if (getenv("LOADGEN_DEBUG"))
        for (int i = 0; i < nconns; i++) fprintf(stderr, "%llu ", (unsigned long long)conns[i].win_count);
    double jain = sq > 0 ? sum * sum / (nconns * sq) : 0;
    uint64_t count = measured_msgs;
    printf("{\"mode\":\"%s\",\"conns\":%d,\"depth\":%d,\"size\":%zu,\"seconds\":%.3f,\"count\":%llu,"
           "\"per_s\":%.1f,\"mb_per_s\":%.3f,\"jain\":%.4f,\"client_cpu\":%.3f,\"server_cpu\":%.3f,"
           "\"errors\":%llu,\"first_error\":\"%s\"}\n",
           mode == M_HANDSHAKE ? "handshake" : "throughput", nconns, depth, msg_size, win,
           (unsigned long long)count, win > 0 ? count / win : 0,
           win > 0 ? count * (double)msg_size / win / 1e6 : 0, jain, ccpu, scpu,
           (unsigned long long)errors, first_error);
    return errors ? 1 : 0;
}
