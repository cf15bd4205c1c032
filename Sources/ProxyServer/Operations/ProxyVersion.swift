import BuildStamp

/// The proxy's version: `--version`, the start log. Kept equal to the top entry of
/// deploy/debian/changelog (a test checks), which names the package built from it.
public enum ProxyVersion {
    public static let string = "0.1.0"

    /// The commit the binary was built from ("unknown" unless the build was told: the package
    /// and the install script tell it).
    public static let commit = String(cString: pixxel_proxy_build_commit())
}
