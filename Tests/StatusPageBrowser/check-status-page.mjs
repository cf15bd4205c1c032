// Opens a running proxy's status page (GET /admin/) in headless Chromium as a person would:
// the page asks for a token, a wrong one is refused, the admin token is typed in, and the
// figures the page then shows are checked against /admin/stats until they agree (or the
// deadline passes). Then the tab is reloaded (the token must be kept, not asked again), and a
// screenshot is saved. Prints a JSON report on stdout; exits 0 when everything agreed.
//
//   node check-status-page.mjs --url http://127.0.0.1:PORT --token-file F --check-token-file F
//        [--wrong-token-file F] [--screenshot PATH] [--timeout SECONDS] [--chromium PATH]
//        [--polling-clients NAME,NAME]
//
// --token-file: the token typed into the page. --check-token-file: another admin token, with
// which this script reads /admin/stats itself (a client of its own, so the page's polling and
// the checks' reads are told apart in the clients table).
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { Chromium } from './chromium.mjs';
import { figureMismatches } from './figures.mjs';

const { values: options } = parseArgs({
  options: {
    url: { type: 'string' }, 'token-file': { type: 'string' }, 'check-token-file': { type: 'string' },
    'wrong-token-file': { type: 'string' }, screenshot: { type: 'string' }, timeout: { type: 'string', default: '90' },
    chromium: { type: 'string', default: 'chromium' },
    // Clients whose counts grow while the check runs (the page's polling, the check's reads).
    'polling-clients': { type: 'string', default: 'operator,checker' },
    // The verdict the page must lead with (its first word, e.g. DEGRADED), and a phrase of its reasons.
    'expect-verdict': { type: 'string' }, 'expect-reason': { type: 'string' },
    // After the checks: stop the proxy (this pid, SIGKILL) and check the outage view, with a screenshot.
    'outage-pid': { type: 'string' }, 'outage-screenshot': { type: 'string' },
  },
});
for (const required of ['url', 'token-file', 'check-token-file']) {
  if (!options[required]) { console.error(`--${required} is required`); process.exit(64); }
}
const read = file => readFileSync(file, 'utf8').trim();
const token = read(options['token-file']);
const checkToken = read(options['check-token-file']);
const pageURL = options.url.replace(/\/$/, '') + '/admin/';
const deadline = Date.now() + Number(options.timeout) * 1000;

const report = { page: pageURL, steps: [] };
const step = text => report.steps.push(text);

/** What the page shows, read from its elements' text, as a person would read it. */
const readFigures = `(() => {
  const $ = id => document.getElementById(id);
  const rows = id => [...$(id).rows].map(row => [...row.cells].map(cell => cell.textContent));
  const text = {};
  for (const id of ['err', 'uptime', 'rps', 'ratio', 'ratio1m', 'ups', 'saved', 'tokens', 'queued', 'pause', 'refused',
                    'errs1m', 'streams', 'watchers', 'mem', 'disk', 'health']) text[id] = $(id).textContent;
  return { loginShown: !$('login').hidden, pageShown: !$('page').hidden, text,
           clients: rows('t-clients'), workflows: rows('t-workflows'), errors: rows('t-errors') };
})()`;

async function stats() {
  const answer = await fetch(options.url.replace(/\/$/, '') + '/admin/stats', { headers: { Authorization: `Bearer ${checkToken}` } });
  if (!answer.ok) throw new Error(`/admin/stats answered ${answer.status} to the check's own token`);
  return answer.json();
}

/** Polls `condition` (every 100 ms) until it returns a truthy value or the deadline passes. */
async function until(what, condition) {
  let last;
  while (Date.now() < deadline) {
    last = await condition();
    if (last && !last.failed) return last;
    await new Promise(resolve => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting until ${what}${last?.failed ? ': ' + last.failed.join('; ') : ''}`);
}

/** Polls until every figure the page shows agrees with /admin/stats read at the same time. */
async function figuresAgree(page, admins) {
  return until('the page shows what /admin/stats says', async () => {
    const figures = await page.evaluate(readFigures);
    const current = await stats();
    const failed = figureMismatches(figures, current, { admins });
    return failed.length ? { failed } : { figures, stats: current };
  });
}

async function signIn(page, secret) {
  await page.click('#token');
  await page.type(secret);
  await page.click('#login button');
}

let browser;
const watchdog = setTimeout(async () => {
  console.error('check-status-page: the whole check ran past its --timeout');
  await browser?.close();
  process.exit(2);
}, Number(options.timeout) * 1000 + 10_000);

try {
  browser = await Chromium.launch({ executable: options.chromium });
  const page = await browser.openPage();
  const requested = [];
  browser.onEvent(({ method, params }) => { if (method === 'Network.requestWillBeSent') requested.push(params.request.url); });

  await page.navigate(pageURL);
  await until('the page asks for a token', async () => (await page.evaluate(readFigures)).loginShown);
  step('asked for a token on first load');

  if (options['wrong-token-file']) {
    await signIn(page, read(options['wrong-token-file']));
    await until('a token without the admin scope is refused', async () => {
      const figures = await page.evaluate(readFigures);
      return figures.loginShown && figures.text.err === 'that token is not an admin token';
    });
    step('refused a token without the admin scope, and asked again');
  }

  await signIn(page, token);
  const admins = options['polling-clients'].split(',');
  let agreed = await figuresAgree(page, admins);
  step('after the admin token was typed in, every figure agreed with /admin/stats');

  const kept = await page.evaluate(`sessionStorage.getItem('pixxel-proxy-admin-token')`);
  if (kept !== token) throw new Error('the token is not kept in the tab\'s sessionStorage');
  const leaks = requested.filter(url => url.includes(token) || url.includes(encodeURIComponent(token)));
  if (leaks.length) throw new Error(`the token went into a URL: ${leaks.join(', ')}`);
  const cookies = await page.evaluate('document.cookie');
  if (cookies) throw new Error(`the page set cookies: ${cookies}`);
  step(`the token is kept in sessionStorage, in no URL (${requested.length} requests) and no cookie`);

  await page.reload();
  const afterReload = await page.evaluate(readFigures);
  if (afterReload.loginShown) throw new Error('after a reload the page asked for the token again');
  agreed = await figuresAgree(page, admins);
  step('after a reload the page kept the token and agreed again');

  if (options.screenshot) {
    mkdirSync(dirname(options.screenshot), { recursive: true });
    writeFileSync(options.screenshot, await page.screenshot());
    report.screenshot = options.screenshot;
  }
  report.figures = agreed.figures;
  report.verdict = agreed.figures.text.health;
  if (options['expect-verdict'] && !report.verdict.startsWith(options['expect-verdict'])) {
    throw new Error(`the verdict reads "${report.verdict}", not ${options['expect-verdict']}`);
  }
  if (options['expect-reason'] && !report.verdict.includes(options['expect-reason'])) {
    throw new Error(`the verdict "${report.verdict}" does not say "${options['expect-reason']}"`);
  }
  if (options['outage-pid']) {
    // Stopped, not killed: a hung proxy (a stuck loop) accepts and never answers, which a
    // fetch without a timeout waited on for ever (found by review); then it is killed.
    process.kill(Number(options['outage-pid']), 'SIGSTOP');
    await until('the page says the proxy stopped answering, and since when', async () => {
      const shown = await page.evaluate(`({ err: document.getElementById('err').textContent,
                                           stale: document.body.classList.contains('stale') })`);
      return shown.stale && /^the proxy does not answer since \d\d:\d\d:\d\d UTC/.test(shown.err);
    });
    step('with the proxy hung, the page greyed its figures and said since when');
    if (options['outage-screenshot']) {
      mkdirSync(dirname(options['outage-screenshot']), { recursive: true });
      writeFileSync(options['outage-screenshot'], await page.screenshot());
      report.outageScreenshot = options['outage-screenshot'];
    }
    process.kill(Number(options['outage-pid']), 'SIGKILL');
  }
  report.ok = true;
} catch (error) {
  report.ok = false;
  report.error = error.message;
} finally {
  clearTimeout(watchdog);
  await browser?.close();
}
console.log(JSON.stringify(report, null, 2));
process.exit(report.ok ? 0 : 1);
