#include "BuildStamp.h"

// Package.swift defines PIXXEL_BUILD_COMMIT (hex digits only) for this one target, so a new
// commit recompiles this file alone; a Swift target cannot be given a value at build time.
#define PIXXEL_STRING(x) #x
#define PIXXEL_EXPANDED_STRING(x) PIXXEL_STRING(x)

const char *pixxel_proxy_build_commit(void) {
#ifdef PIXXEL_BUILD_COMMIT
    return PIXXEL_EXPANDED_STRING(PIXXEL_BUILD_COMMIT);
#else
    return "unknown";
#endif
}
