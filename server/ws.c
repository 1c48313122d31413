/*
 * ws.c -- the lws callback of the inkwire.v1 protocol. A switch of short
 * cases; everything else happens in session.c.
 */
#include "server/srv_int.h"

typedef struct ws_pss {
    srv_session *s;
    bool in_message; /* a fragmented message is being received */
} ws_pss;

size_t srv_ws_pss_size(void) { return sizeof(ws_pss); }

int srv_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    ws_pss *p = user;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        p->s = srv_session_new(wsi);
        p->in_message = false;
        return p->s ? 0 : -1;

    case LWS_CALLBACK_RECEIVE: {
        if (!p->s)
            return -1;
        bool first = !p->in_message;
        bool final = lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi);
        p->in_message = !final;
        srv_session_rx(p->s, in, len, first, final, lws_frame_is_binary(wsi) != 0);
        return 0;
    }

    case LWS_CALLBACK_RECEIVE_PONG:
        if (p->s)
            srv_session_touch(p->s);
        return 0;

    case LWS_CALLBACK_SERVER_WRITEABLE:
        return p->s ? srv_session_writeable(p->s) : -1;

    case LWS_CALLBACK_CLOSED:
        if (p->s)
            srv_session_closed(p->s);
        p->s = NULL;
        return 0;

    default:
        return 0;
    }
}
