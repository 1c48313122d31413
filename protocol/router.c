/*
 * router.c -- op + path -> route (PROTOCOL.md §5).
 *
 * Patterns are '/'-separated segments; a segment ":name" captures exactly one
 * non-empty path segment, any other segment must match byte for byte. A linear
 * scan: the table is a few dozen routes and the comparison stops at the first
 * differing segment, so a trie would buy nothing measurable.
 */
#include "protocol/protocol.h"

#include <string.h>

/*
 * route__match_path -- 1 when path[0..path_len) matches the NUL-terminated
 * pattern segment for segment, filling *pp with the captures; 0 otherwise
 * (*pp is then unspecified). Both must start with '/'. An empty path segment
 * (trailing '/', "//", or the bare "/") never matches, nor does a pattern
 * with more than PROTO_MAX_PARAMS captures (a table bug, refused safely).
 */
static int route__match_path(const char *pattern, const char *path, size_t path_len,
                             proto_params *pp)
{
    size_t pi = 0, si = 0, plen;

    pp->n = 0;
    if (pattern == NULL || pattern[0] != '/' || path_len == 0 || path[0] != '/')
        return 0;
    plen = strlen(pattern);

    /* Loop invariant: pattern[pi] == '/' and path[si] == '/'. */
    while (pi < plen && si < path_len) {
        size_t pstart = ++pi, sstart = ++si, pn, sn;
        const char *seg;

        while (pi < plen && pattern[pi] != '/')
            pi++;
        while (si < path_len && path[si] != '/')
            si++;
        pn = pi - pstart;
        sn = si - sstart;
        seg = path + sstart;

        if (sn == 0)
            return 0; /* empty path segment */
        if (pn > 0 && pattern[pstart] == ':') {
            if (pp->n >= PROTO_MAX_PARAMS)
                return 0;
            pp->v[pp->n].s = seg;
            pp->v[pp->n].len = sn;
            pp->n++;
        } else if (pn != sn || memcmp(pattern + pstart, seg, sn) != 0) {
            return 0;
        }
    }
    /* Both must be used up together: no extra segment on either side. */
    return pi == plen && si == path_len;
}

/*
 * proto_route_match -- see protocol.h. On a miss params->n is 0. A NULL
 * params is allowed when the caller only wants the index.
 */
int proto_route_match(const proto_route *table, size_t n, proto_op op,
                      const char *path, size_t path_len, proto_params *params)
{
    proto_params tmp;
    bool path_known = false;

    if (params)
        params->n = 0;
    if (table == NULL || path == NULL)
        return PROTO_ROUTE_NOT_FOUND;

    for (size_t i = 0; i < n; i++) {
        if (!route__match_path(table[i].pattern, path, path_len, &tmp))
            continue;
        if (table[i].op != op) {
            path_known = true;
            continue;
        }
        if (params)
            *params = tmp;
        return (int)i;
    }
    return path_known ? PROTO_ROUTE_BAD_METHOD : PROTO_ROUTE_NOT_FOUND;
}
