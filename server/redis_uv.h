/*
 * redis_uv.h -- hiredis async contexts on the libuv loop (broker.c).
 *
 * Why not hiredis's own adapters/libuv.h (0.14): its poll callback returns
 * at once on a non-zero status. libuv reports a socket error (POLLERR, e.g.
 * a connection reset because Redis was killed with a command still unread
 * in its buffer) as status UV_EBADF and stops the poll handle; hiredis then
 * never looked at the socket again: the commands on it waited for ever (no
 * reply callback, no disconnect callback, so no reconnect), while the same
 * node's other connection, closed with a plain FIN, reconnected.
 *
 * Here an error status is handed to hiredis as "readable": its read fails
 * and it disconnects the context the usual way (every pending callback gets
 * a NULL reply, then the disconnect callback runs). If the read does not
 * fail, the poll is started again, since libuv stopped it.
 *
 * srv_redis_uv_attach(ac, loop) -- REDIS_OK, or REDIS_ERR (context already
 * attached, out of memory, bad descriptor). hiredis frees the adapter
 * through ev.cleanup when it frees the context.
 */
#ifndef INKWIRE_REDIS_UV_H
#define INKWIRE_REDIS_UV_H

#include <stdlib.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

typedef struct srv_redis_uv {
    redisAsyncContext *ac;  /* NULL once hiredis let go of it */
    uv_poll_t poll;
    int events;             /* UV_READABLE | UV_WRITABLE wanted by hiredis */
} srv_redis_uv;

static void srv_redis_uv__on_poll(uv_poll_t *h, int status, int events)
{
    srv_redis_uv *a = h->data;
    if (status < 0)
        events = UV_READABLE; /* the read shows hiredis the error */
    if (a->ac && (events & UV_READABLE))
        redisAsyncHandleRead(a->ac);
    if (a->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(a->ac);
    if (status < 0 && a->ac && a->events)
        uv_poll_start(&a->poll, a->events, srv_redis_uv__on_poll);
}

static void srv_redis_uv__update(srv_redis_uv *a)
{
    if (a->events)
        uv_poll_start(&a->poll, a->events, srv_redis_uv__on_poll);
    else
        uv_poll_stop(&a->poll);
}

static void srv_redis_uv__add_read(void *p)
{
    srv_redis_uv *a = p;
    a->events |= UV_READABLE;
    srv_redis_uv__update(a);
}

static void srv_redis_uv__del_read(void *p)
{
    srv_redis_uv *a = p;
    a->events &= ~UV_READABLE;
    srv_redis_uv__update(a);
}

static void srv_redis_uv__add_write(void *p)
{
    srv_redis_uv *a = p;
    a->events |= UV_WRITABLE;
    srv_redis_uv__update(a);
}

static void srv_redis_uv__del_write(void *p)
{
    srv_redis_uv *a = p;
    a->events &= ~UV_WRITABLE;
    srv_redis_uv__update(a);
}

static void srv_redis_uv__closed(uv_handle_t *h)
{
    free(h->data);
}

static void srv_redis_uv__cleanup(void *p)
{
    srv_redis_uv *a = p;
    a->ac = NULL;
    a->events = 0;
    uv_close((uv_handle_t *)&a->poll, srv_redis_uv__closed);
}

static int srv_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data != NULL)
        return REDIS_ERR;
    srv_redis_uv *a = calloc(1, sizeof *a);
    if (a == NULL)
        return REDIS_ERR;
    if (uv_poll_init_socket(loop, &a->poll, ac->c.fd) != 0) {
        free(a);
        return REDIS_ERR;
    }
    a->ac = ac;
    a->poll.data = a;
    ac->ev.addRead = srv_redis_uv__add_read;
    ac->ev.delRead = srv_redis_uv__del_read;
    ac->ev.addWrite = srv_redis_uv__add_write;
    ac->ev.delWrite = srv_redis_uv__del_write;
    ac->ev.cleanup = srv_redis_uv__cleanup;
    ac->ev.data = a;
    return REDIS_OK;
}

#endif /* INKWIRE_REDIS_UV_H */
