/*
 * tenants.h -- who is talking: JWT verification, roles and access policy.
 *
 * libjwt 1.10 is unsafe by default (DESIGN.md "Safety rules"): it accepts any
 * token when given an empty key, takes the algorithm from the token, and never
 * checks exp. tenant_jwt_verify() closes each of those holes itself:
 *   - the verifier refuses to exist without a usable key (HS secret >= 32
 *     bytes, or a readable PEM public key for RS256/ES256);
 *   - after decoding, the token's algorithm must equal the configured one
 *     (so "none" in any case, or HS256 signed with the RS public key, fail);
 *   - exp is required and must be an integer in the future; nbf, when
 *     present, must be an integer not in the future; iat, when present, must
 *     be an integer;
 *   - sub and tid must be canonical UUIDs, role one of the four roles.
 * No function here touches the network or the database.
 */
#ifndef INKWIRE_TENANTS_H
#define INKWIRE_TENANTS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TENANT_ALG_HS256 = 0,
    TENANT_ALG_RS256,
    TENANT_ALG_ES256,
} tenant_alg;

/* "HS256"/"RS256"/"ES256" (exact, upper case) -> 0 and *out; else -1. */
int tenant_alg_parse(const char *s, tenant_alg *out);
const char *tenant_alg_name(tenant_alg alg);

typedef enum {
    TENANT_ROLE_OWNER = 0,
    TENANT_ROLE_ARTIST,
    TENANT_ROLE_ASSISTANT,
    TENANT_ROLE_CLIENT,
} tenant_role;

/* "owner" | "artist" | "assistant" | "client" (exact, lower case) -> 0; else -1. */
int tenant_role_parse(const char *s, size_t len, tenant_role *out);
const char *tenant_role_name(tenant_role r);
/* 1 for owner, artist, assistant; 0 for client. */
int tenant_role_is_staff(tenant_role r);

/* Leeway, seconds, applied to exp and nbf for clock skew. */
#define TENANT_JWT_LEEWAY_S 5

typedef struct tenant_claims {
    char sub[37];      /* member id (UUID) */
    char tid[37];      /* tenant id (UUID) */
    tenant_role role;
    int64_t exp;       /* seconds since the epoch */
    int64_t iat;       /* 0 when absent */
    int64_t nbf;       /* 0 when absent */
    char name[151];    /* optional display name, "" when absent; truncated to 150 bytes */
} tenant_claims;

typedef struct tenant_jwt tenant_jwt; /* opaque verifier */

/*
 * tenant_jwt_new -- build a verifier.
 * key: for HS256 the secret itself (must be >= 32 bytes); for RS256/ES256 the
 * path of a PEM public key (must be readable and parse as a key of that type).
 * Returns NULL and writes one clear line into err on failure.
 */
tenant_jwt *tenant_jwt_new(tenant_alg alg, const char *key, char *err, size_t errlen);
void tenant_jwt_free(tenant_jwt *v);

/* Verification results (negative). */
enum {
    TENANT_JWT_OK = 0,
    TENANT_JWT_E_MALFORMED = -1,   /* not a JWT, or bad signature */
    TENANT_JWT_E_ALG = -2,         /* algorithm differs from the configured one */
    TENANT_JWT_E_EXPIRED = -3,     /* exp in the past */
    TENANT_JWT_E_CLAIMS = -4,      /* exp missing/ill-typed, nbf in future, bad sub/tid/role */
};

/*
 * tenant_jwt_verify -- check token[0..len) at time now_s (epoch seconds).
 * On success fills *out and returns TENANT_JWT_OK. On failure returns a
 * TENANT_JWT_E_* and, when why != NULL, points *why at a static human string.
 * The token is never trusted for anything but its claims.
 */
int tenant_jwt_verify(const tenant_jwt *v, const char *token, size_t len, int64_t now_s,
                      tenant_claims *out, const char **why);

/*
 * tenant_jwt_mint -- sign claims (for inkwire-token, tests, the load bot).
 * key: HS256 secret, or the path of a PEM *private* key for RS256/ES256.
 * Claims with iat/nbf == 0 omit them; name "" omits it.
 * Returns a malloc'd NUL-terminated token (caller frees) or NULL with err set.
 */
char *tenant_jwt_mint(tenant_alg alg, const char *key, const tenant_claims *c,
                      char *err, size_t errlen);

/* ------------------------------------------------------------------ plans
 * (tenants/plans.c) The limits of a subscription plan, as stored in the
 * `plans` table (storage/migrations/004_bookings.sql): limits live in that
 * table, never in code. The server keeps a small cache by plan name, filled
 * from the database at each session start and at each admin tenant PUT. */

#define TENANT_PLAN_NAME_MAX 32
#define TENANT_PLAN_UNLIMITED (-1)

typedef struct tenant_plan {
    char name[TENANT_PLAN_NAME_MAX];
    int32_t max_active_clients;     /* TENANT_PLAN_UNLIMITED or >= 0 */
    int32_t max_staff;              /* TENANT_PLAN_UNLIMITED or >= 1 */
    int messaging, scheduling, video; /* 0 / 1 */
    int32_t connections_per_tenant; /* per node; TENANT_PLAN_UNLIMITED or >= 1 */
    uint32_t rate_per_min;          /* token bucket refill, >= 1 */
    uint32_t burst;                 /* token bucket capacity, >= 1 */
} tenant_plan;

/*
 * tenant_plan_from_row -- parse the 9 text columns of a plans row (name,
 * max_active_clients, max_staff, messaging, scheduling, video,
 * connections_per_tenant, rate_per_min, burst; booleans 't'/'f'; NULL entry =
 * SQL NULL = unlimited where allowed). Returns 0, or -1 when any value is
 * missing or out of range (*out is then unspecified).
 */
int tenant_plan_from_row(const char *const v[9], tenant_plan *out);

/* Cache by name (copies p; replaces an entry of the same name). 0, or -1
 * when the cache (16 plans) is full or p has no name. */
int tenant_plan_cache_put(const tenant_plan *p);
/* The cached plan of that name, or NULL. Valid until the next put/clear. */
const tenant_plan *tenant_plan_cache_get(const char *name);
void tenant_plan_cache_clear(void);

/* ------------------------------------------------------------------ rate limits
 * (tenants/ratelimit.c) A token bucket with integer arithmetic and an
 * injected clock. One token = 60000 units; each elapsed ms adds rate_per_min
 * units, up to burst tokens. A new bucket (zeroed) starts full. */

typedef struct tenant_bucket {
    int64_t units;      /* current level, in 1/60000 token */
    int64_t last_ms;    /* time of the last refill */
    int started;        /* 0 until the first take */
} tenant_bucket;

/*
 * tenant_bucket_take -- refill for the time since the last call (a clock
 * that goes backwards adds nothing), then take one token. Returns 0 when a
 * token was taken, else the number of ms (>= 1) until one will be there.
 * rate_per_min and burst of 0 are treated as 1.
 */
int64_t tenant_bucket_take(tenant_bucket *b, uint32_t rate_per_min, uint32_t burst, int64_t now_ms);

#endif /* INKWIRE_TENANTS_H */
