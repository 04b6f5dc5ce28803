// crc's HTML report. Everything is built from the embedded model with DOM calls and text nodes: no value from
// a run is ever parsed as HTML. Views are drawn when selected, so large runs open fast.
"use strict";
(function () {
  const M = JSON.parse(document.getElementById("crc-data").textContent);
  const SVGNS = "http://www.w3.org/2000/svg";
  const MARK = { passed: "ok", failed: "FAIL", error: "ERROR", skipped: "skip" };

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }
  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "style") Object.assign(el.style, v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  function append(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      el.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
    }
  }

  function dur(ns) {
    if (ns === null || ns === undefined) return "?";
    const a = Math.abs(ns);
    if (a < 1e6) return (ns / 1e3).toFixed(0) + "µs";
    if (a < 1e9) return (ns / 1e6).toFixed(1) + "ms";
    return (ns / 1e9).toFixed(3) + "s";
  }
  const timed = (x) => x.t0 !== null && x.t1 !== null && x.t0 !== undefined && x.t1 !== undefined;
  const failed = (st) => st === "failed" || st === "error";

  // A message, with unified-diff lines coloured.
  function message(text, cls) {
    const pre = h("pre", { class: "msg " + (cls || "") });
    for (const line of String(text).split("\n")) {
      let c = null;
      if (/^\s*\+(?!\+\+)/.test(line)) c = "add";
      else if (/^\s*-(?!--)/.test(line)) c = "del";
      else if (/^\s*@@/.test(line)) c = "hunk";
      pre.appendChild(h("span", { class: c }, line + "\n"));
    }
    return pre;
  }
  function badge(st) {
    return h("span", { class: "badge " + st }, MARK[st] || st);
  }

  // ------------------------------------------------------------------------------------------ header, list
  function header() {
    const r = M.run, sm = r.summary;
    const top = document.getElementById("top");
    append(top, [
      h("h1", {}, "crc report"),
      h("span", { class: "run" }, "run " + r.id),
      h("span", { class: "counts" },
        h("span", { class: "n passed" }, sm.passed + " passed"),
        h("span", { class: "n failed" }, (sm.failed + sm.error) + " failed"),
        h("span", { class: "n skipped" }, sm.skipped + " skipped")),
      h("span", { class: "took" }, "in " + dur((r.t1 || 0) - (r.t0 || 0))),
      h("span", { class: "exit" }, "exit " + r.exit + (r.interrupted ? ", interrupted" : "")),
      r.source ? h("span", { class: "source" }, r.source) : null,
    ]);
  }

  let current = null;
  function list() {
    const ul = document.getElementById("tests");
    ul.appendChild(h("li", { class: "entry run-entry", "data-view": "run", tabindex: 0,
      onclick: () => show("run") }, "Run timeline ", h("small", {}, M.spans.length + " spans")));
    M.tests.forEach((t, i) => {
      ul.appendChild(h("li", { class: "entry test " + t.st, "data-view": String(i), "data-status": t.st,
        tabindex: 0, onclick: () => show(i), onkeydown: (e) => { if (e.key === "Enter") show(i); } },
        badge(t.st), h("span", { class: "name" }, h("small", {}, t.suite + " / "), t.name)));
    });
    const f = document.getElementById("filter"), sf = document.getElementById("status-filter");
    const apply = () => {
      const q = f.value.toLowerCase(), want = sf.value;
      for (const li of ul.querySelectorAll("li.test")) {
        const t = M.tests[+li.dataset.view];
        const okText = !q || (t.suite + " / " + t.name).toLowerCase().includes(q);
        const okStatus = !want || (want === "failed" ? failed(t.st) : t.st === want);
        li.hidden = !(okText && okStatus);
      }
    };
    f.addEventListener("input", apply);
    sf.addEventListener("change", apply);
  }

  function show(view) {
    current = view;
    for (const li of document.querySelectorAll("#tests li.entry"))
      li.classList.toggle("selected", li.dataset.view === String(view));
    const main = document.getElementById("main");
    main.replaceChildren(view === "run" ? runView() : testView(M.tests[view]));
    document.getElementById("inspector").hidden = true;
  }

  // ------------------------------------------------------------------------------------------ views
  function runView() {
    const steps = M.nodes.map((n, i) => i).filter((i) => M.nodes[i].k === "step");
    return h("div", { class: "view run-view" },
      h("h2", {}, "Run timeline"),
      h("p", { class: "hint" }, "Every span the run collected, grouped by service, with every step on the same axis. " +
        "Click a bar for its attributes."),
      waterfall(M.spans.map((_, i) => i), steps, []));
  }

  function testView(t) {
    const v = h("div", { class: "view test-view", "data-status": t.st });
    v.appendChild(h("h2", {}, badge(t.st), " ", h("span", { class: "suite" }, t.suite + " / "), t.name));
    v.appendChild(h("p", { class: "meta" }, t.loc ? t.loc + " · " : "", dur(Math.round(t.dur * 1e9))));
    if (t.fail.length) {
      v.appendChild(h("section", { class: "failures" }, h("h3", {}, "Failures"),
        t.fail.map((f) => message(f, "failure"))));
    }
    const steps = t.nodes.filter((i) => M.nodes[i].k === "step");
    v.appendChild(h("section", { class: "spans" }, h("h3", {}, "Spans ", h("small", {}, t.spans.length + " in this test's window")),
      waterfall(t.spans, steps, t.checks), checkList(t.checks)));
    if (t.dag) v.appendChild(h("section", { class: "dag" }, h("h3", {}, "DAG"), dag(t.dag)));
    v.appendChild(stepsSection(t));
    v.appendChild(servicesSection(t));
    return v;
  }

  function checkList(checks) {
    if (!checks.length) return h("p", { class: "hint" }, "No span expectations in this test.");
    return h("ul", { class: "checks" }, checks.map((c) => h("li", {
      class: "check " + (c.ok ? "ok" : "bad"), tabindex: 0,
      onclick: () => highlight([].concat(c.spans || [], c.before || [], c.after || [], c.outer || [], c.inner || [])),
    }, h("span", { class: "badge " + (c.ok ? "passed" : "failed") }, c.ok ? "ok" : "FAIL"), " ",
    h("code", {}, c.text), " ", h("small", {}, c.where), c.ok ? null : message(c.m, "failure"))));
  }

  function highlight(ids) {
    const want = new Set(ids.map(String));
    for (const b of document.querySelectorAll(".wf .bar.span"))
      b.classList.toggle("hl", want.has(b.dataset.span));
  }

  // ------------------------------------------------------------------------------------------ waterfall
  // The time range of some spans or nodes: [lo, hi], or null when none is timed.
  function range(items) {
    let lo = Infinity, hi = -Infinity;
    for (const [, x] of items) {
      if (!timed(x)) continue;
      lo = Math.min(lo, x.t0); hi = Math.max(hi, x.t1);
    }
    return isFinite(lo) ? [lo, Math.max(hi, lo + 1)] : null;
  }

  // Spans usually last milliseconds where steps last a second: the axis first fits the spans (steps are cut
  // at its edges), and a button fits everything.
  function waterfall(spanIds, stepIds, checks) {
    const spans = spanIds.map((i) => [i, M.spans[i]]);
    const steps = stepIds.map((i) => [i, M.nodes[i]]);
    const all = range([...spans, ...steps]) || [0, 1], onlySpans = range(spans);
    const wrap = h("div", { class: "wf-wrap" });
    let fit = onlySpans ? "spans" : "all";
    const draw = () => {
      const [lo, hi] = fit === "spans" && onlySpans ? onlySpans : all;
      const pad = fit === "spans" ? (hi - lo) * 0.02 : 0;
      const bar = h("div", { class: "wf-tools" }, onlySpans && steps.length ? [
        h("button", { class: fit === "spans" ? "on" : "", onclick: () => { fit = "spans"; draw(); } }, "fit spans"),
        h("button", { class: fit === "all" ? "on" : "", onclick: () => { fit = "all"; draw(); } }, "fit steps and spans")] : null);
      wrap.replaceChildren(bar, drawWaterfall(spans, steps, checks, lo - pad, hi + pad), legend());
    };
    draw();
    return wrap;
  }

  function drawWaterfall(spans, steps, checks, lo, hi) {
    const pct = (t) => ((t - lo) / (hi - lo)) * 100;
    const wf = h("div", { class: "wf" });
    const axis = h("div", { class: "row axis" }, h("div", { class: "lbl" }, dur(hi - lo) + " shown"));
    const track = h("div", { class: "track" });
    for (let k = 0; k <= 5; k++) {
      const t = lo + ((hi - lo) * k) / 5;
      track.appendChild(h("span", { class: "tick", style: { left: pct(t) + "%" } }, "+" + dur(t - lo)));
    }
    axis.appendChild(track);
    wf.appendChild(axis);

    const rowOf = new Map();
    function row(label, depth, bar, cls) {
      const tr = h("div", { class: "track" }, bar);
      const r = h("div", { class: "row " + (cls || "") },
        h("div", { class: "lbl", style: { paddingLeft: 6 + depth * 12 + "px" }, title: label }, label), tr);
      wf.appendChild(r);
      return tr;
    }
    function bar(x, cls, data, title) {
      if (!timed(x)) return h("div", Object.assign({ class: "bar untimed " + cls, title: title + " (untimed)" }, data), "untimed");
      const a = Math.max(pct(x.t0), -1), b = Math.min(pct(x.t1), 101); // cut at the edges of the axis
      return h("div", Object.assign({ class: "bar " + cls + (a > b ? " outside" : ""), title: title,
        style: { left: a + "%", width: Math.max(b - a, 0) + "%" } }, data));
    }
    if (steps.length) {
      wf.appendChild(h("div", { class: "group" }, "steps"));
      for (const [i, n] of steps) {
        row(n.l, 0, bar(n, "step " + n.st, { "data-node": i, onclick: () => inspectNode(i) },
          n.l + " " + dur(n.t1 - n.t0) + " " + n.st), "step-row");
      }
    }
    // Spans by service (services in order of their first span), each service's spans as trees.
    const present = new Map(spans.map(([i, x]) => [x.tr + "/" + x.id, i]));
    const kids = new Map(), roots = new Map();
    const sortKey = (i) => (M.spans[i].t0 === null ? Infinity : M.spans[i].t0);
    for (const [i, x] of spans) {
      const pk = x.p ? x.tr + "/" + x.p : null;
      const parent = pk !== null ? present.get(pk) : undefined;
      if (parent !== undefined && M.spans[parent].s === x.s && parent !== i) {
        if (!kids.has(parent)) kids.set(parent, []);
        kids.get(parent).push(i);
      } else {
        if (!roots.has(x.s)) roots.set(x.s, []);
        roots.get(x.s).push(i);
      }
    }
    const depthOf = (i) => { // nesting across services too, bounded: ids may loop
      let d = 0, x = M.spans[i];
      while (x.p && d < 50) {
        const p = present.get(x.tr + "/" + x.p);
        if (p === undefined) break;
        x = M.spans[p]; d++;
      }
      return d;
    };
    // No spread of a span list into Math.min and no recursion: a service may have 10^5 spans, a chain any depth.
    const first = (svc) => roots.get(svc).reduce((m, i) => Math.min(m, sortKey(i)), Infinity);
    const services = [...roots.keys()].sort((a, b) => first(a) - first(b) || a.localeCompare(b));
    const drawn = new Set();
    function walk(start) { // depth first, children in start order, with a stack of its own
      const todo = [start];
      while (todo.length) {
        const i = todo.pop();
        if (drawn.has(i)) continue;
        drawn.add(i);
        const x = M.spans[i];
        const title = x.n + " " + (timed(x) ? dur(x.t1 - x.t0) : "untimed") + (x.st !== "unset" ? " " + x.st : "");
        rowOf.set(i, row(x.n, depthOf(i), bar(x, "span st-" + x.st, { "data-span": i, onclick: () => inspectSpan(i) }, title),
          "span-row"));
        const ks = (kids.get(i) || []).sort((a, b) => sortKey(a) - sortKey(b));
        for (let j = ks.length - 1; j >= 0; j--) todo.push(ks[j]);
      }
    }
    for (const svc of services) {
      wf.appendChild(h("div", { class: "group" }, svc || "(no service.name)"));
      for (const i of roots.get(svc).sort((a, b) => sortKey(a) - sortKey(b))) walk(i);
    }
    for (const [i] of spans) walk(i); // spans whose parent ids loop are reachable from no root
    if (!spans.length) wf.appendChild(h("p", { class: "hint" }, "No spans."));
    overlays(checks, rowOf, pct);
    return wf;
  }

  // Expectations drawn where they apply: duration bounds on each span, order and gap bounds from the end of
  // the first `before` span to each `after` span; failures in red.
  function overlays(checks, rowOf, pct) {
    for (const c of checks) {
      const isBad = (i) => !c.ok && (!c.bad.length || c.bad.includes(i));
      if (c.k === "duration") {
        for (const i of c.spans) {
          const x = M.spans[i], tr = rowOf.get(i);
          if (!tr || !timed(x)) continue;
          const a = c.lo !== null ? x.t0 + c.lo : x.t0, b = c.hi !== null ? x.t0 + c.hi : null;
          tr.appendChild(h("div", { class: "ov dur " + (isBad(i) ? "bad" : "ok") + (b === null ? " open" : ""),
            title: c.text + (isBad(i) ? " (fails)" : " (holds)"),
            style: { left: pct(a) + "%", width: (b === null ? 0 : Math.max(pct(b) - pct(a), 0)) + "%" } }));
        }
      } else if (c.k === "precedes") {
        const ends = c.before.map((i) => M.spans[i]).filter(timed).map((x) => x.t1);
        if (!ends.length) continue;
        const anchor = ends.reduce((m, t) => Math.min(m, t), Infinity);
        for (const i of c.before) {
          const tr = rowOf.get(i);
          if (tr && timed(M.spans[i]) && M.spans[i].t1 === anchor)
            tr.appendChild(h("div", { class: "ov anchor " + (c.ok ? "ok" : "bad"), title: c.text + ": ends here",
              style: { left: pct(anchor) + "%" } }));
        }
        for (const i of c.after) {
          const x = M.spans[i], tr = rowOf.get(i);
          if (!tr || !timed(x)) continue;
          const bad = isBad(i) ? "bad" : "ok";
          const a = Math.min(anchor, x.t0), b = Math.max(anchor, x.t0);
          tr.appendChild(h("div", { class: "ov gap " + bad + (x.t0 < anchor ? " backwards" : ""),
            title: c.text + ": " + dur(x.t0 - anchor) + " after the first `before` span ended",
            style: { left: pct(a) + "%", width: Math.max(pct(b) - pct(a), 0) + "%" } }));
          if (c.lo !== null || c.hi !== null) {
            const wa = anchor + (c.lo || 0), wb = c.hi !== null ? anchor + c.hi : null;
            if (pct(wa) > 100) { // the allowed window starts past the axis: say where
              tr.appendChild(h("div", { class: "ov flag " + bad, title: c.text },
                "allowed start: +" + dur(c.lo) + " after → (" + dur(x.t0 - anchor) + " here)"));
            }
            tr.appendChild(h("div", { class: "ov gapwin " + bad + (wb === null ? " open" : ""),
              title: c.text + ": allowed start window",
              style: { left: pct(wa) + "%", width: (wb === null ? 0 : Math.max(pct(wb) - pct(wa), 0)) + "%" } }));
          }
        }
      } else if (c.k === "contains" || c.k === "parent") {
        for (const i of c.inner) {
          const tr = rowOf.get(i);
          if (tr && isBad(i)) tr.appendChild(h("div", { class: "ov flag bad", title: c.text + " fails here" }, "✗ " + c.k));
        }
      } else if (!c.ok) {
        for (const i of c.bad) {
          const tr = rowOf.get(i);
          if (tr) tr.appendChild(h("div", { class: "ov flag bad", title: c.text + " fails here" }, "✗ " + c.k));
        }
      }
    }
  }

  function legend() {
    return h("div", { class: "legend" },
      h("span", { class: "lg step passed" }, "step"), h("span", { class: "lg span" }, "span"),
      h("span", { class: "lg st-error" }, "span with status error"),
      h("span", { class: "lg dur ok" }, "duration bounds"), h("span", { class: "lg gapwin ok" }, "allowed gap"),
      h("span", { class: "lg bad" }, "expectation fails"));
  }

  // ------------------------------------------------------------------------------------------ inspector
  function kv(rows) {
    return h("table", { class: "kv" }, rows.map(([k, v]) =>
      h("tr", {}, h("th", {}, k), h("td", {}, typeof v === "string" ? v : JSON.stringify(v)))));
  }
  function inspector(title, ...body) {
    const el = document.getElementById("inspector");
    el.replaceChildren(h("button", { class: "close", title: "close", onclick: () => { el.hidden = true; } }, "×"),
      h("h3", {}, title));
    append(el, body);
    el.hidden = false;
  }
  function inspectSpan(i) {
    const x = M.spans[i];
    inspector(x.n,
      kv([["service", x.s], ["kind", x.k], ["status", x.st + (x.sm ? ": " + x.sm : "")],
        ["duration", timed(x) ? dur(x.t1 - x.t0) : "untimed"], ["trace", x.tr], ["span", x.id],
        ["parent", x.p || "(root)"], ["scope", x.sc]]),
      h("h4", {}, "attributes"), kv(Object.entries(x.a).sort()),
      x.ev.length ? [h("h4", {}, "events"), kv(x.ev.map((e) => [e.name, e.attributes]))] : null,
      h("details", {}, h("summary", {}, "resource"), kv(Object.entries(M.resources[x.r] || {}).sort())));
  }
  function inspectNode(i) {
    const n = M.nodes[i];
    inspector(n.k + " " + n.l, kv([["status", n.st], ["where", n.loc], ["duration", dur(n.t1 - n.t0)]]),
      n.m ? message(n.m, failed(n.st) ? "failure" : "") : null, nodeDetail(n));
  }
  function nodeDetail(n) {
    const d = n.d || {}, out = [];
    if (d.argv) out.push(h("p", {}, h("code", { class: "argv" }, d.argv.map((a) => JSON.stringify(a)).join(" "))));
    const o = d.output;
    if (o) {
      out.push(h("p", { class: "meta" }, "exit " + (o.exit_code === null ? "killed" : o.exit_code) +
        (o.timed_out ? " (timed out)" : "") + " · " + dur(Math.round((o.duration_s || 0) * 1e9))));
      if (o.stdout) out.push(h("h4", {}, "stdout"), h("pre", { class: "out" }, o.stdout));
      if (o.stderr) out.push(h("h4", {}, "stderr"), h("pre", { class: "out err" }, o.stderr));
    }
    if (d.captures && Object.keys(d.captures).length) out.push(h("h4", {}, "captures"), kv(Object.entries(d.captures)));
    return out;
  }

  // ------------------------------------------------------------------------------------------ steps, services
  // An assertion's step: named by the Plan, else (a JSON report without one) by its label's prefix.
  const ofStep = (a, n) => (a.step ? a.step === n.id : (a.l || "").startsWith(n.l + "."));
  function stepsSection(t) {
    const nodes = t.nodes.map((i) => [i, M.nodes[i]]);
    const asserts = nodes.filter(([, n]) => n.k === "assert");
    const sec = h("section", { class: "steps" }, h("h3", {}, "Steps"));
    for (const [i, n] of nodes.filter(([, n]) => n.k === "step")) {
      const mine = asserts.filter(([, a]) => ofStep(a, n));
      sec.appendChild(h("div", { class: "step-box " + n.st, "data-node": i },
        h("h4", {}, badge(n.st), " step ", h("code", {}, n.l), " ", h("small", {}, n.loc)),
        n.m ? message(n.m, failed(n.st) ? "failure" : "") : null, nodeDetail(n),
        mine.length ? h("ul", { class: "asserts" }, mine.map(([, a]) => h("li", {}, badge(a.st), " ",
          h("code", {}, a.l), " ", h("small", {}, a.loc), a.m ? message(a.m, failed(a.st) ? "failure" : "") : null))) : null));
    }
    const other = asserts.filter(([, a]) => !nodes.some(([, n]) => n.k === "step" && ofStep(a, n)));
    if (other.length) sec.appendChild(h("ul", { class: "asserts" }, other.map(([, a]) => h("li", {}, badge(a.st), " ",
      h("code", {}, a.l), " ", h("small", {}, a.loc), a.m ? message(a.m, failed(a.st) ? "failure" : "") : null))));
    return sec;
  }

  function servicesSection(t) {
    const sec = h("section", { class: "services" }, h("h3", {}, "Services"));
    if (!t.services.length) sec.appendChild(h("p", { class: "hint" }, "This test uses no service."));
    for (const i of t.services) {
      const n = M.nodes[i], d = n.d || {};
      sec.appendChild(h("details", { class: "svc " + n.st, open: failed(n.st) },
        h("summary", {}, badge(n.st), " ", h("code", {}, n.l), " ", h("small", {}, n.cap ? n.cap.split("\n")[1] || "" : ""),
          " ", h("small", {}, "ready in " + dur(n.t1 - n.t0))),
        n.m ? message(n.m, failed(n.st) ? "failure" : "") : null,
        d.log_tail ? h("pre", { class: "out log" }, d.log_tail) :
          h("p", { class: "hint" }, "No log kept (logs are kept in recordings and HTML reports).")));
    }
    return sec;
  }

  // ------------------------------------------------------------------------------------------ DAG
  const EDGE = { needs: "#1d4ed8", after: "#111827", then: "#9ca3af", checks: "#a16207", observes: "#7c3aed",
    precedes: "#dc2626", contains: "#15803d", parent: "#0f766e", ancestor: "#0f766e" };
  function dag(g) {
    const ids = g.nodes, W = 180, H = 34, GX = 70, GY = 14;
    const preds = new Map(ids.map((i) => [i, []])), succ = new Map(ids.map((i) => [i, []]));
    for (const [u, v] of g.edges) { if (u !== v) { preds.get(v).push(u); succ.get(u).push(v); } }
    const layer = new Map(), indeg = new Map(ids.map((i) => [i, preds.get(i).length]));
    const queue = ids.filter((i) => indeg.get(i) === 0);
    for (const i of queue) layer.set(i, 0);
    while (queue.length) { // longest path from the sources: each node one column right of its latest input
      const u = queue.shift();
      for (const v of succ.get(u)) {
        layer.set(v, Math.max(layer.get(v) || 0, layer.get(u) + 1));
        indeg.set(v, indeg.get(v) - 1);
        if (indeg.get(v) === 0) queue.push(v);
      }
    }
    for (const i of ids) if (!layer.has(i)) layer.set(i, 0);
    const cols = [];
    for (const i of ids) (cols[layer.get(i)] = cols[layer.get(i)] || []).push(i);
    const pos = new Map();
    cols.forEach((col, c) => {
      const bary = (i) => { const p = preds.get(i).filter((u) => pos.has(u)); return p.length ? p.reduce((a, u) => a + pos.get(u).y, 0) / p.length : 0; };
      col.sort((a, b) => bary(a) - bary(b) || M.nodes[a].k.localeCompare(M.nodes[b].k));
      col.forEach((i, r) => pos.set(i, { x: 10 + c * (W + GX), y: 10 + r * (H + GY) }));
    });
    const width = 20 + cols.length * (W + GX), height = 20 + Math.max(...cols.map((c) => c.length)) * (H + GY);
    const svg = s("svg", { class: "dag-svg", width: width, height: height, viewBox: `0 0 ${width} ${height}` });
    const defs = s("defs");
    for (const [k, col] of Object.entries(EDGE)) {
      defs.appendChild(s("marker", { id: "arrow-" + k, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7,
        markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: col })));
    }
    svg.appendChild(defs);
    for (const [u, v, kind, cap] of g.edges) {
      const a = pos.get(u), b = pos.get(v);
      if (!a || !b) continue;
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      const back = x2 <= x1;
      const d = back ? `M ${a.x + W / 2} ${a.y + H} C ${a.x + W / 2} ${a.y + H + 30}, ${b.x + W / 2} ${b.y + H + 30}, ${b.x + W / 2} ${b.y + H}`
        : `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
      svg.appendChild(s("path", { class: "edge " + kind, d: d, stroke: EDGE[kind] || "#555", fill: "none",
        "marker-end": `url(#arrow-${EDGE[kind] ? kind : "after"})` }, s("title", {}, kind + (cap ? " " + cap : ""))));
      if (cap) svg.appendChild(s("text", { x: mx, y: (y1 + y2) / 2 - 3, class: "edge-cap" }, cap));
    }
    for (const i of ids) {
      const n = M.nodes[i], p = pos.get(i);
      const text = (n.cap || n.l).split("\n")[0];
      svg.appendChild(s("g", { class: "dnode " + n.k + " " + n.st, transform: `translate(${p.x},${p.y})`,
        onclick: () => inspectNode(i) },
      s("rect", { width: W, height: H, rx: n.k === "step" ? 8 : 2 }),
      s("text", { x: 8, y: 14, class: "dk" }, n.k),
      s("text", { x: 8, y: 28 }, text.length > 28 ? text.slice(0, 27) + "…" : text),
      s("title", {}, (n.cap || n.l) + "\n" + n.st)));
    }
    return h("div", { class: "dag-wrap" }, svg, h("div", { class: "legend" },
      Object.entries(EDGE).map(([k, c]) => h("span", { class: "lg-edge", style: { borderColor: c } }, k))));
  }

  header();
  list();
  const firstFailed = M.tests.findIndex((t) => failed(t.st));
  show(M.tests.length ? (firstFailed >= 0 ? firstFailed : 0) : "run");
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT") return;
    if (e.key === "/") { e.preventDefault(); document.getElementById("filter").focus(); }
    if (e.key === "Escape") document.getElementById("inspector").hidden = true;
    if ((e.key === "j" || e.key === "k") && M.tests.length) {
      const visible = [...document.querySelectorAll("#tests li.test")].filter((li) => !li.hidden).map((li) => +li.dataset.view);
      const at = visible.indexOf(current);
      const next = visible[Math.min(Math.max(at + (e.key === "j" ? 1 : -1), 0), visible.length - 1)];
      if (next !== undefined) show(next);
    }
  });
  document.body.dataset.ready = "1";
})();
