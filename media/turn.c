/*
 * turn.c -- TURN REST API credentials (media.h): the username carries its
 * own expiry, the password is an HMAC-SHA1 of the username under the secret
 * shared with the TURN server (coturn: use-auth-secret, static-auth-secret).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "media/media.h"

int media_turn_credentials(const char *secret, const char *member, int64_t now_s,
                           unsigned ttl_s, char *user, size_t ulen, char *pass, size_t plen)
{
    if (secret == NULL || secret[0] == '\0' || member == NULL || member[0] == '\0' ||
        ttl_s == 0 || now_s < 0 || user == NULL || pass == NULL)
        return MEDIA_E_INVAL;
    int n = snprintf(user, ulen, "%" PRId64 ":%s", now_s + (int64_t)ttl_s, member);
    if (n < 0 || (size_t)n >= ulen)
        return MEDIA_E_TOOLONG;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha1(), secret, (int)strlen(secret), (const unsigned char *)user, (size_t)n, mac,
             &mac_len) == NULL)
        return MEDIA_E_INVAL;
    /* base64 of 20 bytes = 28 characters + NUL */
    if (plen < 4 * ((mac_len + 2) / 3) + 1)
        return MEDIA_E_TOOLONG;
    EVP_EncodeBlock((unsigned char *)pass, mac, (int)mac_len);
    return MEDIA_OK;
}
