/*
 * main.c -- inkwire's entry point: --help, --version, configuration from
 * the environment, then srv_main() (one worker, or several supervised ones).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"

static const char *env_get(const char *name, void *ud)
{
    (void)ud;
    return getenv(name);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            srv_config_usage(stdout, argv[0]);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("inkwire %s\n", INKWIRE_VERSION);
            return 0;
        }
        fprintf(stderr, "inkwire: unknown argument '%s' (configuration comes from the environment; see --help)\n",
                argv[i]);
        return 2;
    }
    srv_config cfg;
    char err[512];
    if (srv_config_load(&cfg, env_get, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "inkwire: %s\n", err);
        return 1;
    }
    int rc = srv_main(&cfg);
    srv_config_free(&cfg);
    return rc;
}
