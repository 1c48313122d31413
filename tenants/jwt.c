/*
 * jwt.c -- JWT verification and minting on top of libjwt 1.10 (tenants.h).
 *
 * libjwt 1.10.2 is used for what it does right (signature maths, encoding)
 * and distrusted for everything else (DESIGN.md "Safety rules"):
 *
 *   - it takes the algorithm from the token: we decode the JOSE header
 *     ourselves first and demand that "alg" is *exactly* the configured name,
 *     then demand jwt_get_alg() agrees after libjwt decoded it;
 *   - it accepts anything with an empty key: tenant_jwt_new() refuses to build
 *     a verifier without a >= 32 byte HS secret or a parseable public key of
 *     the configured type;
 *   - it never checks exp/nbf/iat: we parse the (signature-checked) payload
 *     with jansson ourselves, rejecting duplicate keys, and check the JSON
 *     *type* of each time claim (a string "exp" or a float "exp" fails);
 *   - its HMAC comparison is not documented as constant-time: for HS256 we
 *     check the MAC ourselves with CRYPTO_memcmp before libjwt sees the token.
 *
 * Key files are read whole into memory (regular files, <= 64 KiB), parsed
 * with OpenSSL and re-serialised to PEM for libjwt, so that libjwt only ever
 * sees the key we validated, and an encrypted private key can never make
 * OpenSSL prompt on the terminal.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "tenants/tenants.h"

#define JWT__MAX_TOKEN 8192         /* bytes; longer tokens are refused unread */
#define JWT__MAX_KEYFILE (64 * 1024) /* a PEM key file larger than this is not a key */
#define JWT__MIN_HS_SECRET 32
#define JWT__MIN_RSA_BITS 2048
#define JWT__NAME_MAX 150

struct tenant_jwt {
    tenant_alg alg;
    unsigned char *key; /* HS: the secret; RS/ES: PEM "PUBLIC KEY" we re-serialised */
    size_t keylen;
};

/* ------------------------------------------------------------ helpers */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* seterr -- format one line into err (if any room); never fails. */
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static jwt_alg_t libjwt_alg(tenant_alg a)
{
    switch (a) {
    case TENANT_ALG_HS256: return JWT_ALG_HS256;
    case TENANT_ALG_RS256: return JWT_ALG_RS256;
    case TENANT_ALG_ES256: return JWT_ALG_ES256;
    }
    return JWT_ALG_INVAL;
}

/*
 * read_small_file -- read the whole regular file at path (at most
 * JWT__MAX_KEYFILE bytes) into a malloc'd, NUL-terminated buffer.
 * Returns 0 with *out and *outlen set (caller frees, ideally after cleansing), or
 * -1 with one line in err naming the path and the reason.
 */
static int read_small_file(const char *path, unsigned char **out, size_t *outlen,
                           const char *what, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        seterr(err, errlen, "%s: cannot read %s: %s", what, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        seterr(err, errlen, "%s: cannot read %s: %s", what, path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        seterr(err, errlen, "%s: cannot read %s: not a regular file", what, path);
        close(fd);
        return -1;
    }
    if (st.st_size <= 0 || st.st_size > JWT__MAX_KEYFILE) {
        seterr(err, errlen, "%s: %s is %s", what, path,
               st.st_size <= 0 ? "empty" : "too large to be a PEM key (> 64 KiB)");
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size;
    unsigned char *buf = malloc(cap + 1);
    if (buf == NULL) {
        seterr(err, errlen, "%s: out of memory", what);
        close(fd);
        return -1;
    }
    size_t n = 0;
    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            seterr(err, errlen, "%s: cannot read %s: %s", what, path, strerror(errno));
            OPENSSL_cleanse(buf, n);
            free(buf);
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return 0;
}

/* no_passphrase -- pem_password_cb that refuses, so OpenSSL never prompts. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;
}

/*
 * check_key_type -- pk must suit alg: RS256 an RSA key of >= 2048 bits,
 * ES256 an EC key on P-256. Returns 0, or -1 with one line in err.
 */
static int check_key_type(EVP_PKEY *pk, tenant_alg alg, const char *path,
                          const char *what, char *err, size_t errlen)
{
    int id = EVP_PKEY_get_base_id(pk);
    if (alg == TENANT_ALG_RS256) {
        if (id != EVP_PKEY_RSA) {
            seterr(err, errlen, "%s: %s is not an RSA key (RS256 needs one)", what, path);
            return -1;
        }
        if (EVP_PKEY_get_bits(pk) < JWT__MIN_RSA_BITS) {
            seterr(err, errlen, "%s: %s is a %d-bit RSA key; RS256 needs at least %d bits",
                   what, path, EVP_PKEY_get_bits(pk), JWT__MIN_RSA_BITS);
            return -1;
        }
        return 0;
    }
    if (alg == TENANT_ALG_ES256) {
        char group[64] = "";
        size_t glen = 0;
        if (id != EVP_PKEY_EC) {
            seterr(err, errlen, "%s: %s is not an EC key (ES256 needs P-256)", what, path);
            return -1;
        }
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                           sizeof group, &glen) != 1 ||
            (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
            seterr(err, errlen, "%s: %s is an EC key on curve %s; ES256 needs P-256", what,
                   path, group[0] ? group : "(unknown)");
            return -1;
        }
        return 0;
    }
    seterr(err, errlen, "%s: unsupported algorithm", what);
    return -1;
}

/*
 * load_pem_key -- read the PEM key at path (public when want_private == 0,
 * else private), check it suits alg, and re-serialise it to PEM (SPKI for a
 * public key, unencrypted PKCS#8 for a private one) in a malloc'd buffer.
 * Returns 0 with *out and *outlen (caller cleanses and frees), or -1 with err set.
 */
static int load_pem_key(tenant_alg alg, const char *path, int want_private,
                        unsigned char **out, size_t *outlen, const char *what,
                        char *err, size_t errlen)
{
    unsigned char *raw = NULL;
    size_t rawlen = 0;
    EVP_PKEY *pk = NULL;
    BIO *in = NULL, *mem = NULL;
    int rc = -1;

    if (read_small_file(path, &raw, &rawlen, what, err, errlen) != 0)
        return -1;
    in = BIO_new_mem_buf(raw, (int)rawlen);
    if (in == NULL) {
        seterr(err, errlen, "%s: out of memory", what);
        goto out;
    }
    pk = want_private ? PEM_read_bio_PrivateKey(in, NULL, no_passphrase, NULL)
                      : PEM_read_bio_PUBKEY(in, NULL, no_passphrase, NULL);
    if (pk == NULL) {
        if (want_private)
            seterr(err, errlen, "%s: %s is not an unencrypted PEM private key", what, path);
        else
            seterr(err, errlen,
                   "%s: %s is not a PEM public key (expected -----BEGIN PUBLIC KEY-----)",
                   what, path);
        goto out;
    }
    if (check_key_type(pk, alg, path, what, err, errlen) != 0)
        goto out;
    mem = BIO_new(BIO_s_mem());
    if (mem == NULL) {
        seterr(err, errlen, "%s: out of memory", what);
        goto out;
    }
    int ok = want_private
                 ? PEM_write_bio_PKCS8PrivateKey(mem, pk, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_bio_PUBKEY(mem, pk);
    if (ok != 1) {
        seterr(err, errlen, "%s: cannot re-encode the key from %s", what, path);
        goto out;
    }
    char *data = NULL;
    long dlen = BIO_get_mem_data(mem, &data);
    if (dlen <= 0 || data == NULL) {
        seterr(err, errlen, "%s: cannot re-encode the key from %s", what, path);
        goto out;
    }
    *out = malloc((size_t)dlen + 1);
    if (*out == NULL) {
        seterr(err, errlen, "%s: out of memory", what);
        goto out;
    }
    memcpy(*out, data, (size_t)dlen);
    (*out)[dlen] = '\0';
    *outlen = (size_t)dlen;
    rc = 0;
out:
    if (mem != NULL) {
        /* The mem BIO may hold a private key: wipe before freeing. */
        char *d = NULL;
        long l = BIO_get_mem_data(mem, &d);
        if (d != NULL && l > 0)
            OPENSSL_cleanse(d, (size_t)l);
        BIO_free(mem);
    }
    BIO_free(in);
    EVP_PKEY_free(pk);
    OPENSSL_cleanse(raw, rawlen);
    free(raw);
    ERR_clear_error(); /* never leave OpenSSL errors for an unrelated caller */
    return rc;
}

/* b64url_val -- value of one base64url character, or -1. */
static int b64url_val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '-') return 62;
    if (ch == '_') return 63;
    return -1;
}

/*
 * b64url_decode -- strict unpadded base64url (RFC 7515 §2): alphabet only, no
 * '=', length mod 4 != 1, unused trailing bits zero (one encoding per value).
 * out must hold n*3/4 + 1 bytes. Returns the decoded length, or -1.
 */
static long b64url_decode(const char *in, size_t n, unsigned char *out)
{
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* leftover bits must be zero */
        return -1;
    return (long)o;
}

/* is_uuid -- s[0..len) is 8-4-4-4-12 hex digits (either case). */
static int is_uuid(const char *s, size_t len)
{
    if (len != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (ch != '-')
                return 0;
        } else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                     (ch >= 'A' && ch <= 'F'))) {
            return 0;
        }
    }
    return 1;
}

/* copy_uuid_lower -- copy a checked UUID into dst[37], lower-cased. */
static void copy_uuid_lower(char dst[37], const char *s)
{
    for (size_t i = 0; i < 36; i++) {
        char ch = s[i];
        dst[i] = (ch >= 'A' && ch <= 'F') ? (char)(ch - 'A' + 'a') : ch;
    }
    dst[36] = '\0';
}

/*
 * utf8_cut -- largest n' <= max such that s[0..n') does not end inside a
 * UTF-8 sequence (s is valid UTF-8, as jansson guarantees).
 */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* ----------------------------------------------------------- verifier */

/*
 * jwt__clear_claims -- zero *c, but with role = client: TENANT_ROLE_OWNER is
 * 0, so plain zeroed claims would read as the most privileged role to a
 * caller that forgot to check the return code. Fail to least privilege.
 */
static void jwt__clear_claims(tenant_claims *c)
{
    memset(c, 0, sizeof *c);
    c->role = TENANT_ROLE_CLIENT;
}

/*
 * tenant_jwt_new -- see tenants.h. The HS secret is copied (and wiped on
 * free); an RS/ES public key is read once here and never again.
 */
tenant_jwt *tenant_jwt_new(tenant_alg alg, const char *key, char *err, size_t errlen)
{
    tenant_jwt *v = NULL;

    if (libjwt_alg(alg) == JWT_ALG_INVAL) {
        seterr(err, errlen, "JWT: unsupported algorithm %d", (int)alg);
        return NULL;
    }
    if (key == NULL || key[0] == '\0') {
        seterr(err, errlen, "JWT: no key given for %s", tenant_alg_name(alg));
        return NULL;
    }
    v = calloc(1, sizeof *v);
    if (v == NULL) {
        seterr(err, errlen, "JWT: out of memory");
        return NULL;
    }
    v->alg = alg;
    if (alg == TENANT_ALG_HS256) {
        size_t n = strlen(key);
        if (n < JWT__MIN_HS_SECRET) {
            seterr(err, errlen, "JWT: HS256 secret must be at least %d bytes (got %zu)",
                   JWT__MIN_HS_SECRET, n);
            free(v);
            return NULL;
        }
        if (n > INT_MAX) {
            seterr(err, errlen, "JWT: HS256 secret too long");
            free(v);
            return NULL;
        }
        v->key = malloc(n + 1);
        if (v->key == NULL) {
            seterr(err, errlen, "JWT: out of memory");
            free(v);
            return NULL;
        }
        memcpy(v->key, key, n + 1);
        v->keylen = n;
        return v;
    }
    if (load_pem_key(alg, key, 0, &v->key, &v->keylen, "JWT public key", err, errlen) != 0) {
        free(v);
        return NULL;
    }
    return v;
}

/* tenant_jwt_free -- wipe the key material and free; NULL is fine. */
void tenant_jwt_free(tenant_jwt *v)
{
    if (v == NULL)
        return;
    if (v->key != NULL) {
        OPENSSL_cleanse(v->key, v->keylen);
        free(v->key);
    }
    free(v);
}

/*
 * get_int_claim -- the claim name in obj: absent -> 0 (and *present = 0);
 * a JSON integer -> 0 with *val; anything else (string, real, bool, null,
 * object) -> -1.
 */
static int get_int_claim(json_t *obj, const char *name, int64_t *val, int *present)
{
    json_t *j = json_object_get(obj, name);
    *present = 0;
    *val = 0;
    if (j == NULL)
        return 0;
    if (!json_is_integer(j))
        return -1;
    *present = 1;
    *val = (int64_t)json_integer_value(j);
    return 0;
}

/*
 * check_header -- decode the JOSE header seg[0..n) and require "alg" to be
 * exactly want. Returns TENANT_JWT_OK, E_ALG (alg absent, not a string, or
 * any other spelling: "none", "NONE", "hs256", "HS256 ") or E_MALFORMED.
 */
static int check_header(const char *seg, size_t n, const char *want, const char **why)
{
    unsigned char buf[JWT__MAX_TOKEN];
    long dn = b64url_decode(seg, n, buf);
    if (dn <= 0) {
        *why = "header is not base64url";
        return TENANT_JWT_E_MALFORMED;
    }
    json_error_t jerr;
    json_t *h = json_loadb((const char *)buf, (size_t)dn, JSON_REJECT_DUPLICATES, &jerr);
    if (h == NULL || !json_is_object(h)) {
        json_decref(h);
        *why = "header is not a JSON object";
        return TENANT_JWT_E_MALFORMED;
    }
    int rc = TENANT_JWT_OK;
    json_t *alg = json_object_get(h, "alg");
    json_t *typ = json_object_get(h, "typ");
    if (alg == NULL || !json_is_string(alg) || json_string_length(alg) != strlen(want) ||
        memcmp(json_string_value(alg), want, strlen(want)) != 0) {
        *why = "token algorithm differs from the configured one";
        rc = TENANT_JWT_E_ALG;
    } else if (json_object_get(h, "crit") != NULL) {
        *why = "token has critical header extensions";
        rc = TENANT_JWT_E_MALFORMED;
    } else if (typ != NULL && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0)) {
        *why = "token type is not JWT";
        rc = TENANT_JWT_E_MALFORMED;
    }
    json_decref(h);
    return rc;
}

/*
 * check_hmac -- constant-time HMAC-SHA256 check of signing_input against the
 * base64url signature sig[0..siglen). Returns 0 when it matches, else -1.
 */
static int check_hmac(const tenant_jwt *v, const char *signing_input, size_t silen,
                      const char *sig, size_t siglen)
{
    unsigned char want[EVP_MAX_MD_SIZE];
    unsigned int wantlen = 0;
    unsigned char got[33];
    if (siglen != 43) /* 32 bytes, unpadded base64url */
        return -1;
    if (b64url_decode(sig, siglen, got) != 32)
        return -1;
    if (HMAC(EVP_sha256(), v->key, (int)v->keylen, (const unsigned char *)signing_input,
             silen, want, &wantlen) == NULL || wantlen != 32)
        return -1;
    int rc = CRYPTO_memcmp(want, got, 32) == 0 ? 0 : -1;
    OPENSSL_cleanse(want, sizeof want);
    return rc;
}

/*
 * check_claims -- the payload seg[0..n) (already signature-checked) as our
 * claims. Returns TENANT_JWT_OK with *out filled, E_EXPIRED, E_CLAIMS or
 * E_MALFORMED.
 */
static int check_claims(const char *seg, size_t n, int64_t now_s, tenant_claims *out,
                        const char **why)
{
    unsigned char buf[JWT__MAX_TOKEN];
    long dn = b64url_decode(seg, n, buf);
    if (dn <= 0) {
        *why = "payload is not base64url";
        return TENANT_JWT_E_MALFORMED;
    }
    json_error_t jerr;
    json_t *p = json_loadb((const char *)buf, (size_t)dn, JSON_REJECT_DUPLICATES, &jerr);
    if (p == NULL || !json_is_object(p)) {
        json_decref(p);
        *why = "payload is not a JSON object";
        return TENANT_JWT_E_MALFORMED;
    }

    int rc = TENANT_JWT_E_CLAIMS;
    int present = 0;
    int64_t exp = 0, nbf = 0, iat = 0;

    if (get_int_claim(p, "exp", &exp, &present) != 0 || !present) {
        *why = "exp missing or not an integer";
        goto out;
    }
    if (get_int_claim(p, "nbf", &nbf, &present) != 0) {
        *why = "nbf is not an integer";
        goto out;
    }
    /* now_s + leeway without overflow: nbf > now + leeway  <=>  nbf - leeway > now */
    if (present && nbf > INT64_MIN + TENANT_JWT_LEEWAY_S && nbf - TENANT_JWT_LEEWAY_S > now_s) {
        *why = "token not valid yet (nbf)";
        goto out;
    }
    if (get_int_claim(p, "iat", &iat, &present) != 0) {
        *why = "iat is not an integer";
        goto out;
    }

    json_t *sub = json_object_get(p, "sub");
    json_t *tid = json_object_get(p, "tid");
    json_t *role = json_object_get(p, "role");
    json_t *name = json_object_get(p, "name");
    tenant_role r;
    if (!json_is_string(sub) || !is_uuid(json_string_value(sub), json_string_length(sub))) {
        *why = "sub is not a UUID";
        goto out;
    }
    if (!json_is_string(tid) || !is_uuid(json_string_value(tid), json_string_length(tid))) {
        *why = "tid is not a UUID";
        goto out;
    }
    if (!json_is_string(role) ||
        tenant_role_parse(json_string_value(role), json_string_length(role), &r) != 0) {
        *why = "role is not owner, artist, assistant or client";
        goto out;
    }
    if (name != NULL && !json_is_string(name)) {
        *why = "name is not a string";
        goto out;
    }
    /* Expiry last among the checks so a malformed token never reads as "expired". */
    if (exp < INT64_MIN + TENANT_JWT_LEEWAY_S || exp + TENANT_JWT_LEEWAY_S <= now_s) {
        *why = "token expired";
        rc = TENANT_JWT_E_EXPIRED;
        goto out;
    }

    copy_uuid_lower(out->sub, json_string_value(sub));
    copy_uuid_lower(out->tid, json_string_value(tid));
    out->role = r;
    out->exp = exp;
    out->nbf = nbf;
    out->iat = iat;
    if (name != NULL) {
        size_t nl = utf8_cut(json_string_value(name), json_string_length(name), JWT__NAME_MAX);
        memcpy(out->name, json_string_value(name), nl);
        out->name[nl] = '\0';
    }
    rc = TENANT_JWT_OK;
out:
    json_decref(p);
    return rc;
}

/*
 * tenant_jwt_verify -- see tenants.h. Order of checks: size and shape,
 * header alg (our own decode), our own HMAC for HS256, libjwt's decode and
 * signature check, libjwt's idea of the alg, then the claims from the
 * payload bytes the signature covers. *out is cleared first and stays cleared
 * on any failure (see jwt__clear_claims).
 */
int tenant_jwt_verify(const tenant_jwt *v, const char *token, size_t len, int64_t now_s,
                      tenant_claims *out, const char **why)
{
    const char *dummy;
    if (why == NULL)
        why = &dummy;
    *why = "ok";
    if (out != NULL)
        jwt__clear_claims(out);
    if (v == NULL || token == NULL || out == NULL) {
        *why = "no verifier or no token";
        return TENANT_JWT_E_MALFORMED;
    }
    if (len == 0) {
        *why = "empty token";
        return TENANT_JWT_E_MALFORMED;
    }
    if (len > JWT__MAX_TOKEN) {
        *why = "token longer than 8 KiB";
        return TENANT_JWT_E_MALFORMED;
    }

    /* Shape: exactly three base64url segments, header and payload non-empty. */
    size_t dot[2], ndots = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)token[i];
        if (ch == '.') {
            if (ndots == 2) {
                *why = "token does not have three segments";
                return TENANT_JWT_E_MALFORMED;
            }
            dot[ndots++] = i;
        } else if (b64url_val(ch) < 0) {
            *why = "token has characters outside base64url";
            return TENANT_JWT_E_MALFORMED;
        }
    }
    if (ndots != 2 || dot[0] == 0 || dot[1] == dot[0] + 1) {
        *why = "token does not have three segments";
        return TENANT_JWT_E_MALFORMED;
    }

    int rc = check_header(token, dot[0], tenant_alg_name(v->alg), why);
    if (rc != TENANT_JWT_OK)
        return rc;

    const char *sig = token + dot[1] + 1;
    size_t siglen = len - dot[1] - 1;
    if (siglen == 0) {
        *why = "token is not signed";
        return TENANT_JWT_E_MALFORMED;
    }
    if (v->alg == TENANT_ALG_HS256 && check_hmac(v, token, dot[1], sig, siglen) != 0) {
        *why = "bad signature";
        return TENANT_JWT_E_MALFORMED;
    }

    char copy[JWT__MAX_TOKEN + 1];
    memcpy(copy, token, len);
    copy[len] = '\0';
    jwt_t *j = NULL;
    if (jwt_decode(&j, copy, v->key, (int)v->keylen) != 0 || j == NULL) {
        jwt_free(j);
        *why = "bad signature or malformed token";
        return TENANT_JWT_E_MALFORMED;
    }
    jwt_alg_t got = jwt_get_alg(j);
    jwt_free(j);
    if (got != libjwt_alg(v->alg)) {
        *why = "token algorithm differs from the configured one";
        return TENANT_JWT_E_ALG;
    }

    rc = check_claims(token + dot[0] + 1, dot[1] - dot[0] - 1, now_s, out, why);
    if (rc != TENANT_JWT_OK)
        jwt__clear_claims(out);
    return rc;
}

/* --------------------------------------------------------------- mint */

/*
 * tenant_jwt_mint -- see tenants.h. The claims are checked with the same
 * rules the verifier applies (UUIDs, role, exp > 0, name <= 150 bytes) so we
 * never mint a token we would refuse; the HS secret must be >= 32 bytes.
 */
char *tenant_jwt_mint(tenant_alg alg, const char *key, const tenant_claims *c,
                      char *err, size_t errlen)
{
    unsigned char *k = NULL;
    size_t klen = 0;
    jwt_t *j = NULL;
    char *tok = NULL, *ret = NULL;

    if (libjwt_alg(alg) == JWT_ALG_INVAL) {
        seterr(err, errlen, "JWT: unsupported algorithm %d", (int)alg);
        return NULL;
    }
    if (c == NULL) {
        seterr(err, errlen, "JWT: no claims");
        return NULL;
    }
    if (key == NULL || key[0] == '\0') {
        seterr(err, errlen, "JWT: no key given for %s", tenant_alg_name(alg));
        return NULL;
    }
    if (strnlen(c->sub, sizeof c->sub) != 36 || !is_uuid(c->sub, 36)) {
        seterr(err, errlen, "JWT: sub is not a UUID");
        return NULL;
    }
    if (strnlen(c->tid, sizeof c->tid) != 36 || !is_uuid(c->tid, 36)) {
        seterr(err, errlen, "JWT: tid is not a UUID");
        return NULL;
    }
    if ((unsigned)c->role > TENANT_ROLE_CLIENT) {
        seterr(err, errlen, "JWT: invalid role %d", (int)c->role);
        return NULL;
    }
    if (c->exp <= 0 || c->exp > LONG_MAX || c->iat < 0 || c->iat > LONG_MAX || c->nbf < 0 ||
        c->nbf > LONG_MAX) {
        seterr(err, errlen, "JWT: exp must be > 0 and iat/nbf >= 0");
        return NULL;
    }
    size_t namelen = strnlen(c->name, sizeof c->name);
    if (namelen > JWT__NAME_MAX) {
        seterr(err, errlen, "JWT: name longer than %d bytes", JWT__NAME_MAX);
        return NULL;
    }

    if (alg == TENANT_ALG_HS256) {
        klen = strlen(key);
        if (klen < JWT__MIN_HS_SECRET) {
            seterr(err, errlen, "JWT: HS256 secret must be at least %d bytes (got %zu)",
                   JWT__MIN_HS_SECRET, klen);
            return NULL;
        }
        if (klen > INT_MAX) {
            seterr(err, errlen, "JWT: HS256 secret too long");
            return NULL;
        }
        k = malloc(klen + 1);
        if (k == NULL) {
            seterr(err, errlen, "JWT: out of memory");
            return NULL;
        }
        memcpy(k, key, klen + 1);
    } else if (load_pem_key(alg, key, 1, &k, &klen, "JWT private key", err, errlen) != 0) {
        return NULL;
    }

    if (jwt_new(&j) != 0 || j == NULL) {
        seterr(err, errlen, "JWT: out of memory");
        goto out;
    }
    if (jwt_add_grant(j, "sub", c->sub) != 0 || jwt_add_grant(j, "tid", c->tid) != 0 ||
        jwt_add_grant(j, "role", tenant_role_name(c->role)) != 0 ||
        jwt_add_grant_int(j, "exp", (long)c->exp) != 0 ||
        (c->iat != 0 && jwt_add_grant_int(j, "iat", (long)c->iat) != 0) ||
        (c->nbf != 0 && jwt_add_grant_int(j, "nbf", (long)c->nbf) != 0) ||
        (namelen > 0 && jwt_add_grant(j, "name", c->name) != 0)) {
        seterr(err, errlen, "JWT: cannot add claims (name must be valid UTF-8)");
        goto out;
    }
    if (jwt_set_alg(j, libjwt_alg(alg), k, (int)klen) != 0) {
        seterr(err, errlen, "JWT: libjwt refused the %s key", tenant_alg_name(alg));
        goto out;
    }
    tok = jwt_encode_str(j);
    if (tok == NULL) {
        seterr(err, errlen, "JWT: signing failed");
        goto out;
    }
    ret = tok;
out:
    jwt_free(j);
    if (k != NULL) {
        OPENSSL_cleanse(k, klen);
        free(k);
    }
    ERR_clear_error();
    return ret;
}
