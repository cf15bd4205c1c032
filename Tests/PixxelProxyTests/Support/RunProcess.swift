import Foundation

/// Runs a program to completion; returns its exit status and its stdout and stderr together.
func runProcess(_ path: String, _ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String) {
    let child = try ChildProcess(path, arguments, environment: environment ?? ProcessInfo.processInfo.environment, stdout: .pipe, stderr: nil)
    let output = String(decoding: child.standardOutput!.readDataToEndOfFile(), as: UTF8.self)
    child.waitUntilExit()
    return (child.terminationStatus, output)
}
