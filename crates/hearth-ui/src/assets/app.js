// Hearth's local profile page. No framework, no external assets: the agent
// serves this file from its own binary.
//
// Everything shown comes from the agent's JSON API (see server.rs). Names of
// processes, pods and functions come from the profiled machine and may hold
// anything, so they are only ever set as text, never as HTML.
'use strict';

(() => {
  const FRAME_H = 18;
  const REFRESH_MS = 5000;

  const state = {
    sel: 'all',
    selLabel: 'Everything',
    // {last: seconds} (live), {} (all kept, live) or {from, to} (ms, fixed)
    range: {},
    compare: false,
    base: null, // {from, to} in ms
    dragTarget: 'range',
    tab: 'flame',
    search: '',
    zoomPath: [],
    overview: null,
    flame: null,
    top: null,
    topSort: 'self',
    firstFlame: false,
    seq: 0,
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const pct = (x) => (x * 100).toFixed(x >= 0.1 ? 1 : 2) + '%';
  const clock = (ms) => new Date(ms).toLocaleTimeString();

  function isLive() {
    return state.range.from === undefined;
  }

  function addRange(p, r, prefix) {
    if (r.last !== undefined) p.set(prefix + 'last', String(r.last));
    if (r.from !== undefined) p.set(prefix + 'from', String(Math.floor(r.from)));
    if (r.to !== undefined) p.set(prefix + 'to', String(Math.ceil(r.to)));
  }

  function params() {
    const p = new URLSearchParams();
    p.set('sel', state.sel);
    addRange(p, state.range, '');
    return p;
  }

  async function getJSON(path, p) {
    const res = await fetch(path + '?' + p.toString());
    if (!res.ok) throw new Error(path + ': ' + (await res.text()).trim());
    return res.json();
  }

  function setStatus(text) {
    $('status').textContent = text;
  }

  // ---- the time range ---------------------------------------------------

  // The range in ms that the current state stands for, given the overview.
  function resolveRange(r) {
    const o = state.overview;
    if (!o) return null;
    if (r.from !== undefined) return { from: r.from, to: r.to };
    if (r.last !== undefined) return { from: o.newest_ms - r.last * 1000, to: o.newest_ms };
    return { from: o.oldest_ms, to: o.newest_ms };
  }

  function describeRange() {
    const r = resolveRange(state.range);
    let text = '';
    if (r) {
      text = isLive() ? (state.range.last ? 'last ' + Math.round(state.range.last / 60) + ' min' : 'all kept') + ' (live)'
        : clock(r.from) + ' – ' + clock(r.to);
      if (state.compare && state.base) {
        text = 'baseline ' + clock(state.base.from) + ' – ' + clock(state.base.to) + '  vs  ' + text;
      }
    }
    $('range-text').textContent = text;
  }

  function drawTimeline() {
    const svg = $('timeline');
    const o = state.overview;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (!o || o.timeline.length === 0) return;
    const W = svg.clientWidth || 800;
    const H = 64;
    const t0 = o.oldest_ms;
    const span = Math.max(1, o.newest_ms - t0);
    const x = (t) => ((t - t0) / span) * W;
    const max = Math.max(1, ...o.timeline.map((p) => p.samples));
    const ns = 'http://www.w3.org/2000/svg';
    const rect = (cls, x0, x1, y, h) => {
      const r = document.createElementNS(ns, 'rect');
      r.setAttribute('class', cls);
      r.setAttribute('x', String(x0));
      r.setAttribute('width', String(Math.max(1, x1 - x0)));
      r.setAttribute('y', String(y));
      r.setAttribute('height', String(h));
      svg.appendChild(r);
      return r;
    };
    for (const p of o.timeline) {
      const h = (p.samples / max) * (H - 4);
      rect('bar', x(p.start_ms), x(p.end_ms) - 0.5, H - h, h);
      if (state.sel !== 'all' && p.selected > 0) {
        const hs = (p.selected / max) * (H - 4);
        rect('bar-sel', x(p.start_ms), x(p.end_ms) - 0.5, H - hs, hs);
      }
    }
    const r = resolveRange(state.range);
    if (r) rect('range', x(Math.max(t0, r.from)), x(Math.min(o.newest_ms, r.to)), 0.5, H - 1);
    if (state.compare && state.base) {
      rect('base', x(Math.max(t0, state.base.from)), x(Math.min(o.newest_ms, state.base.to)), 0.5, H - 1);
    }
  }

  function setupTimelineDrag() {
    const svg = $('timeline');
    let start = null;
    let dragRect = null;
    const toMs = (px) => {
      const o = state.overview;
      const W = svg.clientWidth || 800;
      return o.oldest_ms + (Math.min(Math.max(px, 0), W) / W) * (o.newest_ms - o.oldest_ms);
    };
    svg.addEventListener('mousedown', (e) => {
      if (!state.overview) return;
      start = e.offsetX;
      dragRect = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
      dragRect.setAttribute('class', 'drag');
      dragRect.setAttribute('y', '0');
      dragRect.setAttribute('height', '64');
      svg.appendChild(dragRect);
    });
    svg.addEventListener('mousemove', (e) => {
      if (start === null) return;
      dragRect.setAttribute('x', String(Math.min(start, e.offsetX)));
      dragRect.setAttribute('width', String(Math.abs(e.offsetX - start)));
    });
    const finish = (e) => {
      if (start === null) return;
      const a = Math.min(start, e.offsetX);
      const b = Math.max(start, e.offsetX);
      start = null;
      if (b - a < 3) {
        drawTimeline();
        return;
      }
      const r = { from: toMs(a), to: toMs(b) };
      if (state.compare && state.dragTarget === 'base') {
        state.base = r;
      } else {
        state.range = r;
        markRangeButtons();
      }
      refreshAll();
    };
    svg.addEventListener('mouseup', finish);
    svg.addEventListener('mouseleave', (e) => {
      if (start !== null) finish(e);
    });
  }

  function markRangeButtons() {
    for (const b of document.querySelectorAll('.range-buttons button')) {
      const v = b.dataset.last;
      const active = isLive() && (v === 'all' ? state.range.last === undefined : Number(v) === state.range.last);
      b.classList.toggle('active', active);
    }
  }

  // A baseline of the same length just before the range, or, when there is
  // no room for it, the first half of what is kept against the second.
  function defaultBase() {
    const o = state.overview;
    const r = resolveRange(state.range);
    if (!o || !r) return;
    const len = r.to - r.from;
    if (r.from - len >= o.oldest_ms) {
      state.base = { from: r.from - len, to: r.from };
    } else {
      const mid = (o.oldest_ms + o.newest_ms) / 2;
      state.base = { from: o.oldest_ms, to: mid };
      state.range = { from: mid, to: o.newest_ms };
      markRangeButtons();
    }
  }

  // ---- the list of what uses CPU ------------------------------------------

  function renderRows() {
    const o = state.overview;
    const tbody = $('rows').tBodies[0];
    tbody.textContent = '';
    if (!o) return;
    const filter = $('filter').value.trim().toLowerCase();
    const all = { key: 'all', kind: 'all', label: 'Everything', depth: 0, samples: o.total_samples, share: o.total_samples ? 1 : 0 };
    for (const row of [all, ...o.rows]) {
      if (filter && row.key !== 'all' && !row.label.toLowerCase().includes(filter)) continue;
      const tr = el('tr');
      tr.dataset.key = row.key;
      tr.dataset.kind = row.kind;
      tr.dataset.label = row.label;
      if (row.key === state.sel) tr.classList.add('selected');
      const what = el('td', 'what');
      what.style.paddingLeft = 6 + row.depth * 16 + 'px';
      if (row.kind !== 'all') what.appendChild(el('span', 'kind', row.kind));
      what.appendChild(el('span', 'label', row.label));
      let detail = '';
      if (row.kind === 'process') detail = row.pid != null ? ' · pid ' + row.pid : ' · ' + row.processes + ' pids';
      if (detail) what.appendChild(el('span', 'muted', detail));
      what.title = row.label + detail + ' — ' + row.samples + ' samples';
      const share = el('td', 'num share');
      const bar = el('span', 'bar');
      bar.style.width = (row.share * 100).toFixed(2) + '%';
      share.appendChild(bar);
      share.appendChild(el('span', 'val', pct(row.share)));
      tr.appendChild(what);
      tr.appendChild(share);
      tr.addEventListener('click', () => select(row.key, row.key === 'all' ? 'Everything' : row.kind + ' ' + row.label));
      tbody.appendChild(tr);
    }
  }

  function select(key, label) {
    state.sel = key;
    state.selLabel = label;
    state.zoomPath = [];
    refreshAll();
  }

  // ---- flame graph ----------------------------------------------------------

  function searchMatcher() {
    const q = state.search;
    if (!q) return null;
    const m = /^\/(.+)\/([i]*)$/.exec(q);
    if (m) {
      try {
        const re = new RegExp(m[1], m[2]);
        return (s) => re.test(s);
      } catch (_) {
        return null;
      }
    }
    const low = q.toLowerCase();
    return (s) => s.toLowerCase().includes(low);
  }

  function hashHue(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) | 0;
    return Math.abs(h);
  }

  function frameColor(f, node, name, delta, deltaScale) {
    if (f.base_total > 0 || (state.compare && f.total > 0)) {
      const i = Math.min(1, Math.abs(delta) / deltaScale);
      const c = Math.round(245 - 175 * i);
      return delta >= 0 ? `rgb(245,${c},${c})` : `rgb(${c},${c},245)`;
    }
    switch (node.k) {
      case 'root':
        return 'hsl(30, 8%, 82%)';
      case 'group':
        return 'hsl(200, 30%, 80%)';
      case 'kernel':
        return `hsl(${28 + (hashHue(name) % 12)}, 85%, ${62 + ((hashHue(name) >> 6) % 10)}%)`;
      default:
        return `hsl(${hashHue(name) % 50}, 78%, ${60 + ((hashHue(name) >> 6) % 12)}%)`;
    }
  }

  // Width of a node as a share of the root: the comparison's share, or in a
  // differential graph the mean of both ranges' shares (so frames that only
  // the baseline has still show).
  function shareOf(f, node) {
    if (f.base_total > 0 && f.total > 0) return (node.v / f.total + (node.b || 0) / f.base_total) / 2;
    if (f.base_total > 0) return (node.b || 0) / f.base_total;
    return f.total ? node.v / f.total : 0;
  }

  function deltaOf(f, node) {
    const a = f.base_total ? (node.b || 0) / f.base_total : 0;
    const b = f.total ? node.v / f.total : 0;
    return b - a;
  }

  let rendered = [];

  function renderFlame() {
    const f = state.flame;
    const box = $('flame');
    box.textContent = '';
    rendered = [];
    box.dataset.sel = state.sel;
    const legend = $('legend');
    legend.textContent = '';
    if (!f || f.total + f.base_total === 0) {
      box.style.height = 'auto';
      box.appendChild(el('p', 'muted', f ? 'No samples for this selection in this time range.' : 'Loading…'));
      $('match-info').textContent = '';
      box.dataset.state = f ? 'empty' : 'loading';
      return;
    }
    // Follow the zoom path as far as the current graph still has it.
    const name = (n) => f.names[n.n];
    const chain = [f.root];
    for (const step of state.zoomPath) {
      const cur = chain[chain.length - 1];
      const next = (cur.c || []).find((c) => name(c) === step);
      if (!next) break;
      chain.push(next);
    }
    state.zoomPath = chain.slice(1).map(name);
    $('reset-zoom').disabled = chain.length === 1;
    const zoom = chain[chain.length - 1];
    const zoomShare = shareOf(f, zoom) || 1;
    const W = box.clientWidth || 1000;
    const match = searchMatcher();
    let deltaScale = 0.0001;
    if (f.base_total > 0) {
      const walkDelta = (n) => {
        deltaScale = Math.max(deltaScale, Math.abs(deltaOf(f, n)));
        for (const c of n.c || []) walkDelta(c);
      };
      walkDelta(zoom);
    }
    const frag = document.createDocumentFragment();
    let maxDepth = 0;
    const add = (node, depth, x, w, path, ancestor) => {
      const nm = name(node);
      const d = el('div', 'frame');
      d.style.left = (x * 100).toFixed(4) + '%';
      d.style.width = (w * 100).toFixed(4) + '%';
      d.style.top = depth * FRAME_H + 'px';
      d.style.background = frameColor(f, node, nm, deltaOf(f, node), deltaScale);
      if (w * W > 24) d.textContent = nm;
      d.dataset.name = nm;
      d.dataset.i = String(rendered.length);
      if (ancestor) d.classList.add('dim');
      if (match && node.k !== 'root' && match(nm)) d.classList.add('match');
      rendered.push({ node, path, ancestor });
      frag.appendChild(d);
      maxDepth = Math.max(maxDepth, depth);
    };
    chain.forEach((node, depth) => add(node, depth, 0, 1, state.zoomPath.slice(0, depth), node !== zoom));
    const minW = 0.5 / W;
    const walk = (node, depth, x0, path) => {
      let x = x0;
      for (const c of node.c || []) {
        const w = shareOf(f, c) / zoomShare;
        if (w >= minW) {
          const p = path.concat([name(c)]);
          add(c, depth, x, w, p, false);
          walk(c, depth + 1, x, p);
        }
        x += w;
      }
    };
    walk(zoom, chain.length, 0, state.zoomPath.slice());
    box.appendChild(frag);
    box.style.height = (maxDepth + 1) * FRAME_H + 'px';
    box.dataset.state = 'ready';
    box.dataset.frames = String(rendered.length);
    updateMatchInfo();
    if (f.base_total > 0) {
      legend.textContent = 'Differential: width is the mean of both ranges\u2019 shares; red grew, blue shrank in the range against the baseline ('
        + f.base_total + ' baseline samples, ' + f.total + ' in the range).';
    } else {
      legend.textContent = f.total + ' samples' + (f.pruned ? ', of which ' + f.pruned + ' in frames too small to show' : '')
        + '. Click a frame to zoom, hover for details.';
    }
    if (!state.firstFlame) {
      state.firstFlame = true;
      performance.mark('hearth:first-flame');
      document.body.dataset.firstFlame = 'done';
    }
  }

  // Share of the selection's samples under frames that match the search,
  // counting nested matches once.
  function updateMatchInfo() {
    const f = state.flame;
    const match = searchMatcher();
    const info = $('match-info');
    const box = $('flame');
    if (!match || !f) {
      info.textContent = state.search && !match ? 'bad regex' : '';
      box.dataset.matches = '0';
      return;
    }
    let covered = 0;
    let frames = 0;
    const walk = (n, inside) => {
      const hit = n.k !== 'root' && match(f.names[n.n]);
      if (hit) frames++;
      if (hit && !inside) covered += shareOf(f, n);
      for (const c of n.c || []) walk(c, inside || hit);
    };
    walk(f.root, false);
    box.dataset.matches = String(frames);
    info.textContent = frames ? 'Matched ' + pct(covered) + ' in ' + frames + (frames === 1 ? ' frame' : ' frames') : 'No match';
  }

  function setupFlameEvents() {
    const box = $('flame');
    const tip = $('tooltip');
    box.addEventListener('mousemove', (e) => {
      const t = e.target.closest('.frame');
      if (!t) {
        tip.hidden = true;
        return;
      }
      const r = rendered[Number(t.dataset.i)];
      const f = state.flame;
      if (!r || !f) return;
      const n = r.node;
      const lines = [f.names[n.n]];
      if (f.base_total > 0) {
        const a = (n.b || 0) / f.base_total;
        const b = f.total ? n.v / f.total : 0;
        lines.push('baseline ' + pct(a) + ' (' + (n.b || 0) + ')  →  range ' + pct(b) + ' (' + n.v + ')');
        lines.push('change ' + (b >= a ? '+' : '') + ((b - a) * 100).toFixed(2) + ' points');
      } else {
        const zoom = rendered.find((x) => !x.ancestor && x.path.length === state.zoomPath.length);
        lines.push(n.v + ' samples, ' + pct(f.total ? n.v / f.total : 0) + ' of the selection');
        if (zoom && zoom.node !== f.root && zoom.node.v) lines.push(pct(n.v / zoom.node.v) + ' of the zoomed frame');
        if (n.s) lines.push('self ' + n.s + ' (' + pct(n.s / f.total) + ')');
      }
      if (n.k === 'kernel') lines.push('kernel');
      tip.textContent = lines.join('\n');
      tip.hidden = false;
      const x = Math.min(e.clientX + 12, window.innerWidth - tip.offsetWidth - 8);
      tip.style.left = x + 'px';
      tip.style.top = e.clientY + 14 + 'px';
    });
    box.addEventListener('mouseleave', () => {
      tip.hidden = true;
    });
    box.addEventListener('click', (e) => {
      const t = e.target.closest('.frame');
      if (!t) return;
      const r = rendered[Number(t.dataset.i)];
      if (!r) return;
      state.zoomPath = r.path;
      renderFlame();
    });
    $('reset-zoom').addEventListener('click', () => {
      state.zoomPath = [];
      renderFlame();
    });
  }

  // ---- top functions --------------------------------------------------------

  function renderTop() {
    const tbody = $('top').tBodies[0];
    tbody.textContent = '';
    const t = state.top;
    if (!t) return;
    const rows = t.functions.slice();
    if (state.topSort === 'total') rows.sort((a, b) => b.total_samples - a.total_samples);
    if (state.topSort === 'name') rows.sort((a, b) => a.name.localeCompare(b.name));
    const match = searchMatcher();
    for (const fn of rows) {
      const tr = el('tr');
      tr.dataset.name = fn.name;
      const name = el('td', '', fn.name);
      if (fn.kind === 'kernel') name.appendChild(el('span', 'muted', ' [k]'));
      if (match && match(fn.name)) tr.classList.add('match-row');
      tr.appendChild(name);
      tr.appendChild(el('td', 'num', pct(fn.self_share) + ' (' + fn.self_samples + ')'));
      tr.appendChild(el('td', 'num', pct(fn.total_share) + ' (' + fn.total_samples + ')'));
      tr.addEventListener('click', () => {
        $('search').value = fn.name;
        state.search = fn.name;
        showTab('flame');
      });
      tbody.appendChild(tr);
    }
  }

  function showTab(tab) {
    state.tab = tab;
    for (const b of document.querySelectorAll('.tabs button')) b.classList.toggle('active', b.dataset.tab === tab);
    $('flame-pane').hidden = tab !== 'flame';
    $('top-pane').hidden = tab !== 'top';
    if (tab === 'flame') renderFlame();
    else renderTop();
  }

  // ---- data -----------------------------------------------------------------

  async function refreshOverview() {
    const p = params();
    state.overview = await getJSON('api/overview', p);
    const o = state.overview;
    $('host').textContent = o.host || '';
    document.title = 'Hearth' + (o.host ? ' — ' + o.host : '');
    const kept = o.timeline.length ? Math.round((o.newest_ms - o.oldest_ms) / 1000) : 0;
    setStatus(
      o.timeline.length
        ? 'updated ' + clock(o.newest_ms) + ' · ' + o.frequency_hz + ' Hz · ' + kept + ' s of ' + Math.round(o.retention_s / 60)
          + ' min kept · ' + (o.history_bytes / 1048576).toFixed(1) + ' MiB'
          + (o.lost_samples ? ' · ' + o.lost_samples + ' records lost' : '')
        : 'waiting for the first window…',
    );
    renderRows();
    drawTimeline();
    describeRange();
  }

  async function refreshView() {
    const seq = ++state.seq;
    const p = params();
    $('download').href = 'api/pprof?' + p.toString();
    $('selection-title').textContent = state.selLabel;
    let flame;
    let top;
    if (state.compare && state.base) {
      const q = params();
      addRange(q, state.base, 'base_');
      [flame, top] = await Promise.all([getJSON('api/diff', q), getJSON('api/top', p)]);
    } else {
      [flame, top] = await Promise.all([getJSON('api/flame', p), getJSON('api/top', p)]);
    }
    if (seq !== state.seq) return; // a newer request is under way
    state.flame = flame;
    state.top = top;
    if (state.tab === 'flame') renderFlame();
    else renderTop();
  }

  async function refreshAll() {
    try {
      await refreshOverview(); // draws the timeline and describes the range
      if (state.compare && !state.base) {
        defaultBase();
        describeRange();
        drawTimeline();
      }
      await refreshView();
    } catch (e) {
      setStatus('error: ' + e.message);
    }
  }

  function setupControls() {
    for (const b of document.querySelectorAll('.range-buttons button')) {
      b.addEventListener('click', () => {
        state.range = b.dataset.last === 'all' ? {} : { last: Number(b.dataset.last) };
        markRangeButtons();
        refreshAll();
      });
    }
    $('compare').addEventListener('change', (e) => {
      state.compare = e.target.checked;
      $('drag-target').hidden = !state.compare;
      state.base = null;
      refreshAll();
    });
    for (const r of document.querySelectorAll('input[name=drag]')) {
      r.addEventListener('change', () => {
        state.dragTarget = r.value;
      });
    }
    $('filter').addEventListener('input', renderRows);
    let timer = null;
    $('search').addEventListener('input', (e) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        state.search = e.target.value.trim();
        if (state.tab === 'flame') renderFlame();
        else renderTop();
      }, 120);
    });
    for (const b of document.querySelectorAll('.tabs button')) b.addEventListener('click', () => showTab(b.dataset.tab));
    for (const th of document.querySelectorAll('#top th[data-sort]')) {
      th.addEventListener('click', () => {
        state.topSort = th.dataset.sort;
        renderTop();
      });
    }
    window.addEventListener('resize', () => {
      drawTimeline();
      if (state.tab === 'flame') renderFlame();
    });
  }

  function start() {
    setupControls();
    setupTimelineDrag();
    setupFlameEvents();
    refreshAll();
    setInterval(() => {
      if (document.hidden) return;
      if (isLive()) refreshAll();
      else refreshOverview().catch((e) => setStatus('error: ' + e.message));
    }, REFRESH_MS);
  }

  start();
})();
