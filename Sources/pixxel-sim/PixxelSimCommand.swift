import ArgumentParser
import Foundation
import PixxelSim

@main
struct PixxelSimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pixxel-sim",
        abstract: "A simulator of the Pixxel Jobs API: jobs move pending -> running -> completed/failed over time.",
        discussion: """
        Fault knobs can also be changed at run time:
          curl -X POST -H 'Authorization: KEY' 'http://127.0.0.1:PORT/_sim/faults?error_rate=0.2&latency_ms=300'
        Other control routes: GET /_sim/workflows, GET /_sim/stats, POST /_sim/clock?advance=SECONDS.
        """)

    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port to bind (0 picks a free one).") var port: UInt16 = 8788
    @Option(name: .customLong("api-key"), help: "API key clients must send (env PIXXEL_SIM_API_KEY; default sim-key).") var apiKey: String?
    @Option(help: "Workflows to seed.") var workflows = 3
    @Option(help: "Jobs per seeded workflow.") var jobs = 50
    @Option(name: .customLong("pending-seconds"), help: "How long a new job stays pending.") var pendingSeconds = 5.0
    @Option(name: .customLong("running-seconds"), help: "How long a job runs.") var runningSeconds = 30.0
    @Option(name: .customLong("progress-step-seconds"), help: "How often a running job's updated_at moves on.") var progressStepSeconds = 5.0
    @Option(help: "Seed of the generated ids and data.") var seed: UInt64 = 42
    @Option(name: .customLong("latency-ms"), help: "Delay before every answer.") var latencyMs = 0
    @Option(name: .customLong("error-rate"), help: "Share of answers that are 500 (0-1).") var errorRate = 0.0
    @Option(name: .customLong("rate-429"), help: "Share of answers that are 429 (0-1).") var rate429 = 0.0
    @Option(name: .customLong("retry-after"), help: "Retry-After seconds on 429.") var retryAfter = 1
    @Option(name: .customLong("hang-rate"), help: "Share of requests never answered (0-1).") var hangRate = 0.0
    @Option(name: .customLong("garbage-rate"), help: "Share of answers with a broken JSON body (0-1).") var garbageRate = 0.0
    @Option(name: .customLong("download-bytes"), help: "Size of a job, task or asset download (a request may ask ?size=N).") var downloadBytes = 8 << 20
    @Option(name: .customLong("asset-ready-seconds"), help: "How long an asset download request stays pending.") var assetReadySeconds = 3.0
    @Option(name: .customLong("break-after-bytes"), help: "Break every download's connection after this many body bytes.") var breakAfterBytes: Int?
    @Option(name: .customLong("tls-cert"), help: "PEM certificate chain: serve HTTPS.") var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "PEM private key for --tls-cert.") var tlsKey: String?

    func validate() throws {
        for (name, rate) in [("error-rate", errorRate), ("rate-429", rate429), ("hang-rate", hangRate), ("garbage-rate", garbageRate)]
        where !(0...1).contains(rate) {
            throw ValidationError("--\(name) must be between 0 and 1")
        }
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
    }

    func run() throws {
        var options = SimOptions()
        options.host = host
        options.port = port
        options.apiKey = apiKey ?? ProcessInfo.processInfo.environment["PIXXEL_SIM_API_KEY"] ?? "sim-key"
        options.workflows = workflows
        options.jobsPerWorkflow = jobs
        options.pendingSeconds = pendingSeconds
        options.runningSeconds = runningSeconds
        options.progressStepSeconds = progressStepSeconds
        options.seed = seed
        options.faults.latencyMilliseconds = latencyMs
        options.faults.errorRate = errorRate
        options.faults.rateLimitRate = rate429
        options.faults.retryAfterSeconds = retryAfter
        options.faults.hangRate = hangRate
        options.faults.garbageRate = garbageRate
        options.faults.breakAfterBytes = breakAfterBytes
        options.downloadBytes = max(0, downloadBytes)
        options.assetReadySeconds = assetReadySeconds
        options.tlsCertificateFile = tlsCert
        options.tlsKeyFile = tlsKey
        let sim = SimServer(options: options)
        let bound: UInt16
        do { bound = try sim.start() } catch {
            FileHandle.standardError.write(Data("pixxel-sim: \(error)\n".utf8))
            throw ExitCode(1)
        }
        let scheme = tlsCert == nil ? "http" : "https"
        FileHandle.standardError.write(Data("pixxel-sim: listening on \(scheme)://\(host):\(bound)\n".utf8))
        for id in sim.workflowIDs { FileHandle.standardError.write(Data("pixxel-sim: workflow \(id)\n".utf8)) }
        // Stop cleanly on SIGTERM/SIGINT; the loop thread does the serving.
        let stop = DispatchSemaphore(value: 0)
        var sources: [DispatchSourceSignal] = []
        for signalNumber in [SIGTERM, SIGINT] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber)
            source.setEventHandler { stop.signal() }
            source.resume()
            sources.append(source)
        }
        stop.wait()
        sim.stop()
    }
}
