/*
 * token.c -- inkwire-token: mint a JWT that inkwire accepts (tests, the dev
 * stack, the load bot, curl sessions).
 *
 *   inkwire-token --tid UUID --sub UUID --role owner|artist|assistant|client
 *                 [--name N] [--ttl SECONDS | --exp EPOCH] [--nbf EPOCH]
 *                 [--alg HS256|RS256|ES256] [--key SECRET_OR_PRIVATE_PEM_PATH]
 *
 * Prints the token and a newline on stdout. Errors are one line on stderr;
 * exit 2 for a usage error, 1 when minting fails (bad key file, ...).
 * The key defaults to $INKWIRE_JWT_KEY and the algorithm to $INKWIRE_JWT_ALG
 * (then HS256); for RS256/ES256 the key is the path of the PEM *private* key.
 * An --exp in the past is allowed on purpose (to test expiry).
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tenants/tenants.h"

#define TOKEN__MAX_TTL (10LL * 365 * 24 * 3600)

static const char *prog = "inkwire-token";

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: %s --tid UUID --sub UUID --role owner|artist|assistant|client\n"
            "         [--name NAME] [--ttl SECONDS | --exp EPOCH] [--nbf EPOCH]\n"
            "         [--alg HS256|RS256|ES256] [--key SECRET_OR_PRIVATE_PEM_PATH]\n"
            "\n"
            "Mints a JWT for inkwire and prints it on stdout.\n"
            "\n"
            "  --tid UUID     tenant (studio) id\n"
            "  --sub UUID     member id\n"
            "  --role ROLE    owner, artist, assistant or client\n"
            "  --name NAME    display name (optional, at most 150 bytes)\n"
            "  --ttl SECONDS  lifetime from now (default 3600)\n"
            "  --exp EPOCH    absolute expiry instead of --ttl (may be in the past)\n"
            "  --nbf EPOCH    not-before time (optional)\n"
            "  --alg ALG      default $INKWIRE_JWT_ALG, else HS256\n"
            "  --key KEY      HS256: the secret (>= 32 bytes); RS256/ES256: PEM private key path.\n"
            "                 Default $INKWIRE_JWT_KEY (prefer it: argv is visible in ps).\n"
            "  --help         this text\n",
            prog);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (try --help)\n");
    return 2;
}

/* parse_i64 -- s is an optionally signed decimal integer fitting int64. 0/-1. */
static int parse_i64(const char *s, int64_t *out)
{
    char *end = NULL;
    if (s == NULL || *s == '\0' || !((*s >= '0' && *s <= '9') || *s == '-'))
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = (int64_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tid", required_argument, NULL, 't'},  {"sub", required_argument, NULL, 's'},
        {"role", required_argument, NULL, 'r'}, {"name", required_argument, NULL, 'n'},
        {"ttl", required_argument, NULL, 'T'},  {"exp", required_argument, NULL, 'e'},
        {"nbf", required_argument, NULL, 'b'},  {"alg", required_argument, NULL, 'a'},
        {"key", required_argument, NULL, 'k'},  {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *tid = NULL, *sub = NULL, *role = NULL, *name = NULL, *ttl_s = NULL;
    const char *exp_s = NULL, *nbf_s = NULL, *alg_s = NULL, *key = NULL;

    opterr = 0; /* we print our own one-line errors */
    int ch;
    while ((ch = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (ch) {
        case 't': tid = optarg; break;
        case 's': sub = optarg; break;
        case 'r': role = optarg; break;
        case 'n': name = optarg; break;
        case 'T': ttl_s = optarg; break;
        case 'e': exp_s = optarg; break;
        case 'b': nbf_s = optarg; break;
        case 'a': alg_s = optarg; break;
        case 'k': key = optarg; break;
        case 'h': usage(stdout); return 0;
        case ':':
            return usage_error("option %s needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument \"%s\"", argv[optind]);

    tenant_claims c;
    memset(&c, 0, sizeof c);
    if (tid == NULL)
        return usage_error("%s is required", "--tid");
    if (sub == NULL)
        return usage_error("%s is required", "--sub");
    if (role == NULL)
        return usage_error("%s is required", "--role");
    if (strlen(tid) != 36)
        return usage_error("--tid \"%s\" is not a UUID", tid);
    if (strlen(sub) != 36)
        return usage_error("--sub \"%s\" is not a UUID", sub);
    memcpy(c.tid, tid, 37);
    memcpy(c.sub, sub, 37);
    if (tenant_role_parse(role, strlen(role), &c.role) != 0)
        return usage_error("--role must be owner, artist, assistant or client (got \"%s\")", role);
    if (name != NULL) {
        if (strlen(name) > sizeof c.name - 1)
            return usage_error("--name is longer than 150 bytes%s", "");
        strcpy(c.name, name);
    }

    int64_t now = (int64_t)time(NULL);
    c.iat = now;
    if (ttl_s != NULL && exp_s != NULL)
        return usage_error("give --ttl or --exp, not both%s", "");
    if (exp_s != NULL) {
        if (parse_i64(exp_s, &c.exp) != 0 || c.exp <= 0)
            return usage_error("--exp must be a positive epoch time (got \"%s\")", exp_s);
    } else {
        int64_t ttl = 3600;
        if (ttl_s != NULL && (parse_i64(ttl_s, &ttl) != 0 || ttl <= 0 || ttl > TOKEN__MAX_TTL))
            return usage_error("--ttl must be 1 to 315360000 seconds (got \"%s\")", ttl_s);
        c.exp = now + ttl;
    }
    if (nbf_s != NULL && (parse_i64(nbf_s, &c.nbf) != 0 || c.nbf <= 0))
        return usage_error("--nbf must be a positive epoch time (got \"%s\")", nbf_s);

    if (alg_s == NULL || alg_s[0] == '\0')
        alg_s = getenv("INKWIRE_JWT_ALG");
    if (alg_s == NULL || alg_s[0] == '\0')
        alg_s = "HS256";
    tenant_alg alg;
    if (tenant_alg_parse(alg_s, &alg) != 0)
        return usage_error("--alg must be HS256, RS256 or ES256 (got \"%s\")", alg_s);
    if (key == NULL || key[0] == '\0')
        key = getenv("INKWIRE_JWT_KEY");
    if (key == NULL || key[0] == '\0')
        return usage_error("no key: pass --key or set INKWIRE_JWT_KEY%s", "");
    if (alg == TENANT_ALG_HS256 && strlen(key) < 32) {
        fprintf(stderr, "%s: HS256 secret must be at least 32 bytes (got %zu)\n", prog,
                strlen(key));
        return 2;
    }

    char err[512] = "";
    char *tok = tenant_jwt_mint(alg, key, &c, err, sizeof err);
    if (tok == NULL) {
        fprintf(stderr, "%s: %s\n", prog, err[0] ? err : "cannot mint the token");
        /* Invalid UUIDs are the caller's fault: a usage error. */
        return strstr(err, "UUID") != NULL ? 2 : 1;
    }
    int rc = (printf("%s\n", tok) < 0 || fflush(stdout) != 0) ? 1 : 0;
    free(tok);
    return rc;
}
