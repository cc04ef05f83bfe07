// The kvmq dashboard: plain browser JavaScript against the /v1 API, no build step and nothing fetched
// from outside this origin. Live status comes from /v1/experiments/:id/events read through fetch()
// streaming, because EventSource cannot send the Authorization header an API with tokens requires.

const FINAL = ['completed', 'failed', 'cancelled'];
const TOKEN_KEY = 'kvmq-token';
let token = sessionStorage.getItem(TOKEN_KEY) || '';
// Aborted on every navigation: it closes the event streams and timers of the page being left.
let page = new AbortController();

// ---------- small helpers ----------

/** Build an element; strings become text nodes, never HTML. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const $main = () => document.getElementById('main');
const fmt = (x) => (x === undefined || x === null || !Number.isFinite(x) ? '-' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const pct = (x) => (Number.isFinite(x) ? `${x < 0.001 ? Number((x * 100).toPrecision(2)) : (x * 100).toFixed(1)}%` : "-");
const when = (iso) => (iso ? new Date(iso).toLocaleString() : '-');
const sleep = (ms, signal) => new Promise((r) => { const t = setTimeout(r, ms); signal?.addEventListener('abort', () => { clearTimeout(t); r(); }, { once: true }); });
const enc = encodeURIComponent;

class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || body?.title || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// ---------- the token ----------

let asking = null;
/** Show the token dialog once, however many requests were refused at the same moment. */
function askToken(message) {
  asking ??= new Promise((resolve) => {
    const dlg = document.getElementById('token-dialog');
    const err = document.getElementById('token-error');
    err.hidden = !message;
    err.textContent = message || '';
    const form = document.getElementById('token-form');
    const onSubmit = (e) => {
      e.preventDefault();
      const v = document.getElementById('token-input').value.trim();
      if (!v) return;
      token = v;
      sessionStorage.setItem(TOKEN_KEY, v);
      form.removeEventListener('submit', onSubmit);
      dlg.close();
      document.getElementById('signout').hidden = false;
      asking = null;
      resolve();
    };
    form.addEventListener('submit', onSubmit);
    if (!dlg.open) dlg.showModal();
    document.getElementById('token-input').focus();
  });
  return asking;
}

async function api(path, { accept = 'application/json', signal = page.signal } = {}) {
  for (;;) {
    const headers = { accept };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(path, { headers, signal, cache: 'no-store' });
    if (res.status !== 401) return res;
    await askToken(token ? 'That token was refused; try another.' : '');
  }
}

async function getJson(path, opts) {
  const res = await api(path, opts);
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

async function getText(path, accept) {
  const res = await api(path, { accept });
  const text = await res.text();
  if (!res.ok) throw new ApiError(res.status, (() => { try { return JSON.parse(text); } catch { return null; } })());
  return text;
}

/** A download that carries the bearer header (a plain link could not). */
async function download(path, filename, accept) {
  const res = await api(path, { accept });
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  const url = URL.createObjectURL(await res.blob());
  const a = h('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// ---------- live events through fetch streaming ----------

/**
 * Follow an experiment's server-sent events until it reaches a final status or the page is left.
 * A dropped stream is reopened with backoff; the first event after (re)connecting is the current status.
 */
async function follow(id, onEvent, signal) {
  let backoff = 1000;
  while (!signal.aborted) {
    let final = false;
    try {
      const res = await api(`/v1/experiments/${enc(id)}/events`, { accept: 'text/event-stream', signal });
      if (!res.ok || !res.body) throw new Error(`events: HTTP ${res.status}`);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let type = 'message';
          let data = '';
          for (const line of frame.split('\n')) {
            if (line.startsWith('event:')) type = line.slice(6).trim();
            else if (line.startsWith('data:')) data += line.slice(5).replace(/^ /, '');
          }
          if (!data) continue;
          let ev;
          try {
            ev = JSON.parse(data);
          } catch {
            continue;
          }
          backoff = 1000;
          onEvent(type, ev);
          if (type === 'status' && FINAL.includes(ev.status)) final = true;
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      console.warn('kvmq events', err);
    }
    if (final) return;
    await sleep(backoff, signal);
    backoff = Math.min(backoff * 2, 15_000);
  }
}

// ---------- shared pieces ----------

const statusBadge = (s) => h('span', { class: `status ${s}`, 'data-status': s }, s);

function progressCell(p) {
  const done = p?.done ?? 0;
  const total = p?.total ?? 0;
  return [h('progress', { max: Math.max(total, 1), value: done }), ' ', h('span', { class: 'progress-text' }, `${done}/${total}`)];
}
const currentText = (c) => (c ? `${c.profile}/${c.scenario}/${c.workload}${c.repetition ? ` #${c.repetition}` : ''}` : '');

function systemList(s) {
  if (!s) return h('p', { class: 'muted' }, 'No system recorded yet.');
  const versions = Object.entries(s.versions || {}).map(([k, v]) => `${k} ${v}`).join(', ');
  const rows = [
    ['host', s.hostname], ['cpu', s.cpu], ['cores', s.cores], ['memory', `${s.memoryMiB} MiB`], ['kernel', s.kernel],
    ['driver', s.driver || '-'], ['accelerator', s.accel || '-'], ['versions', versions || '-'],
  ];
  return h('dl', { class: 'kv' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
}

function errorBox(err) {
  const notFound = err instanceof ApiError && err.status === 404;
  return h('p', { class: 'error' }, notFound ? `Not found: ${err.message}` : `Error: ${err.message}`);
}

// ---------- page: experiment list ----------

async function listPage(signal) {
  const main = $main();
  const tbody = h('tbody');
  const table = h('table', { id: 'experiments' },
    h('thead', {}, h('tr', {}, ['name', 'status', 'progress', 'current cell', 'created', 'host'].map((c) => h('th', { class: 'text' }, c)))),
    tbody);
  main.replaceChildren(h('h1', {}, 'Experiments'), h('section', {}, table, h('p', { class: 'muted', id: 'list-note' })));
  const followed = new Map();

  const render = (items) => {
    tbody.replaceChildren(
      ...items.map((e) =>
        h('tr', { 'data-id': e.id },
          h('td', { class: 'text' }, h('a', { href: `#/e/${e.id}` }, e.name), h('div', { class: 'muted' }, e.id)),
          h('td', { class: 'text status-cell' }, statusBadge(e.status), regressionFlag(e)),
          h('td', { class: 'text progress-cell' }, progressCell(e.progress)),
          h('td', { class: 'text current-cell' }, currentText(e.progress?.current)),
          h('td', { class: 'text' }, when(e.createdAt)),
          h('td', { class: 'text' }, e.host || '-'),
        ),
      ),
    );
    if (!items.length) tbody.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No experiments yet. Submit one with POST /v1/experiments or kvmq submit.')));
  };

  const update = (id, patch) => {
    const row = tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    if (!row) return;
    if (patch.status) row.querySelector('.status-cell').replaceChildren(statusBadge(patch.status));
    if (patch.progress) {
      row.querySelector('.progress-cell').replaceChildren(...progressCell(patch.progress));
      row.querySelector('.current-cell').textContent = currentText(patch.progress.current);
    }
  };

  const load = async () => {
    const list = await getJson('/v1/experiments?limit=50', { signal });
    render(list.items);
    document.getElementById('list-note').textContent = `${list.total} experiment(s); live rows update as they run.`;
    for (const e of list.items) {
      if (FINAL.includes(e.status) || followed.has(e.id) || followed.size >= 8) continue;
      followed.set(e.id, true);
      follow(e.id, (type, ev) => {
        if (type === 'status') update(e.id, { status: ev.status, ...(ev.progress ? { progress: ev.progress } : {}) });
        else if (type === 'progress') update(e.id, { progress: ev.progress });
      }, signal).finally(() => followed.delete(e.id));
    }
  };
  await load();
  // New experiments appear without a reload; rows already shown are kept live by their streams.
  (async () => {
    while (!signal.aborted) {
      await sleep(10_000, signal);
      if (!signal.aborted) await load().catch(() => {});
    }
  })();
}

/** The flag a run of a series carries when its check found a new regression. */
function regressionFlag(e) {
  if (!e.regression?.flagged) return null;
  return h('a', { class: 'flag regression', href: `#/s/${enc(e.regression.series)}?host=${enc(e.regression.host)}`, title: e.regression.message }, ' regression');
}

/** A run of a series: what its check against the runs before it found. */
function seriesCheckSection(rec) {
  const r = rec.regression;
  if (!r) return null;
  return h('section', { id: 'series-check', class: r.flagged ? 'warn' : '' },
    h('h3', {}, 'Series ', h('a', { href: `#/s/${enc(r.series)}?host=${enc(r.host)}` }, r.series), r.flagged ? ': regression' : ''),
    h('p', {}, r.message),
    r.changes.length ? h('table', {},
      h('thead', {}, h('tr', {}, ['cell', 'change', 'before', 'after', '95% CI', 'adjusted p', 'since run'].map((c) => h('th', { class: 'text' }, c)))),
      h('tbody', {}, r.changes.map((c) => h('tr', { class: c.direction === 'regression' ? 'slower' : 'faster' },
        h('td', { class: 'text' }, `${c.profile}/${c.scenario}/${c.workload}`), h('td', { class: 'text' }, `${c.direction} ×${fmt(c.ratio)}`),
        h('td', {}, `${fmt(c.before.mean)} ${c.unit} (${c.before.runs} runs)`), h('td', {}, `${fmt(c.after.mean)} ${c.unit} (${c.after.runs} runs)`),
        h('td', {}, c.ci95 ? `${fmt(c.ci95[0])} .. ${fmt(c.ci95[1])}` : '-'), h('td', {}, c.pAdjusted), h('td', { class: 'text' }, h('a', { href: `#/e/${c.since}` }, c.since)))))) : null);
}

/** The paper's Tables 3 and 4 ratios beside the measured ones, each judged by TOST. */
async function paperSection(id) {
  const sec = h('section', { id: 'paper-reference' }, h('h3', {}, "Beside the paper (Tables 3 and 4, ratios only)"));
  try {
    const r = await getJson(`/v1/experiments/${enc(id)}/results?reference=paper`);
    const ref = r.reference;
    sec.append(h('p', { class: 'muted' }, `${ref.summary}. ${ref.method}.`));
    if (ref.rows.length) {
      sec.append(h('table', { class: 'reference' },
        h('thead', {}, h('tr', {}, ['ratio', 'profile', 'workload', 'scenario', 'paper', 'measured', 'interval', 'TOST p', 'outcome'].map((c) => h('th', { class: 'text' }, c)))),
        h('tbody', {}, ref.rows.map((x) => h('tr', {},
          h('td', { class: 'text' }, x.ratio), h('td', { class: 'text' }, x.profile), h('td', { class: 'text' }, x.workload), h('td', { class: 'text' }, x.scenario),
          h('td', {}, fmt(x.paper)), h('td', {}, fmt(x.measured)), h('td', {}, x.ci ? `${fmt(x.ci[0])} .. ${fmt(x.ci[1])}` : '-'),
          h('td', {}, x.p === undefined ? '-' : x.p < 0.001 ? '<0.001' : x.p.toFixed(3)),
          h('td', { class: `text ${x.outcome === 'reproduces' ? 'faster' : x.outcome === 'differs' ? 'slower' : ''}` }, x.outcome))))));
    }
    sec.append(h('p', { class: 'muted' }, `Source: ${ref.source.authors.join(', ')}, “${ref.source.title}”.`));
  } catch (err) {
    if (err instanceof ApiError && err.status === 400) sec.append(h('p', { class: 'muted' }, 'The paper reference is not available on this API.'));
    else sec.append(errorBox(err));
  }
  return sec;
}

// ---------- page: series ----------

async function seriesListPage(signal) {
  const main = $main();
  const sec = h('section', { id: 'series' });
  main.replaceChildren(h('h1', {}, 'Series'), sec);
  try {
    const d = await getJson('/v1/series?limit=200', { signal });
    if (!d.items.length) return void sec.append(h('p', { class: 'muted' }, 'No series yet: give experiments a "series" name, or run a schedule (its runs form one).'));
    sec.append(h('table', {},
      h('thead', {}, h('tr', {}, ['series', 'runs', 'hosts', 'last run', ''].map((c) => h('th', { class: 'text' }, c)))),
      h('tbody', {}, d.items.map((x) => h('tr', {},
        h('td', { class: 'text' }, h('a', { href: `#/s/${enc(x.name)}` }, x.name)), h('td', {}, x.runs), h('td', { class: 'text' }, x.hosts.join(', ')),
        h('td', { class: 'text' }, when(x.lastRunAt)), h('td', { class: 'text' }, x.flagged ? h('span', { class: 'flag regression' }, 'regression') : ''))))));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) sec.append(h('p', { class: 'muted' }, 'Series are not available on this API.'));
    else sec.append(errorBox(err));
  }
}

async function seriesPage(name, params, signal) {
  const main = $main();
  const q = params.get('host') ? `?host=${enc(params.get('host'))}` : '';
  const d = await getJson(`/v1/series/${enc(name)}${q}`, { signal });
  const parts = [h('h1', {}, `Series ${name}`)];
  for (const host of d.hosts) {
    const steps = host.cells.flatMap((c) => c.changePoints.filter((cp) => cp.confirmed).map((cp) => ({ c, cp })));
    parts.push(h('section', { class: 'series-host', 'data-host': host.host },
      h('h2', {}, `Host ${host.host}: ${host.runs.length} run(s)`),
      h('p', { class: 'muted' }, `Change points by E-divisive means and Welch's test, ${host.settings.correction === 'holm' ? 'Holm' : 'Benjamini-Hochberg'}-corrected over cells at alpha ${host.settings.alpha}; steps under ×${1 + host.settings.threshold} are ignored.`),
      steps.length ? h('ul', {}, steps.map(({ c, cp }) => h('li', { class: cp.direction === 'regression' ? 'slower' : 'faster' },
        `${c.profile}/${c.scenario}/${c.workload}: ${cp.direction} ×${fmt(cp.ratio)} from run `, h('a', { href: `#/e/${cp.since}` }, cp.since), ` (${fmt(cp.before.mean)} → ${fmt(cp.after.mean)} ${c.unit})`))) : h('p', {}, 'No confirmed change point.'),
      h('table', {},
        h('thead', {}, h('tr', {}, ['run', 'finished', '', 'system changes from the run before'].map((c) => h('th', { class: 'text' }, c)))),
        h('tbody', {}, host.runs.map((r) => h('tr', {},
          h('td', { class: 'text' }, h('a', { href: `#/e/${r.id}` }, r.id)), h('td', { class: 'text' }, when(r.finishedAt)),
          h('td', { class: 'text' }, r.flagged ? h('span', { class: 'flag regression' }, 'regression') : ''),
          h('td', { class: 'text' }, r.systemChanges.map((x) => `${x.field} ${x.before ?? '-'} → ${x.after ?? '-'}`).join('; ') || '-'))))),
    ));
  }
  const chart = h('div', { class: 'chart', id: 'series-chart' }, h('p', { class: 'muted' }, 'Drawing the trends…'));
  parts.push(h('section', {}, h('h3', {}, 'Each cell over time (95% CI; dashed: change points)'), chart));
  main.replaceChildren(...parts);
  showSvg(chart, `/v1/series/${enc(name)}${q ? `${q}&` : '?'}format=svg`);
}

// ---------- page: one experiment ----------

/** One cell of a means table (seconds, or a server figure): the mean with its interval, or its ratio to the host, guest1 or the baseline profile. */
function figureCell(field, scenario, v) {
  if (!v) return h('td', { class: 'muted' }, '-');
  if (field === 'mean') return h('td', { title: `n ${v.n}, 95% CI ${fmt(v.ci95[0])}..${fmt(v.ci95[1])}, cv ${pct(v.cv)}` }, fmt(v.mean));
  if (field === 'vsHost') return h('td', {}, scenario === 'host' ? '1.00' : fmt(v.vsHost));
  if (field === 'vsGuest1') return h('td', {}, scenario === 'guest1' ? '1.00' : fmt(v.vsGuest1));
  const r = v.vsProfile;
  return h('td', { class: r?.significant ? 'sig' : '', title: r?.p !== undefined ? `p = ${r.p}` : '' }, r ? `${fmt(r.ratio)}${r.significant ? '*' : ''}` : '-');
}

function meansTable(results, spec, profile, field, label) {
  const scenarios = spec.scenarios.map((s) => s.id);
  const workloads = spec.workloads.map((w) => w.id || w.kind);
  const get = (s, w) => results.summary.find((x) => x.profile === profile && x.scenario === s && x.workload === w);
  return h('table', { class: `means ${field}`, 'data-profile': profile },
    h('caption', { class: 'muted' }, label),
    h('thead', {}, h('tr', {}, h('th', {}, 'workload'), scenarios.map((s) => h('th', {}, s)))),
    h('tbody', {}, workloads.map((w) =>
      h('tr', {}, h('td', {}, w), scenarios.map((s) => figureCell(field, s, get(s, w)))),
    )),
  );
}

function statsTable(results, profile) {
  const rows = results.summary.filter((x) => x.profile === profile);
  const target = results.repetitions?.targetCv;
  return h('table', { class: 'stats', 'data-profile': profile },
    h('thead', {}, h('tr', {}, ['workload', 'scenario', 'n', 'mean', 'median', 'stddev', 'cv', '95% CI', 'min', 'max', 'outliers'].map((c) => h('th', {}, c)))),
    h('tbody', {}, rows.map((x) =>
      h('tr', {},
        h('td', {}, x.workload), h('td', { class: 'text' }, x.scenario), h('td', {}, x.n), h('td', {}, fmt(x.mean)), h('td', {}, fmt(x.median)),
        h('td', {}, fmt(x.stddev)), h('td', { class: target !== undefined && x.cv > target ? 'error' : '' }, pct(x.cv)),
        h('td', {}, `${fmt(x.ci95[0])} .. ${fmt(x.ci95[1])}`), h('td', {}, fmt(x.min)), h('td', {}, fmt(x.max)),
        h('td', { class: x.outliers.length ? 'error' : 'muted' }, x.outliers.length ? x.outliers.map((o) => `#${o}`).join(' ') : '-'),
      ),
    )),
  );
}

/** Workloads with server figures (http, kv): by kind, or because a stored row carries them. */
function serverWorkloads(results, spec) {
  return spec.workloads.map((w) => w.id || w.kind)
    .filter((id, i) => ['http', 'kv'].includes(spec.workloads[i].kind) || results.summary.some((x) => x.workload === id && x.server));
}

/** A server figure (throughput per guest or p99) per workload and scenario; rows say the unit, the caption the direction. */
function serverTable(results, spec, profile, workloads, figure, field, label) {
  const scenarios = spec.scenarios.map((s) => s.id);
  const get = (s, w) => results.summary.find((x) => x.profile === profile && x.scenario === s && x.workload === w)?.server;
  const unitOf = (w) => results.summary.find((x) => x.workload === w && x.server)?.server[figure].unit;
  return h('table', { class: `means server ${figure} ${field}`, 'data-profile': profile, 'data-figure': figure },
    h('caption', { class: 'muted' }, label),
    h('thead', {}, h('tr', {}, h('th', {}, 'workload'), scenarios.map((s) => h('th', {}, s)))),
    h('tbody', {}, workloads.map((w) =>
      h('tr', {}, h('td', {}, field === 'mean' && unitOf(w) ? `${w} (${unitOf(w)})` : w), scenarios.map((s) => figureCell(field, s, get(s, w)?.[figure]))),
    )),
  );
}

function serverStatsTable(results, profile) {
  const rows = results.summary.filter((x) => x.profile === profile && x.server);
  const outl = (v) => ['throughput', 'p99'].flatMap((f) => (v[f].outliers.length ? [`${f} ${v[f].outliers.map((o) => `#${o}`).join(' ')}`] : [])).join('; ');
  return h('table', { class: 'stats server', 'data-profile': profile },
    h('caption', { class: 'muted' }, "throughput per guest: higher is better; p99 latency: lower is better; a cell's figure is the mean over its loaded guests"),
    h('thead', {}, h('tr', {}, ['workload', 'scenario', 'n', 'throughput', '95% CI', 'cv', 'p99 ms', '95% CI', 'cv', 'requests', 'errors', 'timeouts', 'outliers'].map((c) => h('th', {}, c)))),
    h('tbody', {}, rows.map((x) => {
      const v = x.server;
      return h('tr', {},
        h('td', {}, x.workload), h('td', { class: 'text' }, x.scenario), h('td', {}, v.throughput.n), h('td', {}, `${fmt(v.throughput.mean)} ${v.unit}`),
        h('td', {}, `${fmt(v.throughput.ci95[0])} .. ${fmt(v.throughput.ci95[1])}`), h('td', {}, pct(v.throughput.cv)),
        h('td', {}, fmt(v.p99.mean)), h('td', {}, `${fmt(v.p99.ci95[0])} .. ${fmt(v.p99.ci95[1])}`), h('td', {}, pct(v.p99.cv)),
        h('td', {}, v.requests), h('td', { class: v.errors ? 'error' : '' }, v.errors), h('td', { class: v.timeouts ? 'error' : '' }, v.timeouts),
        h('td', { class: outl(v) ? 'error' : 'muted' }, outl(v) || '-'));
    })),
  );
}

function renderResults(box, results, spec) {
  const scenarios = spec.scenarios.map((s) => s.id);
  const parts = [];
  const reps = results.repetitions;
  const server = serverWorkloads(results, spec);
  const batch = spec.workloads.map((w) => w.id || w.kind).filter((w) => !server.includes(w));
  const showSeconds = batch.length > 0 || !server.length;
  parts.push(h('p', { class: 'muted' },
    `Repetitions: ${reps.min === reps.max ? reps.min : `${reps.min} to ${reps.max} while cv > ${pct(reps.targetCv)}`}; order ${reps.order}. ` +
    (server.length ? `${showSeconds ? 'Seconds: lower is better. ' : ''}Throughput per guest: higher is better; p99 latency: lower is better; hover a mean for its interval.` : `Seconds, lower is better; hover a mean for its interval.`)));
  const batchSpec = { ...spec, workloads: spec.workloads.filter((w) => batch.includes(w.id || w.kind)) };
  for (const p of spec.profiles) {
    const sec = h('section', { class: 'profile', 'data-profile': p.name }, h('h3', {}, `Profile ${p.name}`));
    if (showSeconds) {
      sec.append(meansTable(results, batchSpec, p.name, 'mean', 'mean seconds'));
      if (scenarios.includes('host') && scenarios.length > 1) sec.append(meansTable(results, batchSpec, p.name, 'vsHost', 'relative to host'));
      if (scenarios.includes('guest1') && scenarios.some((s) => s !== 'host' && s !== 'guest1')) sec.append(meansTable(results, batchSpec, p.name, 'vsGuest1', 'relative to guest1'));
      sec.append(h('h3', {}, 'Statistics'), statsTable({ ...results, summary: results.summary.filter((x) => !x.server) }, p.name));
    }
    if (server.length) {
      sec.append(serverTable(results, spec, p.name, server, 'throughput', 'mean', 'throughput per guest (higher is better)'));
      if (scenarios.includes('host') && scenarios.length > 1) sec.append(serverTable(results, spec, p.name, server, 'throughput', 'vsHost', 'throughput relative to host (higher is better)'));
      if (scenarios.includes('guest1') && scenarios.some((s) => s !== 'host' && s !== 'guest1')) sec.append(serverTable(results, spec, p.name, server, 'throughput', 'vsGuest1', 'throughput per guest relative to guest1 (higher is better; 0.50 = half of one guest alone)'));
      sec.append(serverTable(results, spec, p.name, server, 'p99', 'mean', 'p99 latency, ms (lower is better)'));
      sec.append(h('h3', {}, 'Server statistics'), serverStatsTable(results, p.name));
    }
    parts.push(sec);
  }
  if (spec.profiles.length > 1) {
    const base = spec.profiles[0].name;
    for (const p of spec.profiles.slice(1)) {
      const sec = h('section', {}, h('h3', {}, `${p.name} relative to ${base}`));
      if (showSeconds) sec.append(meansTable(results, batchSpec, p.name, 'vsProfile', "below 1.00 is faster; * = significant (Welch's t-test, p < 0.05)"));
      if (server.length) {
        sec.append(serverTable(results, spec, p.name, server, 'throughput', 'vsProfile', "throughput: above 1.00 is better; * = significant (Welch's t-test, p < 0.05)"));
        sec.append(serverTable(results, spec, p.name, server, 'p99', 'vsProfile', "p99 latency: below 1.00 is better; * = significant (Welch's t-test, p < 0.05)"));
      }
      parts.push(sec);
    }
  }
  // The same warnings the markdown export ends with: outliers, and spreads above the adaptive target.
  const noisy = results.summary.filter((x) => !x.server && (x.outliers.length || (reps.targetCv !== undefined && x.cv > reps.targetCv)));
  const serverNoisy = results.summary.filter((x) => x.server).map((x) => [x, [
    ...['throughput', 'p99'].filter((f) => x.server[f].outliers.length).map((f) => `${f} outlier repetition(s) ${x.server[f].outliers.join(', ')}`),
    ...(reps.targetCv !== undefined && x.server.throughput.cv > reps.targetCv ? [`throughput cv ${pct(x.server.throughput.cv)} above the target ${pct(reps.targetCv)}`] : []),
    ...(x.server.errors || x.server.timeouts ? [`${x.server.errors} error(s) and ${x.server.timeouts} timeout(s) in ${x.server.requests} requests`] : []),
  ]]).filter(([, why]) => why.length);
  if (noisy.length || serverNoisy.length) {
    parts.push(h('div', { class: 'warn', id: 'warnings' }, h('strong', {}, 'Warnings'), h('ul', {}, noisy.map((x) => h('li', {},
      `${x.profile}/${x.scenario}/${x.workload}: `,
      [x.outliers.length ? `outlier repetition(s) ${x.outliers.join(', ')}` : null,
        reps.targetCv !== undefined && x.cv > reps.targetCv ? `cv ${pct(x.cv)} above the target ${pct(reps.targetCv)} after ${x.n} repetitions` : null]
        .filter(Boolean).join('; '))),
      serverNoisy.map(([x, why]) => h('li', {}, `${x.profile}/${x.scenario}/${x.workload}: ${why.join('; ')}`)))));
  }
  if (results.verdict) parts.push(verdictSection(results));
  const capChart = h('div', { class: 'chart', id: 'capacity-chart' }, h('p', { class: 'muted' }, 'Drawing the capacity chart…'));
  if (results.capacity) parts.push(capacitySection(results, capChart));
  const chart = h('div', { class: 'chart', id: 'chart' }, h('p', { class: 'muted' }, 'Drawing the chart…'));
  parts.push(h('section', {}, h('h3', {}, server.length
    ? `${showSeconds ? 'Seconds, ' : ''}throughput per guest and p99 latency per scenario (error bars: 95% CI; throughput: higher is better; ${showSeconds ? 'seconds and ' : ''}p99: lower is better)`
    : 'Seconds per scenario (error bars: 95% CI)'), chart));
  const hasTelemetry = results.cells.some((c) => c.telemetry);
  const telemetry = h('div', { class: 'chart', id: 'telemetry-chart' }, h('p', { class: 'muted' }, 'Drawing the telemetry…'));
  if (hasTelemetry) parts.push(h('section', {}, h('h3', {}, 'Writeback telemetry: dirty page cache over each cell (dashed: threshold)'), telemetry));
  box.replaceChildren(...parts);
  showSvg(chart, `/v1/experiments/${enc(results.id)}/chart`);
  if (hasTelemetry) showSvg(telemetry, `/v1/experiments/${enc(results.id)}/chart?kind=telemetry`);
  if (results.capacity) showSvg(capChart, `/v1/experiments/${enc(results.id)}/chart?kind=capacity`);
}

/** A capacity study: the answer, the steps with their verdicts, the model with intervals, and its check. */
function capacitySection(results, chart) {
  const c = results.capacity;
  const sec = h('section', { id: 'capacity' }, h('h3', {}, `Capacity study (limit: ${c.limitText})`));
  // σ and κ are small: four significant digits, not two decimals.
  const sig = (x) => (Number.isFinite(x) ? String(Number(x.toPrecision(4))) : '-');
  const ci = (x) => (x ? `${sig(x[0])} .. ${sig(x[1])}` : '-');
  for (const s of c.studies) {
    sec.append(h('p', { class: 'sig' }, h('strong', {}, `${s.workload} / ${s.profile}: `), s.headline));
    sec.append(h('table', { class: 'capacity' },
      h('thead', {}, h('tr', {}, ['K', 'n', s.kind === 'server' ? 'window s' : 'per-guest s', `throughput (${s.unit})`, 'per guest', 'slowdown', 'worst p99 ms', 'verdict'].map((x) => h('th', {}, x)))),
      h('tbody', {},
        s.steps.map((r) => h('tr', { class: r.verdict === 'over' ? 'over' : '' },
          h('td', {}, String(r.k)), h('td', {}, String(r.n)), h('td', {}, fmt(r.seconds)), h('td', {}, fmt(r.throughput)), h('td', {}, fmt(r.perGuest)),
          h('td', {}, r.slowdown !== undefined ? `${fmt(r.slowdown)}×` : '-'), h('td', {}, r.p99Ms !== undefined ? fmt(r.p99Ms) : '-'), h('td', { class: 'text' }, r.verdict))),
        s.skipped.map((k) => h('tr', { class: 'muted' }, h('td', {}, String(k)), h('td', { colspan: '7', class: 'text' }, 'skipped: the limit was crossed below'))))));
    if (s.fit) {
      const f = s.fit;
      sec.append(h('p', {}, `USL fit on ${f.n} measurements (R² ${fmt(f.r2)}): λ = ${sig(f.lambda)} (${ci(f.ci95?.lambda)}), σ = ${sig(f.sigma)} (${ci(f.ci95?.sigma)}), κ = ${sig(f.kappa)} (${ci(f.ci95?.kappa)}); ` +
        (f.kMax !== undefined ? `peak at K ≈ ${fmt(f.kMax)}.` : 'no peak (κ = 0).')));
    } else if (s.fitError) sec.append(h('p', { class: 'muted' }, `No model: ${s.fitError}`));
    if (s.check) {
      sec.append(h('p', {}, `Predicted from K = ${s.check.fitOn.join(', ')}, then measured (mean absolute error ${pct(s.check.meanAbsError ?? 0)}):`));
      sec.append(h('table', { class: 'capacity-check' },
        h('thead', {}, h('tr', {}, ['K', 'predicted', '95% band', 'measured', 'error', 'in band'].map((x) => h('th', {}, x)))),
        h('tbody', {}, s.check.rows.map((r) => h('tr', {}, h('td', {}, String(r.k)), h('td', {}, fmt(r.predicted)), h('td', {}, ci(r.ci95)), h('td', {}, fmt(r.measured)),
          h('td', {}, `${r.error >= 0 ? '+' : ''}${(r.error * 100).toFixed(1)}%`), h('td', { class: 'text' }, r.inside === undefined ? '-' : r.inside ? 'yes' : 'no'))))));
    } else if (s.checkError) sec.append(h('p', { class: 'muted' }, `No prediction check: ${s.checkError}`));
  }
  sec.append(chart);
  return sec;
}

/** A sweep's verdict: the answer in words per scenario and workload, then each profile against the baseline. */
function verdictSection(results) {
  const v = results.verdict;
  const method = v.correction === 'holm' ? 'Holm' : 'Benjamini-Hochberg';
  const sec = h('section', { id: 'verdict' }, h('h3', {}, `Verdict against ${v.baseline}`),
    h('p', { class: 'muted' }, `Welch's t-test, ${method}-adjusted over the profiles of each scenario and workload (alpha ${v.alpha}); within ±${Math.round(v.negligible * 100)}% is negligible.`));
  for (const r of v.rows) {
    const what = r.figure ? ` ${r.figure === 'p99' ? 'p99 latency' : 'throughput'} (${r.better} is better)` : '';
    sec.append(h('p', { class: r.best ? 'sig' : '' }, h('strong', {}, `${r.scenario} / ${r.workload}${what}: `), r.answer));
    sec.append(h('table', { class: 'verdict', ...(r.figure ? { 'data-figure': r.figure } : {}) },
      h('thead', {}, h('tr', {}, ['profile', `mean ${r.unit || 's'}`, 'vs baseline', '95% CI', 'p', 'adjusted p', 'outcome'].map((c) => h('th', {}, c)))),
      h('tbody', {}, r.comparisons.map((c) => h('tr', { class: c.profile === r.best ? 'sig' : '' },
        h('td', { class: 'text' }, c.profile), h('td', {}, fmt(c.mean)), h('td', {}, fmt(c.ratio)),
        h('td', {}, c.ci95 ? `${fmt(c.ci95[0])} .. ${fmt(c.ci95[1])}` : '-'), h('td', {}, c.p ?? '-'), h('td', {}, c.pAdjusted ?? '-'), h('td', { class: 'text' }, c.outcome))))));
  }
  for (const x of results.sweep?.skipped ?? []) sec.append(h('p', { class: 'muted' }, `skipped ${x.name}: ${x.reason}`));
  return sec;
}

/** Put an SVG chart from this API's own renderer (every label escaped there) into the page. */
function showSvg(box, path) {
  return getText(path, 'image/svg+xml').then(
    (svg) => {
      const doc = new DOMParser().parseFromString(svg, 'image/svg+xml');
      const el = doc.documentElement;
      if (el.nodeName !== 'svg') throw new Error('not an SVG');
      el.querySelectorAll('script, foreignObject').forEach((n) => n.remove());
      box.replaceChildren(document.importNode(el, true));
    },
    (err) => box.replaceChildren(errorBox(err)),
  );
}

async function deliveriesSection(id) {
  const sec = h('section', { id: 'deliveries' }, h('h3', {}, 'Webhook deliveries'));
  try {
    const d = await getJson(`/v1/experiments/${enc(id)}/deliveries`);
    sec.append(h('p', { class: 'muted' }, d.webhook ? `Webhook: ${d.webhook.url}` : 'No webhook in this experiment.'));
    if (d.items?.length) {
      sec.append(h('table', {},
        h('thead', {}, h('tr', {}, ['when', 'attempt', 'event', 'HTTP', 'outcome', 'ms', 'error', 'next attempt'].map((c) => h('th', { class: 'text' }, c)))),
        h('tbody', {}, d.items.map((a) => h('tr', {},
          h('td', { class: 'text' }, when(a.at)), h('td', {}, a.attempt), h('td', { class: 'text' }, a.type), h('td', {}, a.status ?? '-'),
          h('td', { class: `text ${a.outcome === 'delivered' ? 'faster' : a.outcome === 'retrying' ? '' : 'slower'}` }, a.outcome),
          h('td', {}, a.latencyMs ?? '-'), h('td', { class: 'text' }, a.error || ''), h('td', { class: 'text' }, a.nextAttemptAt ? when(a.nextAttemptAt) : '')))),
      ));
    } else if (d.webhook) sec.append(h('p', { class: 'muted' }, 'No attempt yet (it is sent when the experiment finishes).'));
  } catch (err) {
    // An API without the deliveries route answers 404 with "no route"; say so instead of failing.
    if (err instanceof ApiError && err.status === 404) sec.append(h('p', { class: 'muted' }, 'Delivery attempts are not available on this API.'));
    else sec.append(errorBox(err));
  }
  return sec;
}

async function experimentPage(id, signal) {
  const main = $main();
  const [rec, results] = await Promise.all([getJson(`/v1/experiments/${enc(id)}`), getJson(`/v1/experiments/${enc(id)}/results`)]);
  const statusEl = h('span', { id: 'exp-status' }, statusBadge(rec.status));
  const progressEl = h('span', { id: 'exp-progress' }, progressCell(rec.progress));
  const currentEl = h('span', { id: 'exp-current', class: 'muted' }, currentText(rec.progress?.current));
  const errorEl = h('p', { id: 'exp-error', class: 'error', hidden: !rec.error }, rec.error ? `Error: ${rec.error.reason}` : '');
  const resultsBox = h('div', { id: 'results' });
  const systemBox = h('div', {}, systemList(results.system));
  const profilesBox = h('div', {});
  const renderProfiles = (r) =>
    profilesBox.replaceChildren(...(r.profiles || []).map((p) =>
      h('p', {}, h('strong', {}, p.name), ` (target ${p.target}) read back: `,
        Object.entries(p.readBack || {}).map(([k, v]) => `${k}=${v}`).join(' ') || '-', p.restored ? ' — restored after' : '')));
  renderProfiles(results);

  const dl = (format, ext, accept) => h('button', { type: 'button', onclick: () => download(`/v1/experiments/${enc(id)}/results?format=${format}`, `${id}.${ext}`, accept).catch((e) => alert(e.message)) }, ext.toUpperCase());
  main.replaceChildren(
    h('h1', {}, rec.name, ' ', statusEl),
    h('section', {},
      h('dl', { class: 'kv' },
        h('dt', {}, 'id'), h('dd', {}, rec.id),
        h('dt', {}, 'progress'), h('dd', {}, progressEl, ' ', currentEl),
        h('dt', {}, 'host'), h('dd', {}, rec.host || '-'),
        h('dt', {}, 'created'), h('dd', {}, when(rec.createdAt)),
        h('dt', {}, 'started'), h('dd', { id: 'exp-started' }, when(rec.startedAt)),
        h('dt', {}, 'finished'), h('dd', { id: 'exp-finished' }, when(rec.finishedAt)),
        h('dt', {}, 'driver'), h('dd', {}, rec.spec?.driver || '-'),
      ),
      errorEl,
      h('p', {}, 'Download: ', dl('markdown', 'md', 'text/markdown'), ' ', dl('csv', 'csv', 'text/csv'), ' ', dl('json', 'json', 'application/json'), ' ',
        h('button', { type: 'button', onclick: () => download(`/v1/experiments/${enc(id)}/chart`, `${id}.svg`, 'image/svg+xml').catch((e) => alert(e.message)) }, 'SVG chart'), ' ',
        h('a', { href: `#/compare?base=${enc(id)}` }, 'Compare with…')),
    ),
    seriesCheckSection(rec),
    h('h2', {}, 'Results'),
    resultsBox,
    await paperSection(id),
    h('h2', {}, 'System'),
    h('section', {}, systemBox, profilesBox),
    await deliveriesSection(id),
  );
  renderResults(resultsBox, results, rec.spec);

  if (FINAL.includes(rec.status)) return;
  let refreshing = null;
  const refresh = () => {
    // Cells arrive one at a time; coalesce them into one results fetch a second.
    refreshing ??= sleep(1000, signal).then(async () => {
      refreshing = null;
      if (signal.aborted) return;
      const r = await getJson(`/v1/experiments/${enc(id)}/results`, { signal }).catch(() => null);
      if (r && !signal.aborted) {
        renderResults(resultsBox, r, rec.spec);
        systemBox.replaceChildren(systemList(r.system));
        renderProfiles(r);
      }
    });
  };
  follow(id, (type, ev) => {
    if (type === 'status') {
      statusEl.replaceChildren(statusBadge(ev.status));
      if (ev.progress) {
        progressEl.replaceChildren(...progressCell(ev.progress));
        currentEl.textContent = currentText(ev.progress.current);
      }
      if (ev.error) {
        errorEl.hidden = false;
        errorEl.textContent = `Error: ${ev.error.reason}`;
      }
      if (FINAL.includes(ev.status)) {
        refresh();
        getJson(`/v1/experiments/${enc(id)}`, { signal }).then((r) => {
          document.getElementById('exp-finished').textContent = when(r.finishedAt);
          progressEl.replaceChildren(...progressCell(r.progress));
          currentEl.textContent = '';
        }, () => {});
      }
    } else if (type === 'progress') {
      progressEl.replaceChildren(...progressCell(ev.progress));
      currentEl.textContent = currentText(ev.progress.current);
    } else if (type === 'cell') refresh();
  }, signal);
}

// ---------- page: compare ----------

async function comparePage(params, signal) {
  const main = $main();
  const list = await getJson('/v1/experiments?limit=200', { signal });
  const options = (selected) => list.items.map((e) => h('option', { value: e.id, selected: e.id === selected }, `${e.name} (${e.id}, ${e.status})`));
  const base = h('select', { name: 'base', id: 'compare-base' }, options(params.get('base')));
  const other = h('select', { name: 'other', id: 'compare-other' }, options(params.get('other') || list.items.find((e) => e.id !== params.get('base'))?.id));
  const form = h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); location.hash = `#/compare?base=${enc(base.value)}&other=${enc(other.value)}`; } },
    h('label', {}, 'Base (denominator)', base), h('label', {}, 'Other (numerator)', other), h('button', { type: 'submit' }, 'Compare'));
  const out = h('div', { id: 'comparison' });
  main.replaceChildren(h('h1', {}, 'Compare two results'), h('section', {}, form), out);
  if (!params.get('base') || !params.get('other')) return;
  try {
    const c = await getJson(`/v1/compare?base=${enc(params.get('base'))}&other=${enc(params.get('other'))}`, { signal });
    out.append(
      h('p', {}, h('a', { href: `#/e/${c.other.id}` }, c.other.name), ' against ', h('a', { href: `#/e/${c.base.id}` }, c.base.name),
        c.sameSystem ? ' — same system.' : ' — the systems differ.'),
      ...c.warnings.map((w) => h('div', { class: 'warn' }, w)),
      h('section', {},
        h('table', { class: 'comparison' },
          h('caption', { class: 'muted' }, c.cells.some((x) => x.figure)
            ? "ratio = other mean / base mean; seconds and p99 latency: below 1.00 is better; throughput per guest: above 1.00 is better; p from Welch's t-test; * = significant at 0.05"
            : "ratio = other mean / base mean (below 1.00 the other is faster); p from Welch's t-test; * = significant at 0.05"),
          h('thead', {}, h('tr', {}, ['profile', 'scenario', 'workload', ...(c.cells.some((x) => x.figure) ? ['figure'] : []), 'base mean (n)', 'other mean (n)', 'ratio', '95% CI', 'p', 'verdict'].map((x) => h('th', {}, x)))),
          h('tbody', {}, c.cells.map((x) => h('tr', {},
            h('td', {}, x.otherProfile ? `${x.profile} vs ${x.otherProfile}` : x.profile), h('td', { class: 'text' }, x.scenario), h('td', { class: 'text' }, x.workload),
            c.cells.some((y) => y.figure) ? h('td', { class: 'text' }, x.figure ? `${x.figure} ${x.unit} (${x.better} is better)` : 'seconds (lower is better)') : null,
            h('td', {}, `${fmt(x.base.mean)} (${x.base.n})`), h('td', {}, `${fmt(x.other.mean)} (${x.other.n})`),
            h('td', { class: x.significant ? 'sig' : '' }, `${fmt(x.ratio)}${x.significant ? '*' : ''}`),
            h('td', {}, x.ci95 ? `${fmt(x.ci95[0])} .. ${fmt(x.ci95[1])}` : '-'),
            h('td', {}, x.p === undefined ? '-' : x.p < 0.001 ? '<0.001' : x.p.toFixed(3)),
            h('td', { class: `text ${x.verdict === 'improvement' ? 'faster' : x.verdict === 'regression' ? 'slower' : x.verdict}` }, x.verdict)))),
        ),
        c.cells.length ? null : h('p', { class: 'muted' }, 'No cell is present in both results.'),
      ),
      h('section', {}, h('h3', {}, 'Ratios (error bars: 95% CI; pale bars: not significant)'), h('div', { class: 'chart', id: 'compare-chart' }, h('p', { class: 'muted' }, 'Drawing the chart…'))),
      h('h3', {}, 'Systems'),
      h('section', {}, h('h3', {}, `Base: ${c.base.name}`), systemList(c.base.system), h('h3', {}, `Other: ${c.other.name}`), systemList(c.other.system)),
    );
    showSvg(document.getElementById('compare-chart'), `/v1/compare?base=${enc(params.get('base'))}&other=${enc(params.get('other'))}&format=svg`);
  } catch (err) {
    out.append(errorBox(err));
  }
}

// ---------- page: hosts ----------

async function hostsPage(signal) {
  const main = $main();
  const sec = h('section', { id: 'hosts' });
  main.replaceChildren(h('h1', {}, 'Worker hosts'), sec);
  try {
    const d = await getJson('/v1/hosts', { signal });
    if (!d.items?.length) return void sec.append(h('p', { class: 'muted' }, 'No worker host has sent a heartbeat recently.'));
    sec.append(h('table', {},
      h('thead', {}, h('tr', {}, ['host', 'pool', 'kvm', 'docker', 'root', 'cores', 'memory', 'heartbeat', 'running'].map((c) => h('th', { class: 'text' }, c)))),
      h('tbody', {}, d.items.map((x) => h('tr', {},
        h('td', {}, x.id), h('td', { class: 'text' }, x.pool), h('td', { class: 'text' }, x.capabilities?.kvm ? 'yes' : 'no'),
        h('td', { class: 'text' }, x.capabilities?.docker ? 'yes' : 'no'), h('td', { class: 'text' }, x.capabilities?.root ? 'yes' : 'no'),
        h('td', {}, x.capabilities?.cores ?? '-'), h('td', {}, x.capabilities?.memoryMiB ? `${x.capabilities.memoryMiB} MiB` : '-'),
        h('td', { class: 'text' }, when(x.heartbeatAt)), h('td', { class: 'text' }, x.current ? h('a', { href: `#/e/${x.current}` }, x.current) : 'idle')))),
    ));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) sec.append(h('p', { class: 'muted' }, 'The host registry is not available on this API.'));
    else sec.append(errorBox(err));
  }
}

// ---------- routing ----------

async function route() {
  page.abort();
  page = new AbortController();
  const signal = page.signal;
  const [path, query] = (location.hash.slice(1) || '/').split('?');
  const params = new URLSearchParams(query || '');
  try {
    const m = /^\/e\/([a-z0-9]+)$/.exec(path);
    if (m) await experimentPage(m[1], signal);
    else if (path === '/compare') await comparePage(params, signal);
    else if (path === '/hosts') await hostsPage(signal);
    else if (path === '/series') await seriesListPage(signal);
    else if (/^\/s\/[^/]+$/.test(path)) await seriesPage(decodeURIComponent(path.slice(3)), params, signal);
    else await listPage(signal);
  } catch (err) {
    if (signal.aborted) return;
    $main().replaceChildren(errorBox(err));
  }
}

document.getElementById('signout').hidden = !token;
document.getElementById('signout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  token = '';
  document.getElementById('signout').hidden = true;
  route();
});
window.addEventListener('hashchange', route);
route();
