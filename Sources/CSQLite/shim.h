#ifndef RINGCACHE_CSQLITE_SHIM_H
#define RINGCACHE_CSQLITE_SHIM_H
#include <sqlite3.h>
#endif
