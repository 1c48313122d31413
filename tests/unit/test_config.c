/*
 * test_config.c -- srv_config_load() against an injected environment:
 * defaults, every error path (one line, starting with the variable name),
 * origin lists, numeric edge cases, IPv6 listen addresses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "server/config.h"

#define SECRET "0123456789abcdef0123456789abcdef"
#define APIKEY "api-key-0123456789"

#define MAX_VARS 24
typedef struct env {
    const char *k[MAX_VARS];
    const char *v[MAX_VARS];
    int n;
} env;

static char g_dir[64], g_file[128], g_empty[128];

static const char *env_get(const char *name, void *ud)
{
    env *e = ud;
    for (int i = e->n - 1; i >= 0; i--) /* later set() wins */
        if (strcmp(e->k[i], name) == 0)
            return e->v[i];
    return NULL;
}

static void set(env *e, const char *k, const char *v)
{
    assert_true(e->n < MAX_VARS);
    e->k[e->n] = k;
    e->v[e->n] = v;
    e->n++;
}

/* base -- the smallest valid environment. */
static void base(env *e)
{
    memset(e, 0, sizeof *e);
    set(e, "INKWIRE_DATABASE_URL", "postgresql://inkwire@localhost/inkwire");
    set(e, "INKWIRE_JWT_KEY", SECRET);
    set(e, "INKWIRE_API_KEY", APIKEY);
}

/* load_ok -- load must succeed. */
static void load_ok(env *e, srv_config *c)
{
    char err[512] = "unset";
    int rc = srv_config_load(c, env_get, e, err, sizeof err);
    if (rc != 0)
        fail_msg("unexpected error: %s", err);
}

/*
 * load_err -- load must fail with one line that starts with "var:" and (when
 * want != NULL) contains want; the struct must come back zeroed.
 */
static void load_err(env *e, const char *var, const char *want)
{
    srv_config c;
    char err[512] = "";
    memset(&c, 0x5a, sizeof c);
    assert_int_equal(srv_config_load(&c, env_get, e, err, sizeof err), -1);
    size_t vl = strlen(var);
    if (strncmp(err, var, vl) != 0 || err[vl] != ':')
        fail_msg("error does not start with %s: \"%s\"", var, err);
    assert_null(strchr(err, '\n'));
    if (want != NULL && strstr(err, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
    srv_config zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&c, &zero, sizeof c);
    srv_config_free(&c);
}

static void err_with(const char *var, const char *val, const char *want)
{
    env e;
    base(&e);
    set(&e, var, val);
    load_err(&e, var, want);
}

static int group_setup(void **state)
{
    (void)state;
    strcpy(g_dir, "/tmp/inkwire-test-config-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(g_file, sizeof g_file, "%s/key.pem", g_dir);
    snprintf(g_empty, sizeof g_empty, "%s/empty.pem", g_dir);
    FILE *f = fopen(g_file, "w");
    if (f == NULL)
        return -1;
    fputs("-----BEGIN PUBLIC KEY-----\n", f);
    fclose(f);
    f = fopen(g_empty, "w");
    if (f == NULL)
        return -1;
    fclose(f);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(g_file);
    unlink(g_empty);
    rmdir(g_dir);
    return 0;
}

/* ------------------------------------------------------------ defaults */

static void test_defaults(void **state)
{
    (void)state;
    env e;
    srv_config c;
    base(&e);
    load_ok(&e, &c);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 8080);
    assert_string_equal(c.database_url, "postgresql://inkwire@localhost/inkwire");
    assert_null(c.redis_url);
    assert_int_equal(c.jwt_alg, TENANT_ALG_HS256);
    assert_string_equal(c.jwt_key, SECRET);
    assert_string_equal(c.api_key, APIKEY);
    assert_null(c.tls_cert);
    assert_null(c.tls_key);
    assert_int_equal(c.n_allowed_origins, 0);
    assert_int_equal(c.max_message, 65536);
    assert_int_equal(c.max_inflight, 64);
    assert_int_equal(c.auth_timeout_ms, 10000);
    assert_int_equal(c.sendq_max_bytes, 1048576);
    assert_int_equal(c.sendq_max_frames, 4096);
    assert_int_equal(c.db_pool, 4);
    assert_int_equal(c.db_connect_timeout_s, 15);
    assert_int_equal(c.log_level, 2);
    /* node id: "<hostname>-<pid>", allowed characters only, <= 63 */
    char suffix[32];
    snprintf(suffix, sizeof suffix, "-%ld", (long)getpid());
    size_t n = strlen(c.node_id), sl = strlen(suffix);
    assert_true(n > sl && n <= 63);
    assert_string_equal(c.node_id + n - sl, suffix);
    assert_int_equal(strspn(c.node_id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"), n);
    srv_config_free(&c);
    assert_null(c.database_url);
}

static void test_all_set(void **state)
{
    (void)state;
    env e;
    srv_config c;
    base(&e);
    set(&e, "INKWIRE_LISTEN", "0.0.0.0:9001");
    set(&e, "INKWIRE_REDIS_URL", "redis://127.0.0.1:6379");
    set(&e, "INKWIRE_NODE_ID", "node-a.1_x");
    set(&e, "INKWIRE_MAX_MESSAGE", "1024");
    set(&e, "INKWIRE_MAX_INFLIGHT", "4096");
    set(&e, "INKWIRE_AUTH_TIMEOUT_MS", "100");
    set(&e, "INKWIRE_SENDQ_BYTES", "1073741824");
    set(&e, "INKWIRE_SENDQ_FRAMES", "16");
    set(&e, "INKWIRE_DB_POOL", "64");
    set(&e, "INKWIRE_DB_CONNECT_TIMEOUT_S", "0");
    set(&e, "INKWIRE_LOG_LEVEL", "debug");
    load_ok(&e, &c);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 9001);
    assert_string_equal(c.redis_url, "redis://127.0.0.1:6379");
    assert_string_equal(c.node_id, "node-a.1_x");
    assert_int_equal(c.max_message, 1024);
    assert_int_equal(c.max_inflight, 4096);
    assert_int_equal(c.auth_timeout_ms, 100);
    assert_int_equal(c.sendq_max_bytes, 1073741824);
    assert_int_equal(c.sendq_max_frames, 16);
    assert_int_equal(c.db_pool, 64);
    assert_int_equal(c.db_connect_timeout_s, 0);
    assert_int_equal(c.log_level, 3);
    srv_config_free(&c);
}

/* -------------------------------------------------------------- listen */

static void test_listen_ipv6(void **state)
{
    (void)state;
    env e;
    srv_config c;
    base(&e);
    set(&e, "INKWIRE_LISTEN", "[::1]:8080");
    load_ok(&e, &c);
    assert_string_equal(c.listen_host, "::1");
    assert_int_equal(c.listen_port, 8080);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_LISTEN", "[::]:1");
    load_ok(&e, &c);
    assert_string_equal(c.listen_host, "::");
    assert_int_equal(c.listen_port, 1);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_LISTEN", "[fe80::1:2]:65535");
    load_ok(&e, &c);
    assert_string_equal(c.listen_host, "fe80::1:2");
    assert_int_equal(c.listen_port, 65535);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_LISTEN", "localhost:443");
    load_ok(&e, &c);
    assert_string_equal(c.listen_host, "localhost");
    srv_config_free(&c);
}

static void test_listen_errors(void **state)
{
    (void)state;
    err_with("INKWIRE_LISTEN", "127.0.0.1", "missing port");
    err_with("INKWIRE_LISTEN", "127.0.0.1:", "missing port");
    err_with("INKWIRE_LISTEN", "", "missing port");
    err_with("INKWIRE_LISTEN", ":8080", "missing host");
    err_with("INKWIRE_LISTEN", "::1:8080", "brackets");
    err_with("INKWIRE_LISTEN", "[::1]", "missing port");
    err_with("INKWIRE_LISTEN", "[::1]8080", "missing port");
    err_with("INKWIRE_LISTEN", "[::1:8080", "']'");
    err_with("INKWIRE_LISTEN", "[]:8080", NULL);
    err_with("INKWIRE_LISTEN", "[beef]:8080", "IPv6");
    err_with("INKWIRE_LISTEN", "[::g]:8080", "IPv6");
    err_with("INKWIRE_LISTEN", "host:0", "1 to 65535");
    err_with("INKWIRE_LISTEN", "host:65536", "1 to 65535");
    err_with("INKWIRE_LISTEN", "host:80a", "1 to 65535");
    err_with("INKWIRE_LISTEN", "host:-1", "1 to 65535");
    err_with("INKWIRE_LISTEN", "host: 80", "1 to 65535");
    err_with("INKWIRE_LISTEN", "host:99999999999999999999999", "1 to 65535");
    err_with("INKWIRE_LISTEN", "ho st:80", "invalid host");
    err_with("INKWIRE_LISTEN", "host/x:80", "invalid host");
    char longhost[128];
    memset(longhost, 'a', 70);
    strcpy(longhost + 70, ":80");
    err_with("INKWIRE_LISTEN", longhost, "longer");
}

/* ------------------------------------------------------- required values */

static void test_database_required(void **state)
{
    (void)state;
    env e;
    memset(&e, 0, sizeof e);
    set(&e, "INKWIRE_JWT_KEY", SECRET);
    set(&e, "INKWIRE_API_KEY", APIKEY);
    load_err(&e, "INKWIRE_DATABASE_URL", "required");
    err_with("INKWIRE_DATABASE_URL", "", "required");
}

static void test_jwt_key(void **state)
{
    (void)state;
    env e;
    memset(&e, 0, sizeof e);
    set(&e, "INKWIRE_DATABASE_URL", "postgresql:///x");
    set(&e, "INKWIRE_API_KEY", APIKEY);
    load_err(&e, "INKWIRE_JWT_KEY", "required");

    /* The exact line main() prints for a short secret; the secret itself never appears. */
    env f;
    base(&f);
    set(&f, "INKWIRE_JWT_KEY", "hunter2");
    srv_config c;
    char err[512];
    assert_int_equal(srv_config_load(&c, env_get, &f, err, sizeof err), -1);
    assert_string_equal(err, "INKWIRE_JWT_KEY: HS256 secret must be at least 32 bytes (got 7)");
    err_with("INKWIRE_JWT_KEY", "0123456789abcdef0123456789abcde", "got 31");
    err_with("INKWIRE_JWT_KEY", "", "required");
}

static void test_jwt_alg(void **state)
{
    (void)state;
    err_with("INKWIRE_JWT_ALG", "hs256", "HS256, RS256 or ES256");
    err_with("INKWIRE_JWT_ALG", "none", "HS256, RS256 or ES256");
    err_with("INKWIRE_JWT_ALG", "", "HS256, RS256 or ES256");

    env e;
    srv_config c;
    /* RS256/ES256: the key is a path that must be readable. */
    base(&e);
    set(&e, "INKWIRE_JWT_ALG", "RS256");
    set(&e, "INKWIRE_JWT_KEY", g_file);
    load_ok(&e, &c);
    assert_int_equal(c.jwt_alg, TENANT_ALG_RS256);
    assert_string_equal(c.jwt_key, g_file);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_JWT_ALG", "ES256");
    set(&e, "INKWIRE_JWT_KEY", "/nonexistent/inkwire/jwt.pem");
    srv_config cc;
    char err[512];
    assert_int_equal(srv_config_load(&cc, env_get, &e, err, sizeof err), -1);
    assert_string_equal(err,
                        "INKWIRE_JWT_KEY: cannot read /nonexistent/inkwire/jwt.pem: No such file or directory");

    base(&e);
    set(&e, "INKWIRE_JWT_ALG", "RS256");
    set(&e, "INKWIRE_JWT_KEY", g_dir);
    load_err(&e, "INKWIRE_JWT_KEY", "Is a directory");

    base(&e);
    set(&e, "INKWIRE_JWT_ALG", "RS256");
    set(&e, "INKWIRE_JWT_KEY", g_empty);
    load_err(&e, "INKWIRE_JWT_KEY", "empty");
}

static void test_api_key(void **state)
{
    (void)state;
    env e;
    memset(&e, 0, sizeof e);
    set(&e, "INKWIRE_DATABASE_URL", "postgresql:///x");
    set(&e, "INKWIRE_JWT_KEY", SECRET);
    load_err(&e, "INKWIRE_API_KEY", "required");
    err_with("INKWIRE_API_KEY", "", "required");
    err_with("INKWIRE_API_KEY", "0123456789abcde", "at least 16 bytes (got 15)");
    base(&e);
    set(&e, "INKWIRE_API_KEY", "0123456789abcdef");
    srv_config c;
    load_ok(&e, &c);
    srv_config_free(&c);
}

/* ------------------------------------------------------------------ TLS */

static void test_tls(void **state)
{
    (void)state;
    env e;
    srv_config c;
    base(&e);
    set(&e, "INKWIRE_TLS_CERT", g_file);
    load_err(&e, "INKWIRE_TLS_KEY", "both or neither");

    base(&e);
    set(&e, "INKWIRE_TLS_KEY", g_file);
    load_err(&e, "INKWIRE_TLS_CERT", "both or neither");

    base(&e);
    set(&e, "INKWIRE_TLS_CERT", "/nonexistent/cert.pem");
    set(&e, "INKWIRE_TLS_KEY", g_file);
    load_err(&e, "INKWIRE_TLS_CERT", "cannot read /nonexistent/cert.pem");

    base(&e);
    set(&e, "INKWIRE_TLS_CERT", g_file);
    set(&e, "INKWIRE_TLS_KEY", "/nonexistent/key.pem");
    load_err(&e, "INKWIRE_TLS_KEY", "cannot read /nonexistent/key.pem");

    base(&e);
    set(&e, "INKWIRE_TLS_CERT", g_file);
    set(&e, "INKWIRE_TLS_KEY", g_file);
    load_ok(&e, &c);
    assert_string_equal(c.tls_cert, g_file);
    assert_string_equal(c.tls_key, g_file);
    srv_config_free(&c);

    /* Empty values mean "not set". */
    base(&e);
    set(&e, "INKWIRE_TLS_CERT", "");
    set(&e, "INKWIRE_TLS_KEY", "");
    load_ok(&e, &c);
    assert_null(c.tls_cert);
    srv_config_free(&c);
}

/* -------------------------------------------------------------- origins */

static void test_origins_parse(void **state)
{
    (void)state;
    env e;
    srv_config c;
    base(&e);
    set(&e, "INKWIRE_ALLOWED_ORIGINS",
        " https://Studio.Example.com ,http://localhost:5173,\tcapacitor://localhost,"
        "https://a.example:443,http://b.example:80,https://[::1]:8443,http://10.0.0.2 ");
    load_ok(&e, &c);
    assert_int_equal(c.n_allowed_origins, 7);
    assert_string_equal(c.allowed_origins[0], "https://studio.example.com");
    assert_string_equal(c.allowed_origins[1], "http://localhost:5173");
    assert_string_equal(c.allowed_origins[2], "capacitor://localhost");
    assert_string_equal(c.allowed_origins[3], "https://a.example");
    assert_string_equal(c.allowed_origins[4], "http://b.example");
    assert_string_equal(c.allowed_origins[5], "https://[::1]:8443");
    assert_string_equal(c.allowed_origins[6], "http://10.0.0.2");
    assert_null(c.allowed_origins[7]);
    srv_config_free(&c);

    /* Blank = any Origin. */
    base(&e);
    set(&e, "INKWIRE_ALLOWED_ORIGINS", "  ");
    load_ok(&e, &c);
    assert_int_equal(c.n_allowed_origins, 0);
    srv_config_free(&c);
}

static void test_origins_errors(void **state)
{
    (void)state;
    const char *bad[] = {
        "https://x.example/",      "https://x.example/app", "https://x.example?q=1",
        "x.example",               "*",                     "null",
        "https://",                "https://x.example:0",   "https://x.example:99999",
        "https://user@x.example",  "https://x.example:",    "1http://x.example",
        "https:/x.example",        "https://[zz]:80",       "https://x_y.example",
        "https://x.example,",      ",https://x.example",    "https://a.example,,https://b.example",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        err_with("INKWIRE_ALLOWED_ORIGINS", bad[i], NULL);
    err_with("INKWIRE_ALLOWED_ORIGINS", "https://x.example/", "not an origin");
    err_with("INKWIRE_ALLOWED_ORIGINS", "https://a.example, ,https://b.example", "empty entry");
}

static void test_origins_max(void **state)
{
    (void)state;
    char list[64 * 40] = "";
    for (int i = 0; i < SRV_MAX_ORIGINS; i++) {
        char one[40];
        snprintf(one, sizeof one, "%shttps://h%d.example", i ? "," : "", i);
        strcat(list, one);
    }
    env e;
    srv_config c;
    base(&e);
    set(&e, "INKWIRE_ALLOWED_ORIGINS", list);
    load_ok(&e, &c);
    assert_int_equal(c.n_allowed_origins, SRV_MAX_ORIGINS);
    assert_string_equal(c.allowed_origins[SRV_MAX_ORIGINS - 1], "https://h31.example");
    srv_config_free(&c);
    strcat(list, ",https://one-too-many.example");
    err_with("INKWIRE_ALLOWED_ORIGINS", list, "more than 32");
}

/* -------------------------------------------------------------- numbers */

static void test_numbers_reject(void **state)
{
    (void)state;
    const char *vars[] = {"INKWIRE_MAX_MESSAGE", "INKWIRE_MAX_INFLIGHT", "INKWIRE_AUTH_TIMEOUT_MS",
                          "INKWIRE_SENDQ_BYTES", "INKWIRE_SENDQ_FRAMES", "INKWIRE_DB_POOL",
                          "INKWIRE_DB_CONNECT_TIMEOUT_S", "INKWIRE_LOG_LEVEL"};
    const char *bad[] = {"12abc", "", "-1", "+5", " 5", "5 ", "0x10", "1e3", "1.5",
                         "99999999999999999999999", "18446744073709551616"};
    for (size_t v = 0; v < sizeof vars / sizeof vars[0]; v++)
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++)
            err_with(vars[v], bad[b], NULL);
}

static void test_numbers_ranges(void **state)
{
    (void)state;
    err_with("INKWIRE_MAX_MESSAGE", "1023", "1024 to 16777216");
    err_with("INKWIRE_MAX_MESSAGE", "16777217", "1024 to 16777216");
    err_with("INKWIRE_MAX_INFLIGHT", "0", "1 to 4096");
    err_with("INKWIRE_MAX_INFLIGHT", "4097", "1 to 4096");
    err_with("INKWIRE_DB_POOL", "0", "1 to 64");
    err_with("INKWIRE_DB_POOL", "65", "1 to 64");
    err_with("INKWIRE_LOG_LEVEL", "4", "0-3");
    err_with("INKWIRE_LOG_LEVEL", "INFO", "0-3");
    err_with("INKWIRE_AUTH_TIMEOUT_MS", "99", NULL);
    err_with("INKWIRE_SENDQ_FRAMES", "15", NULL);
    err_with("INKWIRE_DB_CONNECT_TIMEOUT_S", "3601", NULL);

    env e;
    srv_config c;
    base(&e);
    set(&e, "INKWIRE_MAX_MESSAGE", "16777216");
    set(&e, "INKWIRE_SENDQ_BYTES", "16777216");
    set(&e, "INKWIRE_LOG_LEVEL", "0");
    set(&e, "INKWIRE_DB_POOL", "007");
    load_ok(&e, &c);
    assert_int_equal(c.max_message, 16777216);
    assert_int_equal(c.log_level, 0);
    assert_int_equal(c.db_pool, 7);
    srv_config_free(&c);

    /* A send queue smaller than one message could never deliver it. */
    base(&e);
    set(&e, "INKWIRE_MAX_MESSAGE", "2097152");
    load_err(&e, "INKWIRE_SENDQ_BYTES", "at least INKWIRE_MAX_MESSAGE");
}

/* -------------------------------------------------------------- node id */

static void test_node_id(void **state)
{
    (void)state;
    err_with("INKWIRE_NODE_ID", "", "1 to 63");
    err_with("INKWIRE_NODE_ID", "node 1", "only A-Z");
    err_with("INKWIRE_NODE_ID", "node/1", "only A-Z");
    err_with("INKWIRE_NODE_ID", "n\xc3\xa9ud", "only A-Z");
    char id[80];
    memset(id, 'n', 64);
    id[64] = '\0';
    err_with("INKWIRE_NODE_ID", id, "got 64");
    id[63] = '\0';
    env e;
    srv_config c;
    base(&e);
    set(&e, "INKWIRE_NODE_ID", id);
    load_ok(&e, &c);
    assert_string_equal(c.node_id, id);
    srv_config_free(&c);
}

/* -------------------------------------------------- free, usage, misc */

static void test_free_zeroed_and_twice(void **state)
{
    (void)state;
    srv_config c;
    memset(&c, 0, sizeof c);
    srv_config_free(&c);
    srv_config_free(NULL);
    env e;
    base(&e);
    set(&e, "INKWIRE_ALLOWED_ORIGINS", "https://a.example,https://b.example");
    load_ok(&e, &c);
    srv_config_free(&c);
    srv_config_free(&c); /* zeroed by the first call */
    assert_null(c.allowed_origins[0]);
}

static void test_failure_after_allocations_frees(void **state)
{
    /* Origins are allocated before the numbers fail: ASan/LSan would see a leak. */
    (void)state;
    env e;
    base(&e);
    set(&e, "INKWIRE_ALLOWED_ORIGINS", "https://a.example,https://b.example");
    set(&e, "INKWIRE_TLS_CERT", g_file);
    set(&e, "INKWIRE_TLS_KEY", g_file);
    set(&e, "INKWIRE_LOG_LEVEL", "9");
    load_err(&e, "INKWIRE_LOG_LEVEL", NULL);
}

static void test_usage(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    srv_config_usage(f, "/usr/local/bin/inkwire");
    fclose(f);
    assert_non_null(strstr(buf, "Usage: inkwire [--help] [--version]\n"));
    assert_non_null(strstr(buf, "environment"));
    assert_non_null(strstr(buf, "Example:"));
    const char *vars[] = {"INKWIRE_LISTEN", "INKWIRE_DATABASE_URL", "INKWIRE_REDIS_URL",
                          "INKWIRE_JWT_ALG", "INKWIRE_JWT_KEY", "INKWIRE_API_KEY",
                          "INKWIRE_NODE_ID", "INKWIRE_TLS_CERT", "INKWIRE_TLS_KEY",
                          "INKWIRE_ALLOWED_ORIGINS", "INKWIRE_MAX_MESSAGE", "INKWIRE_MAX_INFLIGHT",
                          "INKWIRE_AUTH_TIMEOUT_MS", "INKWIRE_SENDQ_BYTES", "INKWIRE_SENDQ_FRAMES",
                          "INKWIRE_DB_POOL", "INKWIRE_DB_CONNECT_TIMEOUT_S", "INKWIRE_LOG_LEVEL",
                          "INKWIRE_PRESENCE_LEASE_S", "INKWIRE_PRESENCE_GRACE_MS", "INKWIRE_DRAIN_S",
                          "INKWIRE_RATE_PER_MIN", "INKWIRE_RATE_BURST", "INKWIRE_RATE_CLOSE_AFTER",
                          "INKWIRE_REMINDER_LEAD_S", "INKWIRE_REMINDER_TICK_MS",
                          "INKWIRE_AR_WATCH_HZ", "INKWIRE_TURN_URLS", "INKWIRE_TURN_SECRET",
                          "INKWIRE_TURN_TTL_S", "INKWIRE_CONSULT_GRACE_S", "INKWIRE_CONSULT_MAX",
                          "INKWIRE_CONSOLE", "INKWIRE_CONSOLE_DIR", "INKWIRE_DB_BATCH_MAX",
                          "INKWIRE_WORKERS", "INKWIRE_BUS_MB"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (strstr(buf, vars[i]) == NULL)
            fail_msg("usage lacks %s", vars[i]);
    assert_non_null(strstr(buf, "127.0.0.1:8080"));
    assert_non_null(strstr(buf, "65536"));
    free(buf);
}

/* -------------------------------------------------------------- group commit */

/* INKWIRE_DB_BATCH_MAX: default 64, 1..4096, numbers only. */
static void test_db_batch_max(void **state)
{
    (void)state;
    env e;
    srv_config c;
    base(&e);
    load_ok(&e, &c);
    assert_int_equal(c.db_batch_max, 64);
    srv_config_free(&c);
    base(&e);
    set(&e, "INKWIRE_DB_BATCH_MAX", "1");
    load_ok(&e, &c);
    assert_int_equal(c.db_batch_max, 1);
    srv_config_free(&c);
    base(&e);
    set(&e, "INKWIRE_DB_BATCH_MAX", "4096");
    load_ok(&e, &c);
    assert_int_equal(c.db_batch_max, 4096);
    srv_config_free(&c);
    err_with("INKWIRE_DB_BATCH_MAX", "0", "1 to 4096");
    err_with("INKWIRE_DB_BATCH_MAX", "4097", "1 to 4096");
    err_with("INKWIRE_DB_BATCH_MAX", "16x", NULL);
    err_with("INKWIRE_DB_BATCH_MAX", "", NULL);
}

/* -------------------------------------------------------------- cluster */

static void test_redis_list(void **state)
{
    (void)state;
    env e;
    srv_config c;
    base(&e);
    load_ok(&e, &c);
    assert_int_equal(c.n_redis, 0);
    assert_int_equal(c.presence_lease_s, 30);
    assert_int_equal(c.presence_grace_ms, 3000);
    assert_int_equal(c.drain_s, 10);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_REDIS_URL", "redis://127.0.0.1:7001, redis://cache-b/3,redis://[::1]:7003/15");
    set(&e, "INKWIRE_PRESENCE_LEASE_S", "3");
    set(&e, "INKWIRE_PRESENCE_GRACE_MS", "0");
    set(&e, "INKWIRE_DRAIN_S", "2");
    load_ok(&e, &c);
    assert_int_equal(c.n_redis, 3);
    assert_string_equal(c.redis[0].host, "127.0.0.1");
    assert_int_equal(c.redis[0].port, 7001);
    assert_int_equal(c.redis[0].db, 0);
    assert_string_equal(c.redis[1].host, "cache-b");
    assert_int_equal(c.redis[1].port, 6379);
    assert_int_equal(c.redis[1].db, 3);
    assert_string_equal(c.redis[2].host, "::1");
    assert_int_equal(c.redis[2].port, 7003);
    assert_int_equal(c.redis[2].db, 15);
    assert_int_equal(c.presence_lease_s, 3);
    assert_int_equal(c.presence_grace_ms, 0);
    assert_int_equal(c.drain_s, 2);
    srv_config_free(&c);

    err_with("INKWIRE_REDIS_URL", "http://127.0.0.1:6379", "not redis://");
    err_with("INKWIRE_REDIS_URL", "redis://", "not redis://");
    err_with("INKWIRE_REDIS_URL", "redis://h:0", "not redis://");
    err_with("INKWIRE_REDIS_URL", "redis://h:65536", "not redis://");
    err_with("INKWIRE_REDIS_URL", "redis://h:6379/16", "not redis://");
    err_with("INKWIRE_REDIS_URL", "redis://h:6379/x", "not redis://");
    err_with("INKWIRE_REDIS_URL", "redis://h:6379?x=1", "not redis://");
    err_with("INKWIRE_REDIS_URL", "redis://h:6379,", "empty entry");
    err_with("INKWIRE_REDIS_URL", "redis://[::1", "not redis://");
    err_with("INKWIRE_PRESENCE_LEASE_S", "1", "2 to 3600");
    err_with("INKWIRE_PRESENCE_GRACE_MS", "600001", NULL);
    err_with("INKWIRE_DRAIN_S", "3601", NULL);
    char list[17 * 24] = "";
    for (int i = 0; i < 17; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%sredis://h%d", i ? "," : "", i);
    err_with("INKWIRE_REDIS_URL", list, "more than 16");
}

/* -------------------------------------------------------------- workers */

/* INKWIRE_WORKERS: default 1 without INKWIRE_REDIS_URL, auto with it; 1..64
 * or auto; > 1 needs INKWIRE_REDIS_URL. INKWIRE_BUS_MB: default 8, 1..1024. */
static void test_workers(void **state)
{
    (void)state;
    env e;
    srv_config c;
    base(&e);
    load_ok(&e, &c);
    assert_int_equal(c.workers, 1);
    assert_int_equal(c.bus_mb, 8);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_WORKERS", "1");
    load_ok(&e, &c); /* one worker needs no Redis */
    assert_int_equal(c.workers, 1);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_REDIS_URL", "redis://127.0.0.1:6379");
    set(&e, "INKWIRE_WORKERS", "64");
    set(&e, "INKWIRE_BUS_MB", "1");
    load_ok(&e, &c);
    assert_int_equal(c.workers, 64);
    assert_int_equal(c.bus_mb, 1);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_REDIS_URL", "redis://127.0.0.1:6379");
    set(&e, "INKWIRE_WORKERS", "auto");
    load_ok(&e, &c);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(c.workers, cpus < 1 ? 1 : cpus > 64 ? 64 : cpus);
    srv_config_free(&c);

    base(&e); /* with Redis and no INKWIRE_WORKERS: auto */
    set(&e, "INKWIRE_REDIS_URL", "redis://127.0.0.1:6379");
    load_ok(&e, &c);
    assert_int_equal(c.workers, cpus < 1 ? 1 : cpus > 64 ? 64 : cpus);
    srv_config_free(&c);

    base(&e); /* with Redis, an explicit 1 stays 1 */
    set(&e, "INKWIRE_REDIS_URL", "redis://127.0.0.1:6379");
    set(&e, "INKWIRE_WORKERS", "1");
    load_ok(&e, &c);
    assert_int_equal(c.workers, 1);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_WORKERS", "2");
    load_err(&e, "INKWIRE_WORKERS", "need INKWIRE_REDIS_URL");
    err_with("INKWIRE_WORKERS", "0", "1 to 64, or auto");
    err_with("INKWIRE_WORKERS", "65", "1 to 64, or auto");
    err_with("INKWIRE_WORKERS", "two", "1 to 64, or auto");
    err_with("INKWIRE_WORKERS", "AUTO", "1 to 64, or auto");
    err_with("INKWIRE_WORKERS", "", "1 to 64, or auto");
    err_with("INKWIRE_BUS_MB", "0", "1 to 1024");
    err_with("INKWIRE_BUS_MB", "1025", "1 to 1024");
}

/* ------------------------------------------------ rate limits, reminders */

/* INKWIRE_AR_WATCH_HZ: default 10, 1..1000, nothing else. */
static void test_ar_watch_hz(void **state)
{
    (void)state;
    env e;
    srv_config c;
    base(&e);
    load_ok(&e, &c);
    assert_int_equal(c.ar_watch_hz, 10);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_AR_WATCH_HZ", "1000");
    load_ok(&e, &c);
    assert_int_equal(c.ar_watch_hz, 1000);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_AR_WATCH_HZ", "1");
    load_ok(&e, &c);
    assert_int_equal(c.ar_watch_hz, 1);
    srv_config_free(&c);

    err_with("INKWIRE_AR_WATCH_HZ", "0", "1 to 1000");
    err_with("INKWIRE_AR_WATCH_HZ", "1001", "1 to 1000");
    err_with("INKWIRE_AR_WATCH_HZ", "10hz", NULL);
    err_with("INKWIRE_AR_WATCH_HZ", "-5", NULL);
}

static void test_rate_and_reminders(void **state)
{
    (void)state;
    env e;
    srv_config c;
    base(&e);
    load_ok(&e, &c);
    assert_int_equal(c.rate_per_min, 0);     /* 0 = each plan's own */
    assert_int_equal(c.rate_burst, 0);
    assert_int_equal(c.rate_close_after, 20);
    assert_int_equal(c.reminder_lead_s, 86400);
    assert_int_equal(c.reminder_tick_ms, 1000);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_RATE_PER_MIN", "30");
    set(&e, "INKWIRE_RATE_BURST", "5");
    set(&e, "INKWIRE_RATE_CLOSE_AFTER", "0");
    set(&e, "INKWIRE_REMINDER_LEAD_S", "2");
    set(&e, "INKWIRE_REMINDER_TICK_MS", "50");
    load_ok(&e, &c);
    assert_int_equal(c.rate_per_min, 30);
    assert_int_equal(c.rate_burst, 5);
    assert_int_equal(c.rate_close_after, 0);
    assert_int_equal(c.reminder_lead_s, 2);
    assert_int_equal(c.reminder_tick_ms, 50);
    srv_config_free(&c);

    err_with("INKWIRE_RATE_PER_MIN", "-1", NULL);
    err_with("INKWIRE_RATE_PER_MIN", "10000001", NULL);
    err_with("INKWIRE_RATE_BURST", "1e3", NULL);
    err_with("INKWIRE_RATE_CLOSE_AFTER", "x", NULL);
    err_with("INKWIRE_REMINDER_LEAD_S", "2592001", NULL);
    err_with("INKWIRE_REMINDER_LEAD_S", "0", "1 to 2592000");
    err_with("INKWIRE_REMINDER_TICK_MS", "9", "10 to 600000");
}

/* Video consults and the console: TURN settings, grace, seats, console switch and dir. */
static void test_consult_and_console(void **state)
{
    (void)state;
    env e;
    srv_config c;
    base(&e);
    load_ok(&e, &c);
    assert_null(c.turn_secret);
    assert_int_equal(c.n_turn_urls, 0);
    assert_int_equal(c.turn_ttl_s, 3600);
    assert_int_equal(c.consult_grace_s, 30);
    assert_int_equal(c.consult_max, 3);
    assert_int_equal(c.console, 0);
    assert_null(c.console_dir);
    srv_config_free(&c);

    base(&e);
    set(&e, "INKWIRE_TURN_URLS", " turn:127.0.0.1:3478?transport=udp , stun:127.0.0.1:3478,turns:t.example.com:5349");
    set(&e, "INKWIRE_TURN_SECRET", "0123456789abcdef");
    set(&e, "INKWIRE_TURN_TTL_S", "60");
    set(&e, "INKWIRE_CONSULT_GRACE_S", "0");
    set(&e, "INKWIRE_CONSULT_MAX", "16");
    set(&e, "INKWIRE_CONSOLE", "1");
    set(&e, "INKWIRE_CONSOLE_DIR", g_dir);
    load_ok(&e, &c);
    assert_int_equal(c.n_turn_urls, 3);
    assert_string_equal(c.turn_urls[0], "turn:127.0.0.1:3478?transport=udp");
    assert_string_equal(c.turn_urls[1], "stun:127.0.0.1:3478");
    assert_string_equal(c.turn_urls[2], "turns:t.example.com:5349");
    assert_string_equal(c.turn_secret, "0123456789abcdef");
    assert_int_equal(c.turn_ttl_s, 60);
    assert_int_equal(c.consult_grace_s, 0);
    assert_int_equal(c.consult_max, 16);
    assert_int_equal(c.console, 1);
    assert_string_equal(c.console_dir, g_dir);
    srv_config_free(&c);

    /* STUN/TURN URLs without a secret: no credentials, still valid */
    base(&e);
    set(&e, "INKWIRE_TURN_URLS", "stun:127.0.0.1:3478");
    load_ok(&e, &c);
    assert_int_equal(c.n_turn_urls, 1);
    assert_null(c.turn_secret);
    srv_config_free(&c);

    err_with("INKWIRE_TURN_URLS", "http://turn.example.com", "not a turn:");
    err_with("INKWIRE_TURN_URLS", "turn:", "not a turn:");
    err_with("INKWIRE_TURN_URLS", "turn:a b", "not a turn:");
    err_with("INKWIRE_TURN_URLS", "turn:a,,turn:b", "not a turn:");
    err_with("INKWIRE_TURN_URLS", "stun:a,stun:b,stun:c,stun:d,stun:e,stun:f,stun:g,stun:h,stun:i", "more than 8");
    err_with("INKWIRE_TURN_SECRET", "short", "at least 16 bytes");
    base(&e);
    set(&e, "INKWIRE_TURN_SECRET", "0123456789abcdef");
    load_err(&e, "INKWIRE_TURN_URLS", "required when INKWIRE_TURN_SECRET");
    err_with("INKWIRE_TURN_TTL_S", "59", "60 to 604800");
    err_with("INKWIRE_CONSULT_GRACE_S", "3601", NULL);
    err_with("INKWIRE_CONSULT_MAX", "1", "2 to 16");
    err_with("INKWIRE_CONSULT_MAX", "17", "2 to 16");
    err_with("INKWIRE_CONSOLE", "yes", "0 or 1");
    err_with("INKWIRE_CONSOLE_DIR", "/nonexistent/inkwire-console", "not a directory");
    err_with("INKWIRE_CONSOLE_DIR", g_file, "not a directory");
}

static void test_null_args(void **state)
{
    (void)state;
    char err[128];
    srv_config c;
    assert_int_equal(srv_config_load(&c, NULL, NULL, err, sizeof err), -1);
    assert_int_equal(srv_config_load(NULL, env_get, NULL, err, sizeof err), -1);
    /* A NULL err buffer is allowed. */
    env e;
    memset(&e, 0, sizeof e);
    assert_int_equal(srv_config_load(&c, env_get, &e, NULL, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_set),
        cmocka_unit_test(test_listen_ipv6),
        cmocka_unit_test(test_listen_errors),
        cmocka_unit_test(test_database_required),
        cmocka_unit_test(test_jwt_key),
        cmocka_unit_test(test_jwt_alg),
        cmocka_unit_test(test_api_key),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_origins_parse),
        cmocka_unit_test(test_origins_errors),
        cmocka_unit_test(test_origins_max),
        cmocka_unit_test(test_numbers_reject),
        cmocka_unit_test(test_numbers_ranges),
        cmocka_unit_test(test_node_id),
        cmocka_unit_test(test_free_zeroed_and_twice),
        cmocka_unit_test(test_failure_after_allocations_frees),
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_db_batch_max),
        cmocka_unit_test(test_redis_list),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_rate_and_reminders),
        cmocka_unit_test(test_ar_watch_hz),
        cmocka_unit_test(test_consult_and_console),
        cmocka_unit_test(test_null_args),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
