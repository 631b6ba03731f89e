// The coordinator's dashboard: runs, each run's norm history (the server
// downsamples it to buckets), its summary, and live rounds as they finalize.
// Reads only the coordinator's HTTP API (/api/v1/...) with the tab's token.
'use strict';

(function () {
  const TOKEN_KEY = 'gradnorm.token';
  // Bucket count asked of the server: about one per 2 pixels of chart.
  const MAX_BUCKETS = 1000;
  // Live rounds re-query the chart at most this often (ms), and the summary
  // (which reads every round of the range with its participants) at most
  // every SUMMARY_REFRESH_MS: a run reporting a thousand rounds a second
  // costs the coordinator a few queries a second, not one per round.
  const REFRESH_MS = 500;
  const SUMMARY_REFRESH_MS = 5000;

  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    runs: [],
    run: null,          // the selected run's id
    info: null,         // its RunInfo
    compare: '',        // the run overlaid, '' for none
    from: 0,
    to: 0,              // 0: up to the last step (follows live rounds)
    query: null,        // {from, to, buckets} of the history on the chart
    history: null,      // GetHistoryResponse on the chart
    compareHistory: null,
    summary: null,
    compareSummary: null,
    summaryAt: 0,       // when the summary was fetched (ms, performance.now)
    lastStep: null,     // the last step the live stream delivered
    stream: null,       // AbortController of the live stream
    refreshTimer: null,
    chart: null,
    error: null,
  };
  // For tests and the browser console.
  window.gradnormDashboard = state;

  // ---- API ----------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function headers() {
    return state.token ? {Authorization: 'Bearer ' + state.token} : {};
  }

  async function api(path) {
    const response = await fetch(path, {headers: headers(), cache: 'no-store'});
    const text = await response.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, body && body.code,
                         (body && body.message) || text || response.statusText);
    }
    return body;
  }

  const runPath = (run) => '/api/v1/runs/' + encodeURIComponent(run);

  function rangeQuery(extra) {
    const q = new URLSearchParams({from: state.from, to: state.to});
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return q.toString();
  }

  // A JSON number, or NaN/Infinity spelled as strings: a finite number or
  // null (a gap in the chart).
  function finite(v) {
    const n = typeof v === 'number' ? v : Number(v);
    return Number.isFinite(n) ? n : null;
  }

  function fmt(v) {
    if (v === null || v === undefined) return '\u2014';
    const n = typeof v === 'number' ? v : Number(v);
    if (Number.isNaN(n)) return String(v);
    if (!Number.isFinite(n)) return n > 0 ? '+Inf' : '-Inf';
    return Math.abs(n) >= 1e5 || (n !== 0 && Math.abs(n) < 1e-3)
        ? n.toExponential(3) : String(Number(n.toPrecision(5)));
  }

  // ---- errors and the token ----------------------------------------------

  function showError(error) {
    state.error = error;
    const box = $('error');
    if (!error) {
      box.hidden = true;
      box.textContent = '';
      return;
    }
    const refused = error.status === 401 || error.status === 403;
    box.textContent = refused
        ? 'The coordinator refused the token (' + (error.code || error.status) +
              '): ' + error.message
        : (error.code ? error.code + ': ' : '') + error.message;
    box.hidden = false;
    if (refused) {
      // No chart is better than an empty one that looks like "no data".
      $('main').hidden = true;
      askToken();
    }
  }

  function askToken() {
    $('token-form').hidden = false;
    $('token').value = '';
    $('token').focus();
  }

  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    state.token = $('token').value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $('token-form').hidden = true;
    start();
  });
  $('change-token').addEventListener('click', askToken);

  // ---- runs ---------------------------------------------------------------

  async function loadRuns() {
    const list = await api('/api/v1/runs');
    const runs = list.runs || [];
    // The last norm of each run: its last round.
    await Promise.all(runs.map(async (run) => {
      run.lastNorm = null;
      if (Number(run.rounds) > 0) {
        const page = await api(runPath(run.run_id) + '/rounds?from=' +
                               run.last_step + '&limit=1');
        if (page.rounds && page.rounds.length) {
          run.lastNorm = page.rounds[0].total_norm;
        }
      }
    }));
    state.runs = runs;
    renderRuns();
  }

  function runState(run) {
    if (run.finished) return 'finished';
    return Number(run.open_rounds) > 0 ? 'training' : 'active';
  }

  function renderRuns() {
    const body = $('runs').tBodies[0];
    body.replaceChildren();
    for (const run of state.runs) {
      const row = body.insertRow();
      row.dataset.run = run.run_id;
      if (run.run_id === state.run) row.classList.add('selected');
      const cells = [run.run_id, runState(run),
                     Number(run.rounds) > 0 ? String(run.last_step) : '\u2014',
                     fmt(run.lastNorm)];
      cells.forEach((text, i) => {
        const cell = row.insertCell();
        cell.textContent = text;
        if (i >= 2) cell.className = 'num';
      });
      row.addEventListener('click', () => selectRun(run.run_id));
    }
    $('no-runs').hidden = state.runs.length > 0;
    const compare = $('compare');
    const chosen = state.compare;
    compare.replaceChildren(new Option('(none)', ''));
    for (const run of state.runs) {
      if (run.run_id !== state.run) compare.add(new Option(run.run_id, run.run_id));
    }
    compare.value = chosen;
  }

  function updateRunRow(round) {
    const run = state.runs.find((r) => r.run_id === round.run_id);
    if (!run) return;
    if (!(Number(run.rounds) > 0) || Number(round.step) >= Number(run.last_step)) {
      run.last_step = round.step;
      run.lastNorm = round.total_norm;
    }
    run.rounds = Number(run.rounds || 0) + 1;
    // Drawn with the next refresh, not once per round.
  }

  // ---- one run --------------------------------------------------------------

  async function selectRun(run) {
    state.run = run;
    state.compare = state.compare === run ? '' : state.compare;
    state.from = 0;
    state.to = 0;
    history.replaceState(null, '', '#run=' + encodeURIComponent(run));
    $('run-title').textContent = run;
    $('run-view').hidden = false;
    renderRuns();
    await loadView();
    openStream();
  }

  function bucketCount() {
    const width = $('chart').parentElement.clientWidth || 800;
    return Math.max(50, Math.min(MAX_BUCKETS, Math.floor(width / 2)));
  }

  // Re-queries the chart, and the summary unless `live` and it is recent.
  async function loadView(live) {
    if (!state.run) return;
    const run = state.run;
    const buckets = bucketCount();
    const query = {from: state.from, to: state.to, buckets};
    const withSummary = !live || performance.now() - state.summaryAt > SUMMARY_REFRESH_MS;
    try {
      const [info, historyResponse, summary, compareHistory, compareSummary] =
          await Promise.all([
            api(runPath(run)),
            api(runPath(run) + '/history?' + rangeQuery({buckets})),
            withSummary ? api(runPath(run) + '/summary?' + rangeQuery({top: 5}))
                        : state.summary,
            state.compare
                ? api(runPath(state.compare) + '/history?' + rangeQuery({buckets}))
                : null,
            state.compare && withSummary
                ? api(runPath(state.compare) + '/summary?' + rangeQuery({top: 5}))
                : state.compareSummary,
          ]);
      if (run !== state.run) return;  // Another run was chosen meanwhile.
      state.info = info.run;
      state.query = query;
      state.history = historyResponse;
      state.compareHistory = compareHistory;
      state.summary = summary;
      state.compareSummary = state.compare ? compareSummary : null;
      if (withSummary) state.summaryAt = performance.now();
      if (state.lastStep === null && Number(info.run.rounds) > 0) {
        state.lastStep = Number(info.run.last_step);
      }
      showError(null);
      drawChart();
      renderSummary(summary, state.compareSummary);
      $('from').value = state.from || '';
      $('to').value = state.to || '';
    } catch (error) {
      showError(error);
    }
  }

  // ---- the chart ------------------------------------------------------------

  const COLORS = {
    band: 'rgba(60, 110, 230, 0.18)',
    mean: 'rgb(40, 80, 200)',
    maxNorm: 'rgb(30, 30, 30)',
    threshold: 'rgb(230, 140, 20)',
    clip: 'rgb(230, 140, 20)',
    spike: 'rgb(200, 30, 30)',
    nonfinite: 'rgb(130, 30, 160)',
    compareBand: 'rgba(20, 160, 120, 0.15)',
    compareMean: 'rgb(20, 140, 100)',
  };

  function series(buckets, value) {
    return buckets.map((b) => ({x: Number(b.last_step), y: value(b), bucket: b}));
  }

  function datasets() {
    const buckets = (state.history && state.history.buckets) || [];
    const config = (state.info && state.info.config) || {};
    const finiteMax = buckets.map((b) => finite(b.max_norm)).filter((v) => v !== null);
    const top = finiteMax.length ? Math.max(...finiteMax) * 1.08 : 1;
    const first = buckets.length ? Number(buckets[0].first_step) : 0;
    const last = buckets.length ? Number(buckets[buckets.length - 1].last_step) : 0;
    const sets = [
      {label: 'min', data: series(buckets, (b) => finite(b.min_norm)),
       borderColor: COLORS.band, borderWidth: 1, pointRadius: 0, fill: false,
       spanGaps: false},
      {label: 'min\u2013max', data: series(buckets, (b) => finite(b.max_norm)),
       borderColor: COLORS.band, backgroundColor: COLORS.band, borderWidth: 1,
       pointRadius: 0, fill: '-1', spanGaps: false},
      {label: 'mean', data: series(buckets, (b) => finite(b.mean_norm)),
       borderColor: COLORS.mean, borderWidth: 1.5, pointRadius: 0, fill: false},
      {label: 'max_norm', data: [{x: first, y: finite(config.max_norm)},
                                 {x: last, y: finite(config.max_norm)}],
       borderColor: COLORS.maxNorm, borderDash: [6, 4], borderWidth: 1,
       pointRadius: 0, fill: false},
      {label: 'threshold in force',
       data: series(buckets, (b) => finite(b.effective_max_norm)),
       borderColor: COLORS.threshold, borderWidth: 1, pointRadius: 0,
       stepped: true, fill: false},
      {label: 'CLIP', type: 'scatter',
       data: series(buckets.filter((b) => Number(b.clipped) > 0),
                    (b) => finite(b.max_norm)),
       pointStyle: 'triangle', pointRadius: 4, borderColor: COLORS.clip,
       backgroundColor: COLORS.clip},
      {label: 'SKIP (spike)', type: 'scatter',
       data: series(buckets.filter((b) => Number(b.skipped_spike) > 0),
                    (b) => finite(b.max_norm)),
       pointStyle: 'rectRot', pointRadius: 6, borderColor: COLORS.spike,
       backgroundColor: COLORS.spike},
      {label: 'SKIP (NaN/Inf)', type: 'scatter',
       data: series(buckets.filter((b) => Number(b.skipped_nonfinite) > 0),
                    () => top),
       pointStyle: 'crossRot', pointRadius: 8, borderWidth: 3,
       borderColor: COLORS.nonfinite, backgroundColor: COLORS.nonfinite},
    ];
    if (state.compare && state.compareHistory) {
      const other = state.compareHistory.buckets || [];
      sets.push(
          {label: state.compare + ' min', data: series(other, (b) => finite(b.min_norm)),
           borderColor: COLORS.compareBand, borderWidth: 1, pointRadius: 0, fill: false},
          {label: state.compare + ' min\u2013max',
           data: series(other, (b) => finite(b.max_norm)),
           borderColor: COLORS.compareBand, backgroundColor: COLORS.compareBand,
           borderWidth: 1, pointRadius: 0, fill: '-1'},
          {label: state.compare + ' mean', data: series(other, (b) => finite(b.mean_norm)),
           borderColor: COLORS.compareMean, borderWidth: 1.5, pointRadius: 0,
           fill: false});
    }
    return sets;
  }

  function tooltipLabel(context) {
    const b = context.raw && context.raw.bucket;
    if (!b) return context.dataset.label + ': ' + fmt(context.raw.y);
    const steps = b.first_step === b.last_step
        ? 'step ' + b.first_step : 'steps ' + b.first_step + '\u2013' + b.last_step;
    return context.dataset.label + ' \u00b7 ' + steps + ': mean ' + fmt(b.mean_norm) +
        ', min ' + fmt(b.min_norm) + ', max ' + fmt(b.max_norm) +
        ', clipped ' + b.clipped + ', skipped ' + b.skipped;
  }

  function drawChart() {
    const sets = datasets();
    const logScale = $('log-scale').checked;
    if (state.chart) {
      state.chart.data.datasets = sets;
      state.chart.options.scales.y.type = logScale ? 'logarithmic' : 'linear';
      state.chart.update('none');
      return;
    }
    state.chart = new Chart($('chart'), {
      type: 'line',
      data: {datasets: sets},
      options: {
        animation: false,
        maintainAspectRatio: false,
        parsing: true,
        normalized: true,
        interaction: {mode: 'nearest', intersect: false},
        scales: {
          x: {type: 'linear', title: {display: true, text: 'step'}},
          y: {type: logScale ? 'logarithmic' : 'linear',
              title: {display: true, text: 'total gradient norm'}},
        },
        plugins: {
          legend: {position: 'bottom',
                   labels: {filter: (item) => !/ ?min$/.test(item.text)}},
          tooltip: {callbacks: {label: tooltipLabel}},
        },
      },
    });
  }

  // Drag to zoom: the server re-buckets the chosen step range.
  (function dragToZoom() {
    const canvas = $('chart');
    const box = $('selection');
    let startX = null;
    const stepAt = (x) => state.chart.scales.x.getValueForPixel(x);
    canvas.addEventListener('mousedown', (event) => {
      if (!state.chart) return;
      startX = event.offsetX;
      box.style.left = startX + 'px';
      box.style.width = '0px';
      box.hidden = false;
    });
    canvas.addEventListener('mousemove', (event) => {
      if (startX === null) return;
      box.style.left = Math.min(startX, event.offsetX) + 'px';
      box.style.width = Math.abs(event.offsetX - startX) + 'px';
    });
    window.addEventListener('mouseup', (event) => {
      if (startX === null) return;
      const endX = event.target === canvas ? event.offsetX : startX;
      box.hidden = true;
      const a = stepAt(Math.min(startX, endX));
      const b = stepAt(Math.max(startX, endX));
      startX = null;
      if (!(b - a >= 1)) return;
      zoomTo(Math.max(0, Math.floor(a)), Math.max(0, Math.ceil(b)));
    });
    canvas.addEventListener('dblclick', () => zoomTo(0, 0));
  })();

  function zoomTo(from, to) {
    state.from = from;
    state.to = to;
    loadView();
  }

  $('zoom').addEventListener('click', () => {
    const from = Number($('from').value || 0);
    const to = Number($('to').value || 0);
    if (to !== 0 && to < from) {
      showError({message: 'The step range is empty: "to" (' + to +
                          ') is before "from" (' + from + ').'});
      return;
    }
    zoomTo(from, to);
  });
  $('reset').addEventListener('click', () => zoomTo(0, 0));
  $('compare').addEventListener('change', () => {
    state.compare = $('compare').value;
    loadView();
  });
  $('log-scale').addEventListener('change', drawChart);

  // ---- summary ----------------------------------------------------------

  function renderSummary(summary, compareSummary) {
    const root = $('summary');
    root.replaceChildren();
    const table = (title, head, rows) => {
      const wrap = document.createElement('div');
      const h = document.createElement('h3');
      h.textContent = title;
      wrap.append(h);
      const t = document.createElement('table');
      const hr = t.createTHead().insertRow();
      for (const text of head) {
        const th = document.createElement('th');
        th.textContent = text;
        hr.append(th);
      }
      const body = t.createTBody();
      for (const row of rows) {
        const tr = body.insertRow();
        for (const text of row) tr.insertCell().textContent = text;
      }
      wrap.append(t);
      root.append(wrap);
      return t;
    };
    const runs = [[state.run, summary]];
    if (compareSummary) runs.push([state.compare, compareSummary]);
    const pct = (f) => (Number(f) * 100).toFixed(2) + ' %';
    const skippedText = (s) => String(s.skipped_count) +
        ((s.skipped_steps || []).length
             ? ' (steps ' + s.skipped_steps.slice(0, 8).join(', ') +
                   (s.skipped_steps.length > 8 ? ', \u2026' : '') + ')'
             : '');
    const spread = Math.max(0, ...((state.history && state.history.buckets) || [])
        .map((b) => Number(b.max_arrival_spread_seconds) || 0));
    const rows = [
      ['rounds', ...runs.map(([, s]) => String(s.rounds))],
      ['p50', ...runs.map(([, s]) => fmt(s.p50_norm))],
      ['p90', ...runs.map(([, s]) => fmt(s.p90_norm))],
      ['p99', ...runs.map(([, s]) => fmt(s.p99_norm))],
      ['min', ...runs.map(([, s]) => fmt(s.min_norm))],
      ['max', ...runs.map(([, s]) => fmt(s.max_norm))],
      ['mean', ...runs.map(([, s]) => fmt(s.mean_norm))],
      ['clipped', ...runs.map(([, s]) => pct(s.clipped_fraction))],
      ['skipped', ...runs.map(([, s]) => skippedText(s))],
    ];
    table('Summary of the steps shown', ['', ...runs.map(([r]) => r)], rows).id =
        'summary-table';
    table('Slowest participants of ' + state.run +
              ' (largest arrival spread ' + fmt(spread) + ' s)',
          ['participant', 'times last', 'mean lag (s)', 'max lag (s)'],
          (summary.slowest_participants || []).map((p) => [
            String(p.participant), String(p.times_slowest),
            fmt(p.mean_lag_seconds), fmt(p.max_lag_seconds)])).id =
        'slowest-table';
  }

  // ---- live rounds ----------------------------------------------------------

  // Server-Sent Events read with fetch (EventSource cannot send the token).
  async function openStream() {
    if (state.stream) state.stream.abort();
    const run = state.run;
    const controller = new AbortController();
    state.stream = controller;
    const from = state.lastStep === null ? 0 : state.lastStep + 1;
    $('live').hidden = true;
    try {
      const response = await fetch(
          runPath(run) + '/events?from=' + from,
          {headers: headers(), signal: controller.signal, cache: 'no-store'});
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new ApiError(response.status, body.code, body.message || response.statusText);
      }
      $('live').hidden = false;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (onEvent(run, block) === 'end') {
            controller.abort();
            $('live').hidden = true;
            return;
          }
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error instanceof ApiError) {
        showError(error);
        if (error.status === 401 || error.status === 403) return;
      }
    }
    $('live').hidden = true;
    // Dropped: reconnect where it left off, as EventSource would.
    if (state.stream === controller && state.run === run) {
      setTimeout(() => {
        if (state.stream === controller) openStream();
      }, 2000);
    }
  }

  function onEvent(run, block) {
    let event = 'message';
    let data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data += line.slice(5).trim();
    }
    if (event === 'round' && run === state.run) {
      const round = JSON.parse(data);
      state.lastStep = Math.max(state.lastStep === null ? -1 : state.lastStep,
                                Number(round.step));
      updateRunRow(round);
      scheduleRefresh();
      return 'round';
    }
    if (event === 'end') return 'end';
    return event;
  }

  function scheduleRefresh() {
    if (state.refreshTimer !== null) return;
    state.refreshTimer = setTimeout(() => {
      state.refreshTimer = null;
      renderRuns();
      // A view open at its end follows the run; the run list always does.
      if (state.to === 0) loadView(true);
    }, REFRESH_MS);
  }

  // ---- start ------------------------------------------------------------

  async function start() {
    $('coordinator').textContent = location.host;
    try {
      await loadRuns();
      showError(null);
      $('main').hidden = false;
      const wanted = new URLSearchParams(location.hash.slice(1)).get('run');
      if (wanted && state.runs.some((r) => r.run_id === wanted)) {
        selectRun(wanted);
      } else if (state.run) {
        loadView();
      }
    } catch (error) {
      showError(error);
    }
  }

  // The run list refreshes on its own; the selected run is live already.
  setInterval(() => {
    if (!$('main').hidden) loadRuns().catch(showError);
  }, 5000);

  if (state.token === null) {
    askToken();
  } else {
    start();
  }
})();
