// What the status page shows against what /admin/stats says, figure by figure. The page's
// text is parsed back into numbers here rather than formatted the page's way, so a wrong
// formatter on the page cannot agree with a copy of itself.

/** "12.3k" -> 12300, "7" -> 7, "268.4M" -> 268400000; NaN for anything else. */
export function shownNumber(text) {
  const match = /^(-?\d+(?:\.\d+)?)([kMG]?)$/.exec(text.trim());
  if (!match) return NaN;
  return Number(match[1]) * { '': 1, k: 1e3, M: 1e6, G: 1e9 }[match[2]];
}

/** Whether `shown` is `actual` as the page rounds it: one decimal of its unit (k, M, G). */
export function agrees(shown, actual) {
  const unit = Math.abs(actual) >= 1e9 ? 1e9 : Math.abs(actual) >= 1e6 ? 1e6 : Math.abs(actual) >= 1e3 ? 1e3 : 1;
  return Number.isFinite(shown) && Math.abs(shown - actual) <= 0.05 * unit + 1e-9;
}

const lastMinute = values => values.slice(-60).reduce((sum, value) => sum + value, 0);

/**
 * Every way the page's figures differ from `stats`, in words (empty when they agree).
 * `admins`: clients whose request counts change while the check runs; their rows must be
 * there, their counts are not compared. Per-second averages move with the clock and are only
 * checked to be numbers.
 */
export function figureMismatches(figures, stats, { admins = [] } = {}) {
  const failed = [];
  const text = figures.text;
  const expect = (ok, what) => { if (!ok) failed.push(what); };

  expect(figures.pageShown && !figures.loginShown, 'the figures are not shown (the page still asks for a token)');
  expect(text.err === '', `the page shows an error: "${text.err}"`);
  const health = stats.health || {};
  expect(typeof health.state === 'string' && text.health.startsWith(health.state.toUpperCase()),
         `the verdict reads "${text.health}", stats say ${JSON.stringify(health)}`);
  expect(/^version \S+, up \d+ (s|min|h \d+ min|d \d+ h), updated \d\d:\d\d:\d\d UTC/.test(text.uptime), `uptime reads "${text.uptime}"`);
  expect(text.uptime.startsWith(`version ${stats.version},`), `the page shows version "${text.uptime}", stats say ${stats.version}`);
  for (const id of ['rps', 'ups']) expect(Number.isFinite(shownNumber(text[id])), `${id} reads "${text[id]}", not a number`);

  const ratio = /^(\d+(?:\.\d)?)%$/.exec(text.ratio);
  expect(ratio && agrees(Number(ratio[1]), 100 * stats.hit_ratio), `hit ratio reads "${text.ratio}", stats say ${stats.hit_ratio}`);
  expect(agrees(shownNumber(text.saved), stats.upstream_calls_saved), `calls saved read "${text.saved}", stats say ${stats.upstream_calls_saved}`);

  const budget = stats.budget;
  if (budget.requests_per_second > 0) {
    const tokens = /^(\S+) of (\S+)$/.exec(text.tokens);
    expect(tokens && agrees(shownNumber(tokens[1]), budget.tokens) && agrees(shownNumber(tokens[2]), budget.burst),
      `tokens read "${text.tokens}", stats say ${budget.tokens} of ${budget.burst}`);
  } else {
    expect(text.tokens === 'unlimited', `tokens read "${text.tokens}" with no budget`);
  }
  expect(Number(text.queued) === budget.queued, `waiting reads "${text.queued}", stats say ${budget.queued}`);
  expect(budget.pause_remaining_seconds > 0 ? /Retry-After/.test(text.pause) : text.pause === 'none',
    `pause reads "${text.pause}", stats say ${budget.pause_remaining_seconds} s`);
  expect(Number(text.refused) === budget.refused, `refused reads "${text.refused}", stats say ${budget.refused}`);
  const errors = lastMinute(stats.series.upstream_errors);
  expect(Number(text.errs1m) === errors, `upstream errors in the last minute read "${text.errs1m}", stats say ${errors}`);
  expect(text.streams === `${stats.streams.running} running, ${stats.streams.queued} waiting`, `streams read "${text.streams}"`);
  expect(text.watchers === `${stats.change_streams.open} change streams, ${stats.held_requests} held waits`, `watchers read "${text.watchers}"`);

  for (const tier of ['memory', 'disk']) {
    const id = tier === 'memory' ? 'mem' : 'disk';
    const shown = /^(\S+) entr(?:y|ies), (\S+)B of (\S+)B$/.exec(text[id]);
    const actual = stats[tier];
    expect(shown && agrees(shownNumber(shown[1]), actual.entries) && agrees(shownNumber(shown[2]), actual.bytes)
      && agrees(shownNumber(shown[3]), actual.budget_bytes),
    `${tier} reads "${text[id]}", stats say ${actual.entries} entries, ${actual.bytes} of ${actual.budget_bytes} bytes`);
  }

  const shownClients = new Map(figures.clients.map(([name, count]) => [name, Number(count)]));
  // Requests without a token count under "-", which the page spells out.
  const clients = Object.entries(stats.clients).sort((a, b) => b[1] - a[1]).slice(0, 10)
    .map(([name, count]) => [name === '-' ? 'no token' : name === '?' ? 'unknown token' : name, count]);
  for (const [name, count] of clients) {
    if (admins.includes(name)) expect(shownClients.has(name), `client ${name} is missing`);
    else expect(shownClients.get(name) === count, `client ${name} reads ${shownClients.get(name)}, stats say ${count}`);
  }
  expect(figures.clients.length === Math.max(clients.length, 1), `${figures.clients.length} client rows for ${clients.length} clients`);

  const workflows = stats.workflows.length ? stats.workflows.map(w => [w.id, String(w.requests)]) : [['none']];
  expect(JSON.stringify(figures.workflows) === JSON.stringify(workflows),
    `workflows read ${JSON.stringify(figures.workflows)}, stats say ${JSON.stringify(workflows)}`);

  const recent = stats.recent_upstream_errors.slice().reverse().map(e => [e.at.slice(11, 19), e.route, e.outcome]);
  const expected = recent.length ? recent : [['none']];
  expect(JSON.stringify(figures.errors.map(row => row.slice(0, 3))) === JSON.stringify(expected),
    `recent errors read ${JSON.stringify(figures.errors)}, stats say ${JSON.stringify(expected)}`);
  return failed;
}
