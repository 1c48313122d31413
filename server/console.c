/*
 * console.c -- the studio console and the operator page (INKWIRE_CONSOLE=1):
 * static files under /console/, plus /console/api/stats (this node's live
 * counters as JSON, polled by the operator page).
 *
 * URL -> file:
 *   /console, /console/            <dir>/index.html
 *   /console/sdk/<name>.js          the JS SDK: <dir>/sdk/<name>.js when it
 *                                   exists, else <dir>/../../protocol/js/<name>.js
 *                                   (the repository layout), with its bare
 *                                   '@msgpack/msgpack' import rewritten (below)
 *   /console/vendor/msgpack/<path>  @msgpack/msgpack's ESM build: <dir>/vendor/
 *                                   msgpack/<path>, else <dir>/../../protocol/js/
 *                                   node_modules/@msgpack/msgpack/dist.esm/<path>
 *   /console/<path>                 <dir>/<path>
 * <dir> is INKWIRE_CONSOLE_DIR, else the first of <binary's dir>/../tools/console
 * and <cwd>/tools/console that exists (resolved once, on the first request).
 *
 * Safety: only the characters A-Z a-z 0-9 . _ - / are accepted in a path
 * (no percent-decoding is done, so none is needed), no segment may start with
 * '.' (which rules out "..", "." and hidden files), no empty segment; the file
 * is opened with O_NOFOLLOW | O_NONBLOCK, must be a regular file of at most
 * 4 MiB, and is read whole. Anything else is 404.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "server/srv_int.h"

#define FILE_MAX (4u << 20)

static char con_dir[PATH_MAX];
static bool con_resolved;

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Resolve <dir> once (see the file comment); "" when none was found. */
static const char *console_dir(void)
{
    if (con_resolved)
        return con_dir;
    con_resolved = true;
    char cand[PATH_MAX];
    if (srv_g.cfg->console_dir) {
        snprintf(con_dir, sizeof con_dir, "%s", srv_g.cfg->console_dir);
        return con_dir;
    }
    char exe[PATH_MAX - 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            int w = snprintf(cand, sizeof cand, "%s/../tools/console", exe);
            if (w > 0 && (size_t)w < sizeof cand && is_dir(cand) && realpath(cand, con_dir))
                return con_dir;
        }
    }
    if (is_dir("tools/console") && realpath("tools/console", con_dir))
        return con_dir;
    con_dir[0] = '\0';
    log_warn("console: no tools/console directory found; set INKWIRE_CONSOLE_DIR");
    return con_dir;
}

/* true when rel (no leading '/') is a safe relative path (file comment). */
static bool path_ok(const char *rel)
{
    if (*rel == '\0' || strlen(rel) > 200)
        return false;
    bool seg_start = true;
    for (const char *p = rel; *p; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '.' || ch == '_' || ch == '-' || ch == '/';
        if (!ok)
            return false;
        if (seg_start && (ch == '.' || ch == '/'))
            return false; /* hidden file, "..", "." or an empty segment */
        seg_start = ch == '/';
    }
    return !seg_start; /* no trailing '/' */
}

static const char *ctype_of(const char *path)
{
    static const struct { const char *ext, *type; } t[] = {
        { ".html", "text/html; charset=utf-8" },  { ".js", "text/javascript; charset=utf-8" },
        { ".mjs", "text/javascript; charset=utf-8" }, { ".css", "text/css; charset=utf-8" },
        { ".json", "application/json" },           { ".map", "application/json" },
        { ".svg", "image/svg+xml" },               { ".png", "image/png" },
        { ".ico", "image/x-icon" },                { ".txt", "text/plain; charset=utf-8" },
    };
    const char *dot = strrchr(path, '.');
    if (dot && !strchr(dot, '/'))
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
            if (strcmp(dot, t[i].ext) == 0)
                return t[i].type;
    return "application/octet-stream";
}

/* Read a regular file of at most FILE_MAX bytes. Returns 0 with a malloc'd
 * buffer, or -1 (missing, not regular, too big, unreadable). */
static int read_file(const char *path, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > FILE_MAX) {
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size, got = 0;
    char *buf = malloc(size + 1);
    if (!buf) {
        close(fd);
        return -1;
    }
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = got;
    return 0;
}

/*
 * The SDK imports '@msgpack/msgpack' (a bare specifier). A page could map it
 * with an inline import map, but lws's security headers (CSP script-src
 * 'self') forbid inline scripts, so the specifier is rewritten here, in the
 * served copy only: '@msgpack/msgpack' -> '/console/vendor/msgpack/index.mjs'.
 * Returns 0 (body possibly replaced) or -1 when out of memory.
 */
static int rewrite_sdk_imports(char **body, size_t *len)
{
    static const char from[] = "'@msgpack/msgpack'";
    static const char to[] = "'/console/vendor/msgpack/index.mjs'";
    size_t fl = sizeof from - 1, tl = sizeof to - 1, n = 0;
    for (size_t i = 0; i + fl <= *len; i++)
        if (memcmp(*body + i, from, fl) == 0)
            n++;
    if (n == 0)
        return 0;
    size_t nlen = *len + n * (tl - fl);
    char *out = malloc(nlen + 1), *o = out;
    if (!out)
        return -1;
    for (size_t i = 0; i < *len;) {
        if (i + fl <= *len && memcmp(*body + i, from, fl) == 0) {
            memcpy(o, to, tl);
            o += tl;
            i += fl;
        } else {
            *o++ = (*body)[i++];
        }
    }
    free(*body);
    *body = out;
    *len = nlen;
    return 0;
}

/* Try <base>/<rel>; 0 when served. */
static int try_file(const char *base, const char *rel, char **body, size_t *len)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s/%s", base, rel) >= (int)sizeof p)
        return -1;
    return read_file(p, body, len);
}

static void stats_json(char **body, size_t *len)
{
    unsigned long nch = 0, nsub = 0;
    unsigned rooms = 0, seats = 0;
    srv_hub_stats(&nch, &nsub);
    srv_consult_stats(&rooms, &seats);
    const srv_metrics *m = &srv_g.m;
    json_t *j = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
                          "node", srv_g.cfg->node_id,
                          "ts", (json_int_t)srv_now_ms(),
                          "connections_open", (json_int_t)m->connections_open,
                          "connections_total", (json_int_t)m->connections_total,
                          "sessions_open", (json_int_t)m->sessions_open,
                          "channels", (json_int_t)nch,
                          "subscriptions", (json_int_t)nsub,
                          "frames_in", (json_int_t)m->frames_in,
                          "frames_out", (json_int_t)m->frames_out,
                          "bytes_in", (json_int_t)m->bytes_in,
                          "bytes_out", (json_int_t)m->bytes_out,
                          "events_published", (json_int_t)m->events_published,
                          "deliveries", (json_int_t)m->deliveries,
                          "consult_rooms", (json_int_t)rooms,
                          "consult_seats", (json_int_t)seats);
    *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    *len = *body ? strlen(*body) : 0;
}

void srv_console_get(const char *path, int *status, const char **ctype, char **body, size_t *len)
{
    *body = NULL;
    *len = 0;
    *status = 404;
    *ctype = "text/plain; charset=utf-8";
    if (strcmp(path, "/console/api/stats") == 0) {
        stats_json(body, len);
        if (*body) {
            *status = 200;
            *ctype = "application/json";
        } else {
            *status = 500;
        }
        return;
    }
    const char *dir = console_dir();
    const char *rel;
    if (strcmp(path, "/console") == 0 || strcmp(path, "/console/") == 0)
        rel = "index.html";
    else if (strncmp(path, "/console/", 9) == 0)
        rel = path + 9;
    else
        rel = "";
    if (!dir[0] || !path_ok(rel))
        goto missing;
    char alt[PATH_MAX];
    int rc;
    size_t rl = strlen(rel);
    if (strncmp(rel, "sdk/", 4) == 0) {
        if (rl < 8 || strcmp(rel + rl - 3, ".js") != 0)
            goto missing; /* the SDK's modules only, not its package files */
        rc = try_file(dir, rel, body, len);
        if (rc != 0 && snprintf(alt, sizeof alt, "%s/../../protocol/js", dir) < (int)sizeof alt &&
            !strchr(rel + 4, '/'))
            rc = try_file(alt, rel + 4, body, len);
        if (rc == 0 && rewrite_sdk_imports(body, len) < 0) {
            free(*body);
            *body = NULL;
            *status = 500;
            return;
        }
    } else if (strncmp(rel, "vendor/msgpack/", 15) == 0) {
        rc = try_file(dir, rel, body, len);
        if (rc != 0 && snprintf(alt, sizeof alt, "%s/../../protocol/js/node_modules/@msgpack/msgpack/dist.esm",
                                dir) < (int)sizeof alt)
            rc = try_file(alt, rel + 15, body, len);
    } else {
        rc = try_file(dir, rel, body, len);
    }
    if (rc == 0) {
        *status = 200;
        *ctype = ctype_of(rel);
        return;
    }
missing:
    *body = strdup("not found\n");
    *len = *body ? strlen(*body) : 0;
}
