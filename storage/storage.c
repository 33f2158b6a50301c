/*
 * The backend registry and the storage layer's error texts: the only place
 * that knows which backends exist. Backends add one row to the table below;
 * nothing here holds state.
 */
#include "storage/storage.h"

#include <stddef.h>
#include <string.h>

static const struct store_ops *const backends[] = {
    &store_mem_ops,
#ifdef STASHD_HAVE_LMDB
    &store_lmdb_ops,
#endif
#ifdef STASHD_HAVE_SQLITE
    &store_sqlite_ops,
#endif
};

const struct store_ops *
store_find(const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
        if (strcmp(backends[i]->name, name) == 0) {
            return backends[i];
        }
    }
    return NULL;
}

const char *
store_strerror(store_rc_e rc)
{
    switch (rc) {
    case STORE_OK:
        return "success";
    case STORE_ENOENT:
        return "not found";
    case STORE_EEXISTS:
        return "exists (cas mismatch)";
    case STORE_NOT_STORED:
        return "not stored";
    case STORE_E2BIG:
        return "item too large";
    case STORE_EDELTA:
        return "value is not a number";
    case STORE_ENOMEM:
        return "out of memory";
    case STORE_EIO:
        return "i/o error";
    case STORE_ECORRUPT:
        return "data corrupt or foreign";
    case STORE_ELOCKED:
        return "data directory locked by another process";
    case STORE_EINVAL:
        return "invalid configuration";
    }
    return "unknown storage error";
}
