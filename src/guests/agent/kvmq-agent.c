/*
 * kvmq-agent: the process inside every guest (VM or container) that the host drives over one byte
 * stream. It speaks the line protocol in PROTOCOL.md: versioned JSON, one message per line.
 *
 * Why C and static: the same binary must run from an initramfs with nothing but busybox, and as the
 * only process of a FROM scratch container. It times the workload itself with CLOCK_MONOTONIC around
 * fork/exec/wait, so the seconds a guest reports exclude the host-guest channel and the barrier.
 *
 *   kvmq-agent --serial /dev/ttyS1 --scratch /scratch [--init]   (VMs: a second UART, raw mode)
 *   kvmq-agent --stdio --scratch /scratch                        (containers: stdin/stdout)
 *
 * --init: the agent is PID 1's successor in a VM; "shutdown" powers the machine off.
 *
 *   kvmq-agent --load-modules DIR NAME...   insert DIR/NAME.ko in order, then exit (the VM's /init)
 *
 * Loading every module from one process matters under emulation, where each busybox insmod exec costs
 * tens of milliseconds of emulated start-up before the module itself is even read.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PROTOCOL 1
#define TAIL 2048
#define MAX_LINE (16u << 20)

static int in_fd = 0, out_fd = 1, init_mode = 0;
static const char *scratch = "/scratch";

/* ---------- a small JSON reader: enough for the protocol's objects, arrays, strings, numbers ---------- */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
typedef struct J {
  int t;
  double n;
  char *s; /* string value (NUL-terminated; len holds the true length) */
  size_t len;
  char *key; /* member name when inside an object */
  struct J *kid, *next;
} J;

static void jfree(J *j) {
  while (j) {
    J *n = j->next;
    jfree(j->kid);
    free(j->s);
    free(j->key);
    free(j);
    j = n;
  }
}

typedef struct { const char *p, *end; int depth; } P;

static void ws(P *p) {
  while (p->p < p->end && (*p->p == ' ' || *p->p == '\t' || *p->p == '\r' || *p->p == '\n')) p->p++;
}

static void put_utf8(char **o, unsigned c) {
  char *d = *o;
  if (c < 0x80) *d++ = (char)c;
  else if (c < 0x800) { *d++ = (char)(0xC0 | c >> 6); *d++ = (char)(0x80 | (c & 0x3F)); }
  else if (c < 0x10000) { *d++ = (char)(0xE0 | c >> 12); *d++ = (char)(0x80 | (c >> 6 & 0x3F)); *d++ = (char)(0x80 | (c & 0x3F)); }
  else { *d++ = (char)(0xF0 | c >> 18); *d++ = (char)(0x80 | (c >> 12 & 0x3F)); *d++ = (char)(0x80 | (c >> 6 & 0x3F)); *d++ = (char)(0x80 | (c & 0x3F)); }
  *o = d;
}

static int hex4(const char *s, unsigned *v) {
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    *v <<= 4;
    if (c >= '0' && c <= '9') *v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') *v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') *v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  return 0;
}

static char *pstr(P *p, size_t *len) {
  if (p->p >= p->end || *p->p != '"') return NULL;
  p->p++;
  char *buf = malloc((size_t)(p->end - p->p) + 1), *o = buf;
  if (!buf) return NULL;
  while (p->p < p->end && *p->p != '"') {
    unsigned char c = (unsigned char)*p->p++;
    if (c < 0x20) goto bad;
    if (c != '\\') { *o++ = (char)c; continue; }
    if (p->p >= p->end) goto bad;
    c = (unsigned char)*p->p++;
    switch (c) {
      case '"': *o++ = '"'; break;
      case '\\': *o++ = '\\'; break;
      case '/': *o++ = '/'; break;
      case 'b': *o++ = '\b'; break;
      case 'f': *o++ = '\f'; break;
      case 'n': *o++ = '\n'; break;
      case 'r': *o++ = '\r'; break;
      case 't': *o++ = '\t'; break;
      case 'u': {
        unsigned u, lo;
        if (p->end - p->p < 4 || hex4(p->p, &u)) goto bad;
        p->p += 4;
        if (u >= 0xD800 && u < 0xDC00 && p->end - p->p >= 6 && p->p[0] == '\\' && p->p[1] == 'u' && !hex4(p->p + 2, &lo) &&
            lo >= 0xDC00 && lo < 0xE000) {
          u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
          p->p += 6;
        }
        put_utf8(&o, u);
        break;
      }
      default: goto bad;
    }
  }
  if (p->p >= p->end) goto bad;
  p->p++;
  *o = 0;
  *len = (size_t)(o - buf);
  return buf;
bad:
  free(buf);
  return NULL;
}

static J *pval(P *p);

static J *pval(P *p) {
  ws(p);
  if (p->p >= p->end || ++p->depth > 32) return NULL;
  J *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  char c = *p->p;
  if (c == '{' || c == '[') {
    j->t = c == '{' ? J_OBJ : J_ARR;
    p->p++;
    J **tail = &j->kid;
    ws(p);
    if (p->p < p->end && *p->p == (c == '{' ? '}' : ']')) { p->p++; goto done; }
    for (;;) {
      char *key = NULL;
      size_t kl;
      if (j->t == J_OBJ) {
        ws(p);
        if (!(key = pstr(p, &kl))) goto bad;
        ws(p);
        if (p->p >= p->end || *p->p != ':') { free(key); goto bad; }
        p->p++;
      }
      J *k = pval(p);
      if (!k) { free(key); goto bad; }
      k->key = key;
      *tail = k;
      tail = &k->next;
      ws(p);
      if (p->p < p->end && *p->p == ',') { p->p++; continue; }
      if (p->p < p->end && *p->p == (c == '{' ? '}' : ']')) { p->p++; break; }
      goto bad;
    }
  } else if (c == '"') {
    j->t = J_STR;
    if (!(j->s = pstr(p, &j->len))) goto bad;
  } else if (!strncmp(p->p, "true", 4) && p->end - p->p >= 4) { j->t = J_BOOL; j->n = 1; p->p += 4; }
  else if (!strncmp(p->p, "false", 5) && p->end - p->p >= 5) { j->t = J_BOOL; p->p += 5; }
  else if (!strncmp(p->p, "null", 4) && p->end - p->p >= 4) { j->t = J_NULL; p->p += 4; }
  else {
    char *e;
    j->t = J_NUM;
    j->n = strtod(p->p, &e);
    if (e == p->p || e > p->end) goto bad;
    p->p = e;
  }
done:
  p->depth--;
  return j;
bad:
  jfree(j);
  return NULL;
}

static J *jparse(const char *s, size_t n) {
  P p = {s, s + n, 0};
  J *j = pval(&p);
  if (!j) return NULL;
  ws(&p);
  if (p.p != p.end) { jfree(j); return NULL; }
  return j;
}

static J *jget(J *o, const char *key) {
  if (!o || o->t != J_OBJ) return NULL;
  for (J *k = o->kid; k; k = k->next)
    if (!strcmp(k->key, key)) return k;
  return NULL;
}

static const char *jstr(J *o, const char *key) {
  J *v = jget(o, key);
  return v && v->t == J_STR ? v->s : NULL;
}

/* ---------- a small JSON writer into a growing buffer ---------- */

typedef struct { char *b; size_t n, cap; } W;

static void wraw(W *w, const char *s, size_t n) {
  if (w->n + n + 1 > w->cap) {
    w->cap = (w->n + n + 1) * 2;
    w->b = realloc(w->b, w->cap);
    if (!w->b) _exit(70);
  }
  memcpy(w->b + w->n, s, n);
  w->n += n;
  w->b[w->n] = 0;
}
static void wf(W *w, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  wraw(w, tmp, (size_t)(n < (int)sizeof tmp ? n : (int)sizeof tmp - 1));
}
static void wstr(W *w, const char *s, size_t n) {
  wraw(w, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"') wraw(w, "\\\"", 2);
    else if (c == '\\') wraw(w, "\\\\", 2);
    else if (c == '\n') wraw(w, "\\n", 2);
    else if (c == '\t') wraw(w, "\\t", 2);
    else if (c < 0x20 || c == 0x7F) wf(w, "\\u%04x", c);
    else if (c >= 0x80) wf(w, "\\u%04x", c); /* output tails may be cut mid-character: keep the line valid */
    else wraw(w, (const char *)&c, 1);
  }
  wraw(w, "\"", 1);
}

static void send_line(W *w) {
  wraw(w, "\n", 1);
  size_t off = 0;
  while (off < w->n) {
    ssize_t r = write(out_fd, w->b + off, w->n - off);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      break;
    }
    off += (size_t)r;
  }
  free(w->b);
  w->b = NULL;
  w->n = w->cap = 0;
}

static void begin(W *w, const char *op, double id) {
  wf(w, "{\"v\":%d,\"op\":\"%s\"", PROTOCOL, op);
  if (id >= 0) wf(w, ",\"id\":%.0f", id);
}

static void reply_error(double id, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  W w = {0};
  begin(&w, "error", id);
  wraw(&w, ",\"message\":", 11);
  wstr(&w, msg, strlen(msg));
  wraw(&w, "}", 1);
  send_line(&w);
}

/* ---------- steps, the same four as the host runs (src/host.ts runStep) ---------- */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A path inside the scratch directory: relative, with no ".." component. */
static int inside(const char *rel, char *out, size_t cap) {
  if (!rel || !*rel || rel[0] == '/') return -1;
  const char *s = rel;
  while (*s) {
    const char *e = strchrnul(s, '/');
    if (e - s == 2 && s[0] == '.' && s[1] == '.') return -1;
    s = *e ? e + 1 : e;
  }
  if ((size_t)snprintf(out, cap, "%s/%s", scratch, rel) >= cap) return -1;
  return 0;
}

typedef struct { int code; double seconds; char tail[TAIL + 1]; size_t tail_len; char err[256]; } Run;

/* fork/exec by argument vector in the scratch directory; stdout+stderr go to a memory file so the
   guest spends nothing on the channel while a timed command runs. */
static int run_argv(J *argv, Run *r) {
  memset(r, 0, sizeof *r);
  int argc = 0;
  for (J *k = argv ? argv->kid : NULL; k; k = k->next) {
    if (k->t != J_STR) { snprintf(r->err, sizeof r->err, "argv entries must be strings"); return -1; }
    argc++;
  }
  if (!argv || argv->t != J_ARR || argc == 0) { snprintf(r->err, sizeof r->err, "argv must be a non-empty array"); return -1; }
  char **av = calloc((size_t)argc + 1, sizeof *av);
  int i = 0;
  for (J *k = argv->kid; k; k = k->next) av[i++] = k->s;
  int mfd = memfd_create("kvmq-out", MFD_CLOEXEC);
  if (mfd < 0) { snprintf(r->err, sizeof r->err, "memfd_create: %s", strerror(errno)); free(av); return -1; }
  int ep[2]; /* exec failure report: closed on a successful exec */
  if (pipe2(ep, O_CLOEXEC)) { free(av); close(mfd); return -1; }
  double t0 = now();
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(mfd, 1);
    dup2(mfd, 2);
    if (chdir(scratch)) { int e = errno; (void)!write(ep[1], &e, sizeof e); _exit(127); }
    execvp(av[0], av);
    int e = errno;
    (void)!write(ep[1], &e, sizeof e);
    _exit(127);
  }
  close(ep[1]);
  if (pid < 0) { snprintf(r->err, sizeof r->err, "fork: %s", strerror(errno)); close(ep[0]); close(mfd); free(av); return -1; }
  int st = 0;
  for (;;) { /* as PID 1 the agent also inherits orphans: reap them until our child is the one */
    pid_t w = waitpid(-1, &st, 0);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
  }
  r->seconds = now() - t0;
  int e = 0;
  ssize_t got = read(ep[0], &e, sizeof e);
  close(ep[0]);
  if (got == (ssize_t)sizeof e) {
    snprintf(r->err, sizeof r->err, "cannot run %s: %s", av[0], strerror(e));
    free(av);
    close(mfd);
    return -1;
  }
  r->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  off_t size = lseek(mfd, 0, SEEK_END);
  off_t from = size > TAIL ? size - TAIL : 0;
  ssize_t n = pread(mfd, r->tail, TAIL, from);
  r->tail_len = n > 0 ? (size_t)n : 0;
  close(mfd);
  free(av);
  return 0;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f) {
  (void)sb; (void)flag; (void)f;
  return remove(p) && errno != ENOENT ? -1 : 0;
}

static int drop_caches(char *err, size_t cap) {
  sync(); /* write back dirty pages first, or dropping the clean ones leaves the file half in memory */
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
  if (fd < 0 || write(fd, "3", 1) != 1) {
    snprintf(err, cap, "cannot drop the page cache: %s", strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  return 0;
}

/* Run a list of steps; on failure a message goes to err. */
static int run_steps(J *steps, char *err, size_t cap) {
  if (steps && steps->t != J_ARR) { snprintf(err, cap, "steps must be an array"); return -1; }
  for (J *s = steps ? steps->kid : NULL; s; s = s->next) {
    const char *op = jstr(s, "op");
    char full[4096];
    if (!op) { snprintf(err, cap, "a step needs an op"); return -1; }
    if (!strcmp(op, "write") || !strcmp(op, "remove")) {
      if (inside(jstr(s, "path"), full, sizeof full)) { snprintf(err, cap, "path %s leaves the scratch directory", jstr(s, "path") ? jstr(s, "path") : "(none)"); return -1; }
    }
    if (!strcmp(op, "write")) {
      J *c = jget(s, "content");
      if (!c || c->t != J_STR) { snprintf(err, cap, "write needs a content string"); return -1; }
      int fd = open(full, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) { snprintf(err, cap, "write %.900s: %s", full, strerror(errno)); return -1; }
      size_t off = 0;
      while (off < c->len) {
        ssize_t r = write(fd, c->s + off, c->len - off);
        if (r < 0) { if (errno == EINTR) continue; snprintf(err, cap, "write %.900s: %s", full, strerror(errno)); close(fd); return -1; }
        off += (size_t)r;
      }
      close(fd);
    } else if (!strcmp(op, "remove")) {
      struct stat sb;
      if (lstat(full, &sb) == 0 && nftw(full, rm_one, 16, FTW_DEPTH | FTW_PHYS)) { snprintf(err, cap, "remove %.900s: %s", full, strerror(errno)); return -1; }
    } else if (!strcmp(op, "exec")) {
      Run r;
      if (run_argv(jget(s, "argv"), &r)) { snprintf(err, cap, "%s", r.err); return -1; }
      if (r.code) { snprintf(err, cap, "setup step %s exited with %d: %.*s", jget(s, "argv")->kid->s, r.code, (int)(r.tail_len > 600 ? 600 : r.tail_len), r.tail + (r.tail_len > 600 ? r.tail_len - 600 : 0)); return -1; }
    } else if (!strcmp(op, "dropCaches")) {
      if (drop_caches(err, cap)) return -1;
    } else {
      snprintf(err, cap, "unknown step op %s", op);
      return -1;
    }
  }
  return 0;
}

/* ---------- sysctl: only vm.* keys, as whole numbers; read back after writing ---------- */

static int sysctl_path(const char *key, char *out, size_t cap) {
  if (strncmp(key, "vm.", 3) || strlen(key) > 64) return -1;
  for (const char *c = key + 3; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '-')) return -1; /* vm.page-cluster */
  snprintf(out, cap, "/proc/sys/vm/%s", key + 3);
  return 0;
}

static void op_sysctl(double id, J *msg) {
  J *vals = jget(msg, "values");
  if (!vals || vals->t != J_OBJ) { reply_error(id, "sysctl needs a values object"); return; }
  char path[128], buf[64];
  for (J *k = vals->kid; k; k = k->next) {
    if (sysctl_path(k->key, path, sizeof path) || k->t != J_NUM) { reply_error(id, "sysctl key %s is not a vm.* integer", k->key); return; }
    int fd = open(path, O_WRONLY);
    int n = snprintf(buf, sizeof buf, "%.0f\n", k->n);
    if (fd < 0 || write(fd, buf, (size_t)n) != n) { reply_error(id, "cannot write %s: %s", k->key, strerror(errno)); if (fd >= 0) close(fd); return; }
    close(fd);
  }
  W w = {0};
  begin(&w, "ok", id);
  wraw(&w, ",\"readBack\":{", 13);
  int first = 1;
  for (J *k = vals->kid; k; k = k->next) {
    sysctl_path(k->key, path, sizeof path);
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    buf[n > 0 ? n : 0] = 0;
    if (!first) wraw(&w, ",", 1);
    first = 0;
    wstr(&w, k->key, strlen(k->key));
    wf(&w, ":%ld", strtol(buf, NULL, 10));
  }
  wraw(&w, "}}", 2);
  send_line(&w);
}

/* ---------- the session ---------- */

static J *prepared = NULL; /* the timed argv, held between prepare and go */

static void power_off(void) {
  sync();
  if (init_mode) {
    reboot(RB_POWER_OFF);
    for (;;) pause();
  }
  exit(0);
}

static void handle(const char *line, size_t n) {
  J *msg = jparse(line, n);
  if (!msg || msg->t != J_OBJ) { reply_error(-1, "not a JSON object: %.*s", (int)(n > 80 ? 80 : n), line); jfree(msg); return; }
  J *jid = jget(msg, "id"), *jv = jget(msg, "v");
  double id = jid && jid->t == J_NUM ? jid->n : -1;
  const char *op = jstr(msg, "op");
  char err[1024];
  if (!jv || jv->t != J_NUM || (int)jv->n != PROTOCOL) { reply_error(id, "protocol version %d expected", PROTOCOL); jfree(msg); return; }
  if (!op) { reply_error(id, "a message needs an op"); jfree(msg); return; }
  if (!strcmp(op, "ping")) {
    W w = {0};
    begin(&w, "pong", id);
    wraw(&w, "}", 1);
    send_line(&w);
  } else if (!strcmp(op, "sysctl")) {
    op_sysctl(id, msg);
  } else if (!strcmp(op, "steps")) {
    if (run_steps(jget(msg, "steps"), err, sizeof err)) reply_error(id, "%s", err);
    else { W w = {0}; begin(&w, "ok", id); wraw(&w, "}", 1); send_line(&w); }
  } else if (!strcmp(op, "prepare")) {
    J *cmd = jget(msg, "command");
    if (!cmd || cmd->t != J_ARR || !cmd->kid) reply_error(id, "prepare needs a command array");
    else if (run_steps(jget(msg, "setup"), err, sizeof err)) reply_error(id, "%s", err);
    else {
      jfree(prepared);
      /* keep only the command: detach it from the message before the message is freed */
      J **pp = &msg->kid;
      while (*pp != cmd) pp = &(*pp)->next;
      *pp = cmd->next;
      cmd->next = NULL;
      prepared = cmd;
      W w = {0};
      begin(&w, "prepared", id);
      wraw(&w, "}", 1);
      send_line(&w);
    }
  } else if (!strcmp(op, "go")) {
    Run r;
    if (!prepared) reply_error(id, "go without prepare");
    else if (run_argv(prepared, &r)) reply_error(id, "%s", r.err);
    else {
      W w = {0};
      begin(&w, r.code ? "error" : "result", id);
      wf(&w, ",\"seconds\":%.6f,\"exit\":%d,\"output\":", r.seconds, r.code);
      wstr(&w, r.tail, r.tail_len);
      if (r.code) {
        char m[160];
        snprintf(m, sizeof m, "%s exited with %d", prepared->kid->s, r.code);
        wraw(&w, ",\"message\":", 11);
        wstr(&w, m, strlen(m));
      }
      wraw(&w, "}", 1);
      send_line(&w);
    }
    jfree(prepared);
    prepared = NULL;
  } else if (!strcmp(op, "shutdown")) {
    W w = {0};
    begin(&w, "bye", id);
    wraw(&w, "}", 1);
    send_line(&w);
    jfree(msg);
    power_off();
  } else {
    reply_error(id, "unknown op %s", op);
  }
  jfree(msg);
}

static void send_ready(void) {
  struct utsname u;
  uname(&u);
  W w = {0};
  begin(&w, "ready", -1);
  wf(&w, ",\"protocol\":%d,\"agent\":\"kvmq-agent\",\"scratch\":", PROTOCOL);
  wstr(&w, scratch, strlen(scratch));
  wraw(&w, ",\"kernel\":", 10);
  wstr(&w, u.release, strlen(u.release));
  wf(&w, ",\"pid\":%d}", (int)getpid());
  send_line(&w);
}

static int open_serial(const char *dev) {
  /* ONE descriptor for both directions: re-opening the tty per message loses the channel. */
  int fd = open(dev, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct termios t;
  if (tcgetattr(fd, &t) == 0) {
    cfmakeraw(&t);
    t.c_cflag &= ~(tcflag_t)HUPCL;
    t.c_cflag |= CLOCAL | CREAD;
    cfsetispeed(&t, B115200);
    cfsetospeed(&t, B115200);
    tcsetattr(fd, TCSANOW, &t);
  }
  return fd;
}

static int load_modules(const char *dir, int n, char **names) {
  int failed = 0;
  for (int i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.ko", dir, names[i]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)) {
      fprintf(stderr, "kvmq-agent: cannot load %s: %s\n", path, strerror(errno));
      failed = 1;
    }
    if (fd >= 0) close(fd);
  }
  return failed;
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "--load-modules")) return load_modules(argv[2], argc - 3, argv + 3);
  const char *serial = NULL;
  int stdio_mode = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--serial") && i + 1 < argc) serial = argv[++i];
    else if (!strcmp(argv[i], "--scratch") && i + 1 < argc) scratch = argv[++i];
    else if (!strcmp(argv[i], "--stdio")) stdio_mode = 1;
    else if (!strcmp(argv[i], "--init")) init_mode = 1;
    else if (!strcmp(argv[i], "--version")) { printf("kvmq-agent protocol %d\n", PROTOCOL); return 0; }
    else { fprintf(stderr, "usage: kvmq-agent (--serial DEV | --stdio) [--scratch DIR] [--init]\n"); return 2; }
  }
  if (!serial && !stdio_mode) { fprintf(stderr, "kvmq-agent: --serial DEV or --stdio is required\n"); return 2; }
  signal(SIGPIPE, SIG_IGN);
  setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", 1);
  mkdir(scratch, 0755);
  if (serial) {
    in_fd = out_fd = open_serial(serial);
    if (in_fd < 0) { fprintf(stderr, "kvmq-agent: cannot open %s: %s\n", serial, strerror(errno)); if (init_mode) power_off(); return 1; }
  }

  /* Say ready until the host speaks: a line written before the host attached to the channel is lost. */
  char *buf = malloc(65536);
  size_t cap = 65536, len = 0;
  int heard = 0;
  send_ready();
  for (;;) {
    if (!heard) {
      struct pollfd pf = {in_fd, POLLIN, 0};
      int r = poll(&pf, 1, 1000);
      if (r == 0) { send_ready(); continue; }
      if (r < 0 && errno == EINTR) continue;
    }
    if (len == cap) {
      if (cap >= MAX_LINE) { reply_error(-1, "line longer than %u bytes", MAX_LINE); len = 0; continue; }
      cap *= 2;
      buf = realloc(buf, cap);
      if (!buf) return 70;
    }
    ssize_t r = read(in_fd, buf + len, cap - len);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r <= 0) break; /* the host went away */
    len += (size_t)r;
    char *nl;
    while ((nl = memchr(buf, '\n', len))) {
      size_t n = (size_t)(nl - buf);
      if (n && buf[n - 1] == '\r') n--;
      heard = 1;
      if (n) handle(buf, n);
      size_t rest = len - (size_t)(nl - buf) - 1;
      memmove(buf, nl + 1, rest);
      len = rest;
    }
  }
  power_off();
  return 0;
}
