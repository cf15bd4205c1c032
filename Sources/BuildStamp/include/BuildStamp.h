#ifndef PIXXEL_BUILD_STAMP_H
#define PIXXEL_BUILD_STAMP_H

/// The commit this binary was built from, as the build was told it (`PIXXEL_BUILD_COMMIT` in
/// the environment of `swift build`: the package and install scripts set it), or "unknown".
const char *pixxel_proxy_build_commit(void);

#endif
