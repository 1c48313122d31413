/*
 * test_jwt.c -- tenant_jwt_* against valid and hostile tokens.
 *
 * Keys (RSA-2048, EC P-256, RSA-1024, and an EC P-384) are generated at
 * group start with the OpenSSL 3 API into a mkdtemp directory and removed at
 * the end. Hostile tokens are hand-crafted byte by byte (own base64url and
 * HMAC) so that no test depends on the code under test to build its input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "tenants/tenants.h"

#define NOW 1700000000LL
#define SECRET "0123456789abcdef0123456789abcdef-test-secret"
#define SUB "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
#define TID "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"

static char g_dir[64];
static char g_rsa_pub[128], g_rsa_priv[128], g_ec_pub[128], g_ec_priv[128];
static char g_rsa1024_pub[128], g_p384_pub[128];

/* ------------------------------------------------------------ helpers */

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* b64url -- unpadded base64url of in[0..n) appended at out; returns length. */
static size_t b64url(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = b64chars[v >> 6 & 63];
        out[o++] = b64chars[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = b64chars[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

/*
 * craft -- header_json.payload_json signed with HMAC-SHA256(secret), or with
 * the literal sig string when sig != NULL (use "" for an empty signature).
 * Returns a malloc'd token.
 */
static char *craft(const char *header, const char *payload, const char *secret, size_t secretlen,
                   const char *sig)
{
    size_t cap = 4 * (strlen(header) + strlen(payload)) + 256 + (sig ? strlen(sig) : 0);
    char *t = malloc(cap);
    assert_non_null(t);
    size_t n = b64url((const unsigned char *)header, strlen(header), t);
    t[n++] = '.';
    n += b64url((const unsigned char *)payload, strlen(payload), t + n);
    if (sig != NULL) {
        t[n++] = '.';
        strcpy(t + n, sig);
        return t;
    }
    unsigned char mac[32];
    unsigned maclen = 0;
    assert_non_null(HMAC(EVP_sha256(), secret, (int)secretlen, (unsigned char *)t, n, mac, &maclen));
    assert_int_equal(maclen, 32);
    t[n++] = '.';
    b64url(mac, 32, t + n);
    return t;
}

static char *craft_hs(const char *header, const char *payload)
{
    return craft(header, payload, SECRET, strlen(SECRET), NULL);
}

/* std_payload -- a valid claim set with the given exp. */
static void std_payload(char *buf, size_t cap, long long exp)
{
    snprintf(buf, cap, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\",\"exp\":%lld}", SUB,
             TID, exp);
}

static tenant_jwt *hs_verifier(void)
{
    char err[256] = "";
    tenant_jwt *v = tenant_jwt_new(TENANT_ALG_HS256, SECRET, err, sizeof err);
    assert_non_null(v);
    return v;
}

/* verify_str -- verify token with v at NOW; returns the result code. */
static int verify_str(const tenant_jwt *v, const char *tok, tenant_claims *c)
{
    const char *why = NULL;
    int rc = tenant_jwt_verify(v, tok, strlen(tok), NOW, c, &why);
    assert_non_null(why);
    return rc;
}

/* expect_hs -- craft an HS256 token from header+payload, check the code. */
static void expect_hs(const char *header, const char *payload, int want)
{
    tenant_jwt *v = hs_verifier();
    char *tok = craft_hs(header, payload);
    tenant_claims c;
    int rc = verify_str(v, tok, &c);
    assert_int_equal(rc, want);
    if (want != TENANT_JWT_OK) {
        /* Nothing leaks out on failure, and the role fails to least privilege. */
        assert_string_equal(c.sub, "");
        assert_string_equal(c.tid, "");
        assert_int_equal(c.role, TENANT_ROLE_CLIENT);
        assert_int_equal(c.exp, 0);
    }
    free(tok);
    tenant_jwt_free(v);
}

static void base_claims(tenant_claims *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->sub, SUB);
    strcpy(c->tid, TID);
    c->role = TENANT_ROLE_OWNER;
    c->exp = NOW + 3600;
    c->iat = NOW;
}

static int write_key(const char *path, EVP_PKEY *pk, int priv)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    int ok = priv ? PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) : PEM_write_PUBKEY(f, pk);
    fclose(f);
    return ok == 1 ? 0 : -1;
}

static int group_setup(void **state)
{
    (void)state;
    strcpy(g_dir, "/tmp/inkwire-test-jwt-XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(g_rsa_pub, sizeof g_rsa_pub, "%s/rsa.pub", g_dir);
    snprintf(g_rsa_priv, sizeof g_rsa_priv, "%s/rsa.key", g_dir);
    snprintf(g_ec_pub, sizeof g_ec_pub, "%s/ec.pub", g_dir);
    snprintf(g_ec_priv, sizeof g_ec_priv, "%s/ec.key", g_dir);
    snprintf(g_rsa1024_pub, sizeof g_rsa1024_pub, "%s/rsa1024.pub", g_dir);
    snprintf(g_p384_pub, sizeof g_p384_pub, "%s/p384.pub", g_dir);

    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    int rc = (rsa && ec && rsa1024 && p384 && write_key(g_rsa_pub, rsa, 0) == 0 &&
              write_key(g_rsa_priv, rsa, 1) == 0 && write_key(g_ec_pub, ec, 0) == 0 &&
              write_key(g_ec_priv, ec, 1) == 0 && write_key(g_rsa1024_pub, rsa1024, 0) == 0 &&
              write_key(g_p384_pub, p384, 0) == 0)
                 ? 0
                 : -1;
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa1024);
    EVP_PKEY_free(p384);
    return rc;
}

static int group_teardown(void **state)
{
    (void)state;
    const char *files[] = {g_rsa_pub, g_rsa_priv, g_ec_pub, g_ec_priv, g_rsa1024_pub, g_p384_pub};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        unlink(files[i]);
    rmdir(g_dir);
    return 0;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    assert_non_null(buf);
    size_t n = fread(buf, 1, 65535, f);
    fclose(f);
    assert_true(n > 0);
    return buf;
}

/* ---------------------------------------------------------- valid paths */

static void test_hs256_valid(void **state)
{
    (void)state;
    char p[512];
    snprintf(p, sizeof p,
             "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"client\",\"exp\":%lld,\"iat\":%lld,"
             "\"nbf\":%lld,\"name\":\"Ana\"}",
             SUB, TID, NOW + 60, NOW - 10, NOW - 10);
    tenant_jwt *v = hs_verifier();
    char *tok = craft_hs("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", p);
    tenant_claims c;
    assert_int_equal(verify_str(v, tok, &c), TENANT_JWT_OK);
    assert_string_equal(c.sub, SUB);
    assert_string_equal(c.tid, TID);
    assert_int_equal(c.role, TENANT_ROLE_CLIENT);
    assert_int_equal(c.exp, NOW + 60);
    assert_int_equal(c.iat, NOW - 10);
    assert_int_equal(c.nbf, NOW - 10);
    assert_string_equal(c.name, "Ana");
    free(tok);
    tenant_jwt_free(v);
}

static void test_hs256_exp_within_leeway(void **state)
{
    (void)state;
    char p[256];
    std_payload(p, sizeof p, NOW - TENANT_JWT_LEEWAY_S + 1);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_OK);
    std_payload(p, sizeof p, NOW - TENANT_JWT_LEEWAY_S);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_EXPIRED);
}

static void test_uppercase_uuid_normalised(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof p,
             "{\"sub\":\"3F2504E0-4F89-11D3-9A0C-0305E82C3301\",\"tid\":\"%s\",\"role\":\"owner\","
             "\"exp\":%lld}",
             TID, NOW + 60);
    tenant_jwt *v = hs_verifier();
    char *tok = craft_hs("{\"alg\":\"HS256\"}", p);
    tenant_claims c;
    assert_int_equal(verify_str(v, tok, &c), TENANT_JWT_OK);
    assert_string_equal(c.sub, SUB);
    free(tok);
    tenant_jwt_free(v);
}

static void test_rs256_valid(void **state)
{
    (void)state;
    char err[256] = "";
    tenant_claims in, out;
    base_claims(&in);
    char *tok = tenant_jwt_mint(TENANT_ALG_RS256, g_rsa_priv, &in, err, sizeof err);
    assert_non_null(tok);
    tenant_jwt *v = tenant_jwt_new(TENANT_ALG_RS256, g_rsa_pub, err, sizeof err);
    assert_non_null(v);
    assert_int_equal(verify_str(v, tok, &out), TENANT_JWT_OK);
    assert_string_equal(out.sub, SUB);
    assert_int_equal(out.role, TENANT_ROLE_OWNER);
    /* The same token against an HS256 verifier is an algorithm mismatch. */
    tenant_jwt *hs = hs_verifier();
    assert_int_equal(verify_str(hs, tok, &out), TENANT_JWT_E_ALG);
    tenant_jwt_free(hs);
    tenant_jwt_free(v);
    free(tok);
}

static void test_es256_valid(void **state)
{
    (void)state;
    char err[256] = "";
    tenant_claims in, out;
    base_claims(&in);
    char *tok = tenant_jwt_mint(TENANT_ALG_ES256, g_ec_priv, &in, err, sizeof err);
    assert_non_null(tok);
    /* JOSE ES256 signatures are raw R||S (64 bytes = 86 base64url chars), not DER. */
    const char *sig = strrchr(tok, '.');
    assert_non_null(sig);
    assert_int_equal(strlen(sig + 1), 86);
    tenant_jwt *v = tenant_jwt_new(TENANT_ALG_ES256, g_ec_pub, err, sizeof err);
    assert_non_null(v);
    assert_int_equal(verify_str(v, tok, &out), TENANT_JWT_OK);
    assert_string_equal(out.tid, TID);
    tenant_jwt_free(v);
    free(tok);
}

static void test_mint_verify_roundtrip_name(void **state)
{
    (void)state;
    char err[256] = "";
    tenant_claims in, out;
    base_claims(&in);
    in.role = TENANT_ROLE_ASSISTANT;
    in.nbf = NOW - 1;
    strcpy(in.name, "Zoë \"Ink\" Müller");
    char *tok = tenant_jwt_mint(TENANT_ALG_HS256, SECRET, &in, err, sizeof err);
    assert_non_null(tok);
    tenant_jwt *v = hs_verifier();
    assert_int_equal(verify_str(v, tok, &out), TENANT_JWT_OK);
    assert_string_equal(out.name, in.name);
    assert_int_equal(out.role, TENANT_ROLE_ASSISTANT);
    assert_int_equal(out.exp, in.exp);
    assert_int_equal(out.iat, in.iat);
    assert_int_equal(out.nbf, in.nbf);
    tenant_jwt_free(v);
    free(tok);

    /* iat/nbf == 0 and name "" are omitted from the token. */
    base_claims(&in);
    in.iat = 0;
    tok = tenant_jwt_mint(TENANT_ALG_HS256, SECRET, &in, err, sizeof err);
    assert_non_null(tok);
    v = hs_verifier();
    assert_int_equal(verify_str(v, tok, &out), TENANT_JWT_OK);
    assert_int_equal(out.iat, 0);
    assert_int_equal(out.nbf, 0);
    assert_string_equal(out.name, "");
    tenant_jwt_free(v);
    free(tok);
}

static void test_name_truncated_on_utf8_boundary(void **state)
{
    (void)state;
    /* 149 ASCII bytes then a 2-byte "é": cutting at 150 would split it. */
    char name[200];
    memset(name, 'a', 149);
    strcpy(name + 149, "\xc3\xa9tail");
    char p[512];
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\",\"exp\":%lld,\"name\":\"%s\"}",
             SUB, TID, NOW + 60, name);
    tenant_jwt *v = hs_verifier();
    char *tok = craft_hs("{\"alg\":\"HS256\"}", p);
    tenant_claims c;
    assert_int_equal(verify_str(v, tok, &c), TENANT_JWT_OK);
    assert_int_equal(strlen(c.name), 149);
    free(tok);
    tenant_jwt_free(v);
}

/* ------------------------------------------------------ algorithm attacks */

static void none_case(const char *alg, int with_sig)
{
    char h[64], p[256];
    snprintf(h, sizeof h, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    std_payload(p, sizeof p, NOW + 3600);
    char *tok = craft(h, p, NULL, 0, with_sig ? "c2lnbmF0dXJlLWdvZXMtaGVyZQ" : "");
    tenant_jwt *v = hs_verifier();
    tenant_claims c;
    assert_int_equal(verify_str(v, tok, &c), TENANT_JWT_E_ALG);
    tenant_jwt_free(v);
    char err[256];
    v = tenant_jwt_new(TENANT_ALG_RS256, g_rsa_pub, err, sizeof err);
    assert_non_null(v);
    assert_int_equal(verify_str(v, tok, &c), TENANT_JWT_E_ALG);
    tenant_jwt_free(v);
    free(tok);
}

static void test_alg_none_lower_nosig(void **s) { (void)s; none_case("none", 0); }
static void test_alg_none_upper_nosig(void **s) { (void)s; none_case("NONE", 0); }
static void test_alg_none_mixed_nosig(void **s) { (void)s; none_case("nOnE", 0); }
static void test_alg_none_title_nosig(void **s) { (void)s; none_case("None", 0); }
static void test_alg_none_lower_sig(void **s) { (void)s; none_case("none", 1); }
static void test_alg_none_upper_sig(void **s) { (void)s; none_case("NONE", 1); }
static void test_alg_none_mixed_sig(void **s) { (void)s; none_case("nOnE", 1); }

static void test_alg_none_hmac_signed(void **state)
{
    /* alg none but a *valid* HMAC over the input: still not our algorithm. */
    (void)state;
    char p[256];
    std_payload(p, sizeof p, NOW + 3600);
    expect_hs("{\"alg\":\"none\"}", p, TENANT_JWT_E_ALG);
}

static void test_alg_wrong_case_hs256(void **state)
{
    (void)state;
    char p[256];
    std_payload(p, sizeof p, NOW + 3600);
    expect_hs("{\"alg\":\"hs256\"}", p, TENANT_JWT_E_ALG);
    expect_hs("{\"alg\":\"HS256 \"}", p, TENANT_JWT_E_ALG);
    expect_hs("{\"alg\":\"HS512\"}", p, TENANT_JWT_E_ALG);
    expect_hs("{\"typ\":\"JWT\"}", p, TENANT_JWT_E_ALG);
    expect_hs("{\"alg\":null}", p, TENANT_JWT_E_ALG);
    expect_hs("{\"alg\":[\"HS256\"]}", p, TENANT_JWT_E_ALG);
}

static void test_alg_duplicate_header_key(void **state)
{
    (void)state;
    char p[256];
    std_payload(p, sizeof p, NOW + 3600);
    expect_hs("{\"alg\":\"HS256\",\"alg\":\"none\"}", p, TENANT_JWT_E_MALFORMED);
    expect_hs("{\"alg\":\"none\",\"alg\":\"HS256\"}", p, TENANT_JWT_E_MALFORMED);
}

static void test_alg_confusion_rs_pubkey_as_hmac(void **state)
{
    (void)state;
    char *pem = slurp(g_rsa_pub);
    char p[256];
    std_payload(p, sizeof p, NOW + 3600);
    char *tok = craft("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", p, pem, strlen(pem), NULL);
    char err[256];
    tenant_jwt *v = tenant_jwt_new(TENANT_ALG_RS256, g_rsa_pub, err, sizeof err);
    assert_non_null(v);
    tenant_claims c;
    assert_int_equal(verify_str(v, tok, &c), TENANT_JWT_E_ALG);
    assert_string_equal(c.sub, "");
    tenant_jwt_free(v);
    free(tok);
    free(pem);
}

static void test_es_token_to_rs_verifier(void **state)
{
    (void)state;
    char err[256];
    tenant_claims in, out;
    base_claims(&in);
    char *tok = tenant_jwt_mint(TENANT_ALG_ES256, g_ec_priv, &in, err, sizeof err);
    assert_non_null(tok);
    tenant_jwt *v = tenant_jwt_new(TENANT_ALG_RS256, g_rsa_pub, err, sizeof err);
    assert_non_null(v);
    assert_int_equal(verify_str(v, tok, &out), TENANT_JWT_E_ALG);
    tenant_jwt_free(v);
    free(tok);
}

static void test_crit_header_rejected(void **state)
{
    (void)state;
    char p[256];
    std_payload(p, sizeof p, NOW + 3600);
    expect_hs("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", p, TENANT_JWT_E_MALFORMED);
}

/* -------------------------------------------------------------- time */

static void test_expired(void **state)
{
    (void)state;
    char p[256];
    std_payload(p, sizeof p, NOW - 3600);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_EXPIRED);
}

static void test_no_exp(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\"}", SUB, TID);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
}

static void test_string_exp(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\",\"exp\":\"9999999999\"}",
             SUB, TID);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
}

static void test_float_exp(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\",\"exp\":9999999999.0}",
             SUB, TID);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\",\"exp\":1e10}", SUB,
             TID);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
}

static void test_other_ill_typed_exp(void **state)
{
    (void)state;
    const char *bad[] = {"true", "null", "[9999999999]", "{}", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\",\"exp\":%s}", SUB,
                 TID, bad[i]);
        tenant_jwt *v = hs_verifier();
        char *tok = craft_hs("{\"alg\":\"HS256\"}", p);
        tenant_claims c;
        int rc = verify_str(v, tok, &c);
        /* Overflowing integers are a JSON error (MALFORMED), the rest ill-typed claims. */
        assert_true(rc == TENANT_JWT_E_CLAIMS || rc == TENANT_JWT_E_MALFORMED);
        free(tok);
        tenant_jwt_free(v);
    }
}

static void test_future_nbf(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\",\"exp\":%lld,\"nbf\":%lld}",
             SUB, TID, NOW + 3600, NOW + 600);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
    /* Inside the leeway it is accepted. */
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\",\"exp\":%lld,\"nbf\":%lld}",
             SUB, TID, NOW + 3600, NOW + TENANT_JWT_LEEWAY_S);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_OK);
}

static void test_string_nbf_and_iat(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\",\"exp\":%lld,\"nbf\":\"0\"}",
             SUB, TID, NOW + 3600);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\",\"exp\":%lld,\"iat\":1.5}",
             SUB, TID, NOW + 3600);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
}

/* ------------------------------------------------------- shape and sig */

static void test_bad_signature_flip(void **state)
{
    (void)state;
    char p[256];
    std_payload(p, sizeof p, NOW + 3600);
    char *tok = craft_hs("{\"alg\":\"HS256\"}", p);
    char *sig = strrchr(tok, '.') + 1;
    sig[5] = sig[5] == 'A' ? 'B' : 'A';
    tenant_jwt *v = hs_verifier();
    tenant_claims c;
    assert_int_equal(verify_str(v, tok, &c), TENANT_JWT_E_MALFORMED);
    free(tok);
    tenant_jwt_free(v);
}

static void test_bad_signature_rs256(void **state)
{
    (void)state;
    char err[256];
    tenant_claims in, out;
    base_claims(&in);
    char *tok = tenant_jwt_mint(TENANT_ALG_RS256, g_rsa_priv, &in, err, sizeof err);
    assert_non_null(tok);
    char *sig = strrchr(tok, '.') + 1;
    sig[10] = sig[10] == 'A' ? 'B' : 'A';
    tenant_jwt *v = tenant_jwt_new(TENANT_ALG_RS256, g_rsa_pub, err, sizeof err);
    assert_non_null(v);
    assert_int_equal(verify_str(v, tok, &out), TENANT_JWT_E_MALFORMED);
    tenant_jwt_free(v);
    free(tok);
}

static void test_tampered_payload(void **state)
{
    /* Re-sign nothing: swap the payload of a valid token for an owner payload. */
    (void)state;
    char p[256], q[256];
    std_payload(p, sizeof p, NOW + 3600);
    snprintf(q, sizeof q, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"owner\",\"exp\":%lld}", SUB, TID,
             NOW + 3600);
    char *a = craft_hs("{\"alg\":\"HS256\"}", p);
    char *b = craft_hs("{\"alg\":\"HS256\"}", q);
    char mix[1024];
    const char *a_sig = strrchr(a, '.');
    size_t b_head = strrchr(b, '.') - b;
    snprintf(mix, sizeof mix, "%.*s%s", (int)b_head, b, a_sig);
    tenant_jwt *v = hs_verifier();
    tenant_claims c;
    assert_int_equal(verify_str(v, mix, &c), TENANT_JWT_E_MALFORMED);
    free(a);
    free(b);
    tenant_jwt_free(v);
}

static void test_wrong_secret(void **state)
{
    (void)state;
    char p[256];
    std_payload(p, sizeof p, NOW + 3600);
    const char *other = "another-secret-that-is-long-enough-0123";
    char *tok = craft("{\"alg\":\"HS256\"}", p, other, strlen(other), NULL);
    tenant_jwt *v = hs_verifier();
    tenant_claims c;
    assert_int_equal(verify_str(v, tok, &c), TENANT_JWT_E_MALFORMED);
    free(tok);
    tenant_jwt_free(v);
}

static void test_truncated_token(void **state)
{
    (void)state;
    char p[256];
    std_payload(p, sizeof p, NOW + 3600);
    char *tok = craft_hs("{\"alg\":\"HS256\"}", p);
    tenant_jwt *v = hs_verifier();
    tenant_claims c;
    const char *why = NULL;
    size_t n = strlen(tok);
    assert_int_equal(tenant_jwt_verify(v, tok, n, NOW, &c, &why), TENANT_JWT_OK);
    /* Every proper prefix must fail (and none may crash). */
    for (size_t len = 0; len < n; len++)
        assert_int_not_equal(tenant_jwt_verify(v, tok, len, NOW, &c, &why), TENANT_JWT_OK);
    /* Without the signature segment at all. */
    *strrchr(tok, '.') = '\0';
    assert_int_equal(verify_str(v, tok, &c), TENANT_JWT_E_MALFORMED);
    free(tok);
    tenant_jwt_free(v);
}

static void test_two_dots_only(void **state)
{
    (void)state;
    tenant_jwt *v = hs_verifier();
    tenant_claims c;
    assert_int_equal(verify_str(v, "..", &c), TENANT_JWT_E_MALFORMED);
    assert_int_equal(verify_str(v, ".", &c), TENANT_JWT_E_MALFORMED);
    assert_int_equal(verify_str(v, "...", &c), TENANT_JWT_E_MALFORMED);
    assert_int_equal(verify_str(v, "a.b.c.d", &c), TENANT_JWT_E_MALFORMED);
    assert_int_equal(verify_str(v, "", &c), TENANT_JWT_E_MALFORMED);
    tenant_jwt_free(v);
}

static void test_garbage_base64(void **state)
{
    (void)state;
    tenant_jwt *v = hs_verifier();
    tenant_claims c;
    assert_int_equal(verify_str(v, "eyJ!!!.eyJ$$$.sig", &c), TENANT_JWT_E_MALFORMED);
    assert_int_equal(verify_str(v, "Zm9v.YmFy.YmF6", &c), TENANT_JWT_E_MALFORMED); /* foo.bar.baz */
    assert_int_equal(verify_str(v, "e.e.e", &c), TENANT_JWT_E_MALFORMED);        /* len%4==1 */
    /* Padded base64 ('=') is not base64url as JWS uses it. */
    char p[256];
    std_payload(p, sizeof p, NOW + 3600);
    char *tok = craft_hs("{\"alg\":\"HS256\"}", p);
    char padded[1024];
    snprintf(padded, sizeof padded, "%s=", tok);
    assert_int_equal(verify_str(v, padded, &c), TENANT_JWT_E_MALFORMED);
    /* Standard-alphabet '+' '/' are refused too. */
    assert_int_equal(verify_str(v, "eyJh+GciOiJIUzI1NiJ9.e30.abc/", &c), TENANT_JWT_E_MALFORMED);
    free(tok);
    tenant_jwt_free(v);
}

static void test_embedded_nul_and_length(void **state)
{
    (void)state;
    char p[256];
    std_payload(p, sizeof p, NOW + 3600);
    char *tok = craft_hs("{\"alg\":\"HS256\"}", p);
    tenant_jwt *v = hs_verifier();
    tenant_claims c;
    const char *why = NULL;
    size_t n = strlen(tok);
    char buf[1024];
    memcpy(buf, tok, n);
    buf[n] = '\0';
    buf[n + 1] = 'x';
    /* The NUL is counted in len: must not be accepted as the shorter token. */
    assert_int_equal(tenant_jwt_verify(v, buf, n + 2, NOW, &c, &why), TENANT_JWT_E_MALFORMED);
    /* Longer than 8 KiB is refused before anything is parsed. */
    char *big = malloc(9000);
    assert_non_null(big);
    memset(big, 'A', 9000);
    memcpy(big, tok, n);
    assert_int_equal(tenant_jwt_verify(v, big, 9000, NOW, &c, &why), TENANT_JWT_E_MALFORMED);
    assert_non_null(strstr(why, "8 KiB"));
    free(big);
    free(tok);
    tenant_jwt_free(v);
}

static void test_payload_not_object(void **state)
{
    (void)state;
    expect_hs("{\"alg\":\"HS256\"}", "[1,2,3]", TENANT_JWT_E_MALFORMED);
    expect_hs("{\"alg\":\"HS256\"}", "not json", TENANT_JWT_E_MALFORMED);
    expect_hs("[\"alg\",\"HS256\"]", "{}", TENANT_JWT_E_MALFORMED);
}

/* ------------------------------------------------------------ claims */

static void test_bad_sub_not_uuid(void **state)
{
    (void)state;
    const char *bad[] = {"\"admin\"", "\"3f2504e0-4f89-11d3-9a0c-0305e82c330\"",
                         "\"3f2504e0-4f89-11d3-9a0c-0305e82c33011\"",
                         "\"3f2504e0_4f89-11d3-9a0c-0305e82c3301\"",
                         "\"3f2504e0-4f89-11d3-9a0c-0305e82c330g\"",
                         "\"{3f2504e0-4f89-11d3-9a0c-0305e82c33}\"", "42", "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, "{\"sub\":%s,\"tid\":\"%s\",\"role\":\"artist\",\"exp\":%lld}", bad[i],
                 TID, NOW + 60);
        expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
    }
    char p[256];
    snprintf(p, sizeof p, "{\"tid\":\"%s\",\"role\":\"artist\",\"exp\":%lld}", TID, NOW + 60);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
}

static void test_bad_tid_not_uuid(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"studio-1\",\"role\":\"artist\",\"exp\":%lld}",
             SUB, NOW + 60);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"role\":\"artist\",\"exp\":%lld}", SUB, NOW + 60);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
}

static void test_unknown_role(void **state)
{
    (void)state;
    const char *bad[] = {"\"admin\"", "\"Owner\"", "\"owner \"", "\"\"", "1", "[\"owner\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char p[256];
        snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":%s,\"exp\":%lld}", SUB, TID,
                 bad[i], NOW + 60);
        expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
    }
}

static void test_name_not_string(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"artist\",\"exp\":%lld,\"name\":7}",
             SUB, TID, NOW + 60);
    expect_hs("{\"alg\":\"HS256\"}", p, TENANT_JWT_E_CLAIMS);
}

static void test_duplicate_claim_rejected(void **state)
{
    /* {"role":"client","role":"owner"}: parsers disagree on which wins; refuse. */
    (void)state;
    char p[256];
    snprintf(p, sizeof p,
             "{\"sub\":\"%s\",\"tid\":\"%s\",\"role\":\"client\",\"role\":\"owner\",\"exp\":%lld}",
             SUB, TID, NOW + 60);
    tenant_jwt *v = hs_verifier();
    char *tok = craft_hs("{\"alg\":\"HS256\"}", p);
    tenant_claims c;
    assert_int_not_equal(verify_str(v, tok, &c), TENANT_JWT_OK);
    free(tok);
    tenant_jwt_free(v);
}

/* ------------------------------------------------------------ keys */

static void test_hs_secret_empty_or_short(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(tenant_jwt_new(TENANT_ALG_HS256, "", err, sizeof err));
    assert_true(err[0] != '\0');
    assert_null(tenant_jwt_new(TENANT_ALG_HS256, NULL, err, sizeof err));
    err[0] = '\0';
    assert_null(tenant_jwt_new(TENANT_ALG_HS256, "0123456789abcdef0123456789abcde", err, sizeof err));
    assert_non_null(strstr(err, "got 31"));
    tenant_jwt *v = tenant_jwt_new(TENANT_ALG_HS256, "0123456789abcdef0123456789abcdef", err, sizeof err);
    assert_non_null(v);
    tenant_jwt_free(v);
    /* Minting refuses a short secret as well. */
    tenant_claims in;
    base_claims(&in);
    assert_null(tenant_jwt_mint(TENANT_ALG_HS256, "short", &in, err, sizeof err));
}

static void test_missing_key_file(void **state)
{
    (void)state;
    char err[256] = "";
    char path[160];
    snprintf(path, sizeof path, "%s/does-not-exist.pem", g_dir);
    assert_null(tenant_jwt_new(TENANT_ALG_RS256, path, err, sizeof err));
    assert_non_null(strstr(err, "does-not-exist.pem"));
    assert_null(tenant_jwt_new(TENANT_ALG_ES256, path, err, sizeof err));
    /* A directory is not a key either. */
    assert_null(tenant_jwt_new(TENANT_ALG_RS256, g_dir, err, sizeof err));
    /* Neither is an empty file. */
    char empty[160];
    snprintf(empty, sizeof empty, "%s/empty.pem", g_dir);
    FILE *f = fopen(empty, "w");
    assert_non_null(f);
    fclose(f);
    assert_null(tenant_jwt_new(TENANT_ALG_RS256, empty, err, sizeof err));
    unlink(empty);
}

static void test_unparseable_key_file(void **state)
{
    (void)state;
    char err[256] = "";
    char path[160];
    snprintf(path, sizeof path, "%s/junk.pem", g_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n", f);
    fclose(f);
    assert_null(tenant_jwt_new(TENANT_ALG_RS256, path, err, sizeof err));
    assert_non_null(strstr(err, "not a PEM public key"));
    unlink(path);
    /* A private key where a public one is expected is refused too. */
    assert_null(tenant_jwt_new(TENANT_ALG_RS256, g_rsa_priv, err, sizeof err));
}

static void test_rsa_key_for_es256(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(tenant_jwt_new(TENANT_ALG_ES256, g_rsa_pub, err, sizeof err));
    assert_non_null(strstr(err, "not an EC key"));
    assert_null(tenant_jwt_new(TENANT_ALG_RS256, g_ec_pub, err, sizeof err));
    assert_non_null(strstr(err, "not an RSA key"));
    assert_null(tenant_jwt_new(TENANT_ALG_ES256, g_p384_pub, err, sizeof err));
    assert_non_null(strstr(err, "P-256"));
    assert_null(tenant_jwt_new(TENANT_ALG_RS256, g_rsa1024_pub, err, sizeof err));
    assert_non_null(strstr(err, "2048"));
    /* Minting with the wrong private key type fails the same way. */
    tenant_claims in;
    base_claims(&in);
    assert_null(tenant_jwt_mint(TENANT_ALG_ES256, g_rsa_priv, &in, err, sizeof err));
    assert_null(tenant_jwt_mint(TENANT_ALG_RS256, g_ec_priv, &in, err, sizeof err));
}

static void test_mint_rejects_bad_claims(void **state)
{
    (void)state;
    char err[256];
    tenant_claims in;
    base_claims(&in);
    strcpy(in.sub, "not-a-uuid");
    assert_null(tenant_jwt_mint(TENANT_ALG_HS256, SECRET, &in, err, sizeof err));
    base_claims(&in);
    in.exp = 0;
    assert_null(tenant_jwt_mint(TENANT_ALG_HS256, SECRET, &in, err, sizeof err));
    base_claims(&in);
    in.role = (tenant_role)7;
    assert_null(tenant_jwt_mint(TENANT_ALG_HS256, SECRET, &in, err, sizeof err));
}

static void test_roles_and_algs(void **state)
{
    (void)state;
    tenant_role r;
    tenant_alg a;
    assert_int_equal(tenant_role_parse("owner", 5, &r), 0);
    assert_int_equal(r, TENANT_ROLE_OWNER);
    assert_int_equal(tenant_role_parse("client", 6, &r), 0);
    assert_int_equal(r, TENANT_ROLE_CLIENT);
    assert_int_equal(tenant_role_parse("owners", 6, &r), -1);
    assert_int_equal(tenant_role_parse("owner", 4, &r), -1);
    assert_int_equal(tenant_role_parse("OWNER", 5, &r), -1);
    assert_int_equal(tenant_role_is_staff(TENANT_ROLE_ASSISTANT), 1);
    assert_int_equal(tenant_role_is_staff(TENANT_ROLE_CLIENT), 0);
    assert_string_equal(tenant_role_name(TENANT_ROLE_ARTIST), "artist");
    assert_int_equal(tenant_alg_parse("ES256", &a), 0);
    assert_int_equal(a, TENANT_ALG_ES256);
    assert_int_equal(tenant_alg_parse("es256", &a), -1);
    assert_int_equal(tenant_alg_parse("none", &a), -1);
    assert_string_equal(tenant_alg_name(TENANT_ALG_RS256), "RS256");
}

static void test_null_arguments(void **state)
{
    (void)state;
    tenant_jwt *v = hs_verifier();
    tenant_claims c;
    assert_int_equal(tenant_jwt_verify(NULL, "a.b.c", 5, NOW, &c, NULL), TENANT_JWT_E_MALFORMED);
    assert_int_equal(tenant_jwt_verify(v, NULL, 5, NOW, &c, NULL), TENANT_JWT_E_MALFORMED);
    assert_int_equal(tenant_jwt_verify(v, "a.b.c", 5, NOW, NULL, NULL), TENANT_JWT_E_MALFORMED);
    assert_null(tenant_jwt_mint(TENANT_ALG_HS256, SECRET, NULL, NULL, 0));
    tenant_jwt_free(v);
    tenant_jwt_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hs256_valid),
        cmocka_unit_test(test_hs256_exp_within_leeway),
        cmocka_unit_test(test_uppercase_uuid_normalised),
        cmocka_unit_test(test_rs256_valid),
        cmocka_unit_test(test_es256_valid),
        cmocka_unit_test(test_mint_verify_roundtrip_name),
        cmocka_unit_test(test_name_truncated_on_utf8_boundary),
        cmocka_unit_test(test_alg_none_lower_nosig),
        cmocka_unit_test(test_alg_none_upper_nosig),
        cmocka_unit_test(test_alg_none_mixed_nosig),
        cmocka_unit_test(test_alg_none_title_nosig),
        cmocka_unit_test(test_alg_none_lower_sig),
        cmocka_unit_test(test_alg_none_upper_sig),
        cmocka_unit_test(test_alg_none_mixed_sig),
        cmocka_unit_test(test_alg_none_hmac_signed),
        cmocka_unit_test(test_alg_wrong_case_hs256),
        cmocka_unit_test(test_alg_duplicate_header_key),
        cmocka_unit_test(test_alg_confusion_rs_pubkey_as_hmac),
        cmocka_unit_test(test_es_token_to_rs_verifier),
        cmocka_unit_test(test_crit_header_rejected),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_no_exp),
        cmocka_unit_test(test_string_exp),
        cmocka_unit_test(test_float_exp),
        cmocka_unit_test(test_other_ill_typed_exp),
        cmocka_unit_test(test_future_nbf),
        cmocka_unit_test(test_string_nbf_and_iat),
        cmocka_unit_test(test_bad_signature_flip),
        cmocka_unit_test(test_bad_signature_rs256),
        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_wrong_secret),
        cmocka_unit_test(test_truncated_token),
        cmocka_unit_test(test_two_dots_only),
        cmocka_unit_test(test_garbage_base64),
        cmocka_unit_test(test_embedded_nul_and_length),
        cmocka_unit_test(test_payload_not_object),
        cmocka_unit_test(test_bad_sub_not_uuid),
        cmocka_unit_test(test_bad_tid_not_uuid),
        cmocka_unit_test(test_unknown_role),
        cmocka_unit_test(test_name_not_string),
        cmocka_unit_test(test_duplicate_claim_rejected),
        cmocka_unit_test(test_hs_secret_empty_or_short),
        cmocka_unit_test(test_missing_key_file),
        cmocka_unit_test(test_unparseable_key_file),
        cmocka_unit_test(test_rsa_key_for_es256),
        cmocka_unit_test(test_mint_rejects_bad_claims),
        cmocka_unit_test(test_roles_and_algs),
        cmocka_unit_test(test_null_arguments),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
