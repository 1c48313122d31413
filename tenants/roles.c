/*
 * roles.c -- names of the JWT algorithms and member roles (tenants.h).
 *
 * Parsing is exact and case-sensitive on purpose: a token or a configuration
 * value that says "Owner" or "hs256" is a mistake we want to see, not guess at.
 */
#include <string.h>

#include "tenants/tenants.h"

static const char *const alg_names[] = {
    [TENANT_ALG_HS256] = "HS256",
    [TENANT_ALG_RS256] = "RS256",
    [TENANT_ALG_ES256] = "ES256",
};

static const char *const role_names[] = {
    [TENANT_ROLE_OWNER] = "owner",
    [TENANT_ROLE_ARTIST] = "artist",
    [TENANT_ROLE_ASSISTANT] = "assistant",
    [TENANT_ROLE_CLIENT] = "client",
};

#define N_ALGS (sizeof alg_names / sizeof alg_names[0])
#define N_ROLES (sizeof role_names / sizeof role_names[0])

/*
 * tenant_alg_parse -- "HS256"/"RS256"/"ES256", exactly (NUL-terminated).
 * Returns 0 and sets *out; returns -1 (and leaves *out alone) for anything
 * else, including NULL.
 */
int tenant_alg_parse(const char *s, tenant_alg *out)
{
    if (s == NULL || out == NULL)
        return -1;
    for (size_t i = 0; i < N_ALGS; i++) {
        if (strcmp(s, alg_names[i]) == 0) {
            *out = (tenant_alg)i;
            return 0;
        }
    }
    return -1;
}

/* tenant_alg_name -- the JOSE name of alg; "?" for an out-of-range value. */
const char *tenant_alg_name(tenant_alg alg)
{
    if ((unsigned)alg >= N_ALGS)
        return "?";
    return alg_names[alg];
}

/*
 * tenant_role_parse -- s[0..len) must be exactly one of the four role names
 * (no NUL inside, no case folding). Returns 0 and sets *out, or -1.
 */
int tenant_role_parse(const char *s, size_t len, tenant_role *out)
{
    if (s == NULL || out == NULL)
        return -1;
    for (size_t i = 0; i < N_ROLES; i++) {
        size_t n = strlen(role_names[i]);
        if (len == n && memcmp(s, role_names[i], n) == 0) {
            *out = (tenant_role)i;
            return 0;
        }
    }
    return -1;
}

/* tenant_role_name -- the wire name of r; "?" for an out-of-range value. */
const char *tenant_role_name(tenant_role r)
{
    if ((unsigned)r >= N_ROLES)
        return "?";
    return role_names[r];
}

/* tenant_role_is_staff -- 1 for owner, artist, assistant; 0 otherwise. */
int tenant_role_is_staff(tenant_role r)
{
    return r == TENANT_ROLE_OWNER || r == TENANT_ROLE_ARTIST || r == TENANT_ROLE_ASSISTANT;
}
