import Foundation
import PixxelSim
import Testing

/// Attack 15: the status page in headless Chromium (the same DevTools driver as
/// StatusPageBrowserTests), for what only a browser shows.
@Suite struct Attack15BrowserTests {
    /// A token pasted with a character a header cannot carry (a zero-width space, which rich
    /// text editors and chat clients insert; `trim()` keeps it) makes `fetch` throw before any
    /// request is sent. The page takes that for "the proxy does not answer", keeps the token in
    /// sessionStorage and never asks again: every reload repeats it, and only closing the tab
    /// gets the form back, while the proxy answers fine.
    @Test(.enabled(if: StatusPageBrowserTests.chromium != nil && StatusPageBrowserTests.node != nil, "needs chromium and node"))
    func aTokenFetchCannotSendIsRefusedAndAskedAgain() async throws {
        let (sim, simPort) = try startSimulator()
        defer { sim.stop() }
        let proxy = try ProxyHarness(upstreamURL: "http://127.0.0.1:\(simPort)")
        let directory = TemporaryDirectory()
        let driver = ShippedConfigTests.repository + "/Tests/StatusPageBrowser/chromium.mjs"
        let script = directory.file("pasted-token.mjs", """
        import { Chromium } from \(String(reflecting: URL(fileURLWithPath: driver).absoluteString));
        const deadline = Date.now() + 20000;
        const browser = await Chromium.launch({ executable: \(String(reflecting: StatusPageBrowserTests.chromium!)) });
        let report = { ok: false };
        try {
          const page = await browser.openPage();
          await page.navigate('http://127.0.0.1:\(proxy.port)/admin/');
          const state = () => page.evaluate(`({ login: !document.getElementById('login').hidden,
            err: document.getElementById('err').textContent, kept: sessionStorage.getItem('pixxel-proxy-admin-token') })`);
          while (!(await state()).login && Date.now() < deadline) await new Promise(r => setTimeout(r, 100));
          // The admin token as pasted from a chat message: a zero-width space at its end.
          await page.evaluate(`document.getElementById('token').value = \(String(reflecting: proxy.adminToken)) + '\\u200b'`);
          await page.click('#login button');
          // Given time to poll a few times: the form must come back, with the token dropped.
          let last;
          while (Date.now() < deadline) {
            last = await state();
            if (last.login && last.kept === null) { report = { ok: true, last }; break; }
            await new Promise(r => setTimeout(r, 100));
          }
          if (!report.ok) report = { ok: false, last };
          await page.reload();
          report.afterReload = await state();
        } catch (error) { report = { ok: false, error: error.message }; }
        await browser.close();
        console.log(JSON.stringify(report));
        process.exit(report.ok ? 0 : 1);
        """)
        let run = try runProcess(try #require(StatusPageBrowserTests.node), [script])
        #expect(run.status == 0, "the page stays stuck: \(run.output)")
        await proxy.stop()
    }
}
