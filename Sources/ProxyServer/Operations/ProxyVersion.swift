/// The proxy's version: `--version`, the start log. Kept equal to the top entry of
/// deploy/debian/changelog (a test checks), which names the package built from it.
public enum ProxyVersion {
    public static let string = "0.1.0"
}
