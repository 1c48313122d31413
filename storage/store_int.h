/*
 * store_int.h -- storage internals shared between the storage sources and the
 * build-generated migrations.c (tools/embed-sql.sh). Not a public API.
 */
#ifndef INKWIRE_STORE_INT_H
#define INKWIRE_STORE_INT_H

/* One embedded migration: name = file basename ("001_core.sql"), sql = the
 * file's exact text. Applied in array order (the build sorts by name). */
struct store_migration {
    const char *name;
    const char *sql;
};

extern const struct store_migration store__migrations[];
extern const int store__n_migrations;

#endif /* INKWIRE_STORE_INT_H */
