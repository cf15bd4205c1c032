// Headless Chromium driven through the DevTools protocol over a pipe (--remote-debugging-pipe:
// commands on the child's fd 3, answers and events on its fd 4, each message ended by a NUL).
// A pipe rather than --remote-debugging-port: no WebSocket client is needed (node 20 has one
// only behind --experimental-websocket, and npm is out of reach), and no debugging port is
// opened at all, so nothing but the page's own requests touches the network.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export class Chromium {
  /** Starts the browser; `executable` is Debian's `chromium` unless told otherwise. */
  static async launch({ executable = 'chromium', width = 1280, height = 1000 } = {}) {
    const profile = mkdtempSync(join(tmpdir(), 'pixxel-chromium-'));
    const child = spawn(executable, [
      '--headless=new',
      // Root (CI, this machine) has no user namespace sandbox to drop into.
      '--no-sandbox',
      '--remote-debugging-pipe',
      `--user-data-dir=${profile}`,
      `--window-size=${width},${height}`,
      '--no-first-run', '--no-default-browser-check', '--disable-extensions', '--disable-sync',
      '--disable-background-networking', '--disable-component-update', '--disable-default-apps',
      '--disable-gpu', '--disable-dev-shm-usage', '--hide-scrollbars', '--mute-audio',
      // Loopback only: every host name but 127.0.0.1 fails to resolve, so a stray fetch by the
      // browser itself (updates, safe browsing) cannot leave the machine.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      'about:blank',
    ], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
    const browser = new Chromium(child, profile);
    await browser.started;
    return browser;
  }

  constructor(child, profile) {
    this.child = child;
    this.profile = profile;
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = [];
    this.stderr = '';
    let buffered = '';
    child.stderr.on('data', chunk => { this.stderr = (this.stderr + chunk).slice(-8000); });
    child.stdio[4].on('data', chunk => {
      buffered += chunk.toString('utf8');
      let end;
      while ((end = buffered.indexOf('\0')) >= 0) {
        this.dispatch(JSON.parse(buffered.slice(0, end)));
        buffered = buffered.slice(end + 1);
      }
    });
    this.started = new Promise((resolve, reject) => {
      child.once('error', error => reject(new Error(`cannot start ${child.spawnfile}: ${error.message}`)));
      child.once('spawn', resolve);
    });
    child.once('exit', (code, signal) => {
      for (const { reject } of this.pending.values()) {
        reject(new Error(`chromium exited (${signal ?? code}); its last words:\n${this.stderr}`));
      }
      this.pending.clear();
    });
  }

  dispatch(message) {
    if (message.id !== undefined) {
      const call = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (!call) return;
      if (message.error) call.reject(new Error(`${call.method}: ${message.error.message}`));
      else call.resolve(message.result);
      return;
    }
    for (const listener of this.listeners) listener(message);
  }

  /** One DevTools command; `sessionId` addresses a page attached with `openPage`. */
  send(method, params = {}, sessionId) {
    const id = this.nextId++;
    const message = { id, method, params };
    if (sessionId) message.sessionId = sessionId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.child.stdio[3].write(JSON.stringify(message) + '\0');
    });
  }

  /** Calls `listener` with every event (method, params, sessionId) until the browser closes. */
  onEvent(listener) {
    this.listeners.push(listener);
  }

  /** Resolves with the first event of `method` for which `matches(params)` holds. */
  waitForEvent(method, sessionId, matches = () => true) {
    return new Promise(resolve => {
      const listener = message => {
        if (message.method === method && message.sessionId === sessionId && matches(message.params)) {
          this.listeners.splice(this.listeners.indexOf(listener), 1);
          resolve(message.params);
        }
      };
      this.listeners.push(listener);
    });
  }

  /** A new tab, attached: returns a `Page` whose commands go to it. */
  async openPage() {
    const { targetId } = await this.send('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.send('Target.attachToTarget', { targetId, flatten: true });
    const page = new Page(this, sessionId);
    await page.send('Page.enable');
    await page.send('Runtime.enable');
    await page.send('Network.enable');
    return page;
  }

  async close() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise(resolve => this.child.once('exit', resolve));
      this.send('Browser.close').catch(() => {});
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.profile, { recursive: true, force: true });
  }
}

/** One tab: navigation, script evaluation, and input as a person gives it (mouse and keys). */
export class Page {
  constructor(browser, sessionId) {
    this.browser = browser;
    this.sessionId = sessionId;
  }

  send(method, params) {
    return this.browser.send(method, params, this.sessionId);
  }

  async navigate(url) {
    const loaded = this.browser.waitForEvent('Page.loadEventFired', this.sessionId);
    const { errorText } = await this.send('Page.navigate', { url });
    if (errorText) throw new Error(`cannot load ${url}: ${errorText}`);
    await loaded;
  }

  async reload() {
    const loaded = this.browser.waitForEvent('Page.loadEventFired', this.sessionId);
    await this.send('Page.reload');
    await loaded;
  }

  /** The value of a JavaScript expression in the page (awaited when it is a promise). */
  async evaluate(expression) {
    const { result, exceptionDetails } = await this.send('Runtime.evaluate', {
      expression, returnByValue: true, awaitPromise: true,
    });
    if (exceptionDetails) throw new Error(`in the page: ${exceptionDetails.exception?.description ?? exceptionDetails.text}`);
    return result.value;
  }

  /** Clicks the middle of the element `selector` names, with a press and a release. */
  async click(selector) {
    const box = await this.evaluate(`(() => { const r = document.querySelector(${JSON.stringify(selector)}).getBoundingClientRect();
      return { x: r.x + r.width / 2, y: r.y + r.height / 2, shown: r.width > 0 && r.height > 0 }; })()`);
    if (!box.shown) throw new Error(`${selector} is not shown, so a person could not click it`);
    for (const type of ['mouseMoved', 'mousePressed', 'mouseReleased']) {
      await this.send('Input.dispatchMouseEvent', { type, x: box.x, y: box.y, button: 'left', clickCount: 1 });
    }
  }

  /** Types `text` into whatever has the focus, one key at a time. */
  async type(text) {
    for (const key of text) {
      await this.send('Input.dispatchKeyEvent', { type: 'keyDown', key, text: key });
      await this.send('Input.dispatchKeyEvent', { type: 'keyUp', key });
    }
  }

  /** A PNG of the whole page. */
  async screenshot() {
    const { data } = await this.send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true });
    return Buffer.from(data, 'base64');
  }
}
