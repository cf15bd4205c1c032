// SQLite for the disk tier. SQLITE_TRANSIENT is a macro cast Swift cannot import.
#ifndef PIXXEL_CSQLITE_SHIM_H
#define PIXXEL_CSQLITE_SHIM_H
#include <sys/types.h>
#include <sqlite3.h>

static inline int pp_sqlite_bind_text(sqlite3_stmt *statement, int index, const char *text) {
    return sqlite3_bind_text(statement, index, text, -1, SQLITE_TRANSIENT);
}

static inline int pp_sqlite_bind_blob(sqlite3_stmt *statement, int index, const void *data, int length) {
    return sqlite3_bind_blob(statement, index, length > 0 ? data : "", length, SQLITE_TRANSIENT);
}
#endif
