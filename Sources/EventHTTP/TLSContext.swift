import CLibevent

/// OpenSSL's last queued error as text, and clears the queue.
func openSSLErrorText() -> String {
    var messages: [String] = []
    while case let code = ERR_get_error(), code != 0 {
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        messages.append(buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
    }
    return messages.isEmpty ? "unknown TLS error" : messages.joined(separator: "; ")
}

/// The client side of TLS to the upstream: TLS 1.2 or newer, peer verified against the system
/// trust store plus an optional extra CA bundle. Host names are checked per connection.
public final class TLSClientContext {
    let context: OpaquePointer

    public init(caFile: String?) throws {
        guard let context = SSL_CTX_new(TLS_client_method()) else {
            throw EventHTTPError("TLS: cannot create a client context: \(openSSLErrorText())")
        }
        self.context = context
        _ = pp_ssl_ctx_require_tls12(context)
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
        if SSL_CTX_set_default_verify_paths(context) != 1 {
            throw EventHTTPError("TLS: cannot load the system trust store: \(openSSLErrorText())")
        }
        if let caFile, SSL_CTX_load_verify_locations(context, caFile, nil) != 1 {
            throw EventHTTPError("TLS: cannot load CA file \(caFile): \(openSSLErrorText())")
        }
    }

    deinit { SSL_CTX_free(context) }
}

/// The server side of TLS, for the simulator (and so for the proxy's TLS tests).
public final class TLSServerContext {
    let context: OpaquePointer

    public init(certificateChainFile: String, privateKeyFile: String) throws {
        guard let context = SSL_CTX_new(TLS_server_method()) else {
            throw EventHTTPError("TLS: cannot create a server context: \(openSSLErrorText())")
        }
        self.context = context
        _ = pp_ssl_ctx_require_tls12(context)
        if SSL_CTX_use_certificate_chain_file(context, certificateChainFile) != 1 {
            throw EventHTTPError("TLS: cannot load certificate \(certificateChainFile): \(openSSLErrorText())")
        }
        if SSL_CTX_use_PrivateKey_file(context, privateKeyFile, SSL_FILETYPE_PEM) != 1 {
            throw EventHTTPError("TLS: cannot load key \(privateKeyFile): \(openSSLErrorText())")
        }
    }

    deinit { SSL_CTX_free(context) }
}
