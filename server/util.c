/*
 * util.c -- small shared pieces of server/: frames, the string map, clocks,
 * UUIDs, UTF-8 validation and the log writer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uuid/uuid.h>

#include "server/srv_int.h"

/* ================================================================== frames */

int srv_buf_init(proto_buf *b)
{
    return proto_buf_init(b, LWS_PRE, 256);
}

srv_frame *srv_frame_from_buf(proto_buf *b)
{
    if (b->oom)
        return NULL;
    srv_frame *f = malloc(sizeof *f);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = b->len;
    f->mem = proto_buf_steal(b);
    if (!f->mem) {
        free(f);
        return NULL;
    }
    return f;
}

void srv_frame_unref(srv_frame *f)
{
    if (f && --f->refs == 0) {
        free(f->mem);
        free(f);
    }
}

/* ================================================================== string map */

static uint32_t map_hash(const char *k)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *k; k++) {
        h ^= (uint8_t)*k;
        h *= 16777619u;
    }
    return h ? h : 1;
}

/* Index of key's slot, or of the first free slot where it would go. */
static size_t map_find(const srv_map *m, const char *key, uint32_t h, bool *found)
{
    size_t mask = m->cap - 1, i = h & mask, tomb = (size_t)-1;
    for (;;) {
        const struct srv_map_slot *sl = &m->slots[i];
        if (sl->hash == 0 && !sl->key) { /* empty */
            *found = false;
            return tomb != (size_t)-1 ? tomb : i;
        }
        if (sl->key == NULL) { /* tombstone */
            if (tomb == (size_t)-1)
                tomb = i;
        } else if (sl->hash == h && strcmp(sl->key, key) == 0) {
            *found = true;
            return i;
        }
        i = (i + 1) & mask;
    }
}

static int map_grow(srv_map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    if (m->n * 2 < m->cap)
        ncap = m->cap; /* many tombstones: rehash at the same size */
    struct srv_map_slot *old = m->slots;
    size_t ocap = m->cap;
    m->slots = calloc(ncap, sizeof *m->slots);
    if (!m->slots) {
        m->slots = old;
        return -1;
    }
    m->cap = ncap;
    m->n = 0;
    m->tombs = 0;
    for (size_t i = 0; i < ocap; i++) {
        if (old[i].key) {
            bool found;
            size_t j = map_find(m, old[i].key, old[i].hash, &found);
            m->slots[j] = old[i];
            m->n++;
        }
    }
    free(old);
    return 0;
}

void *srv_map_get(const srv_map *m, const char *key)
{
    if (!m->cap)
        return NULL;
    bool found;
    size_t i = map_find(m, key, map_hash(key), &found);
    return found ? m->slots[i].val : NULL;
}

int srv_map_put(srv_map *m, const char *key, void *val)
{
    if ((m->n + m->tombs + 1) * 4 >= m->cap * 3 && map_grow(m) < 0)
        return -1;
    uint32_t h = map_hash(key);
    bool found;
    size_t i = map_find(m, key, h, &found);
    if (found) {
        m->slots[i].val = val;
        return 0;
    }
    char *k = strdup(key);
    if (!k)
        return -1;
    if (m->slots[i].hash != 0) /* reusing a tombstone */
        m->tombs--;
    m->slots[i] = (struct srv_map_slot){ k, val, h };
    m->n++;
    return 0;
}

void *srv_map_del(srv_map *m, const char *key)
{
    if (!m->cap)
        return NULL;
    bool found;
    size_t i = map_find(m, key, map_hash(key), &found);
    if (!found)
        return NULL;
    void *v = m->slots[i].val;
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->slots[i].val = NULL; /* hash stays non-zero: a tombstone */
    m->n--;
    m->tombs++;
    return v;
}

void srv_map_free(srv_map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ================================================================== clocks, ids, text */

uint64_t srv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int64_t srv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void srv_uuid(char out[37])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

long srv_utf8_count(const char *str, size_t len)
{
    const uint8_t *s = (const uint8_t *)str;
    long n = 0;
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            if (c == 0)
                return -1; /* no NUL inside text */
            i++;
            n++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3;
            cp = c & 0x07;
        } else {
            return -1;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= len || (s[i + j] & 0xc0) != 0x80)
                return -1;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return -1;
        i += k + 1;
        n++;
    }
    return n;
}

/* ================================================================== log */

int srv_log_level = SRV_LOG_INFO;
char srv_log_tag[16];

void srv_log_write(int level, const char *tenant, const char *session, const char *fmt, ...)
{
    static const char *names[] = { "error", "warn ", "info ", "debug" };
    char ts[32], msg[1024];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %s %s[%s/%s] %s\n", ts, now.tv_nsec / 1000000,
            names[level < 0 ? 0 : level > 3 ? 3 : level], srv_log_tag, tenant ? tenant : "-",
            session ? session : "-", msg);
}
