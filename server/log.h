/*
 * log.h -- the one log macro family. Lines go to stderr as
 *   2026-11-22T10:00:00.123Z info  [tenant/session] message
 * where the bracket is "-/-" outside any session. With several worker
 * processes (INKWIRE_WORKERS) a tag names the process before the bracket:
 *   2026-11-22T10:00:00.123Z info  w1 [tenant/session] message   ("main" = the parent)
 */
#ifndef INKWIRE_LOG_H
#define INKWIRE_LOG_H

enum { SRV_LOG_ERROR = 0, SRV_LOG_WARN = 1, SRV_LOG_INFO = 2, SRV_LOG_DEBUG = 3 };

extern int srv_log_level;
extern char srv_log_tag[16]; /* "" or "w<i> " / "main " (workers.c) */

void srv_log_write(int level, const char *tenant, const char *session, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define SRV_LOG(lvl, t, s, ...) \
    do { if ((lvl) <= srv_log_level) srv_log_write((lvl), (t), (s), __VA_ARGS__); } while (0)

/* Process-level lines (no session). */
#define log_error(...) SRV_LOG(SRV_LOG_ERROR, NULL, NULL, __VA_ARGS__)
#define log_warn(...)  SRV_LOG(SRV_LOG_WARN, NULL, NULL, __VA_ARGS__)
#define log_info(...)  SRV_LOG(SRV_LOG_INFO, NULL, NULL, __VA_ARGS__)
#define log_debug(...) SRV_LOG(SRV_LOG_DEBUG, NULL, NULL, __VA_ARGS__)

/* Session-scoped lines: s is a srv_session *. */
#define slog_warn(s, ...)  SRV_LOG(SRV_LOG_WARN, (s)->tid, (s)->session_id, __VA_ARGS__)
#define slog_info(s, ...)  SRV_LOG(SRV_LOG_INFO, (s)->tid, (s)->session_id, __VA_ARGS__)
#define slog_debug(s, ...) SRV_LOG(SRV_LOG_DEBUG, (s)->tid, (s)->session_id, __VA_ARGS__)
#define slog_error(s, ...) SRV_LOG(SRV_LOG_ERROR, (s)->tid, (s)->session_id, __VA_ARGS__)

#endif /* INKWIRE_LOG_H */
