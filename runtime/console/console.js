// The DreamPipe console (ADR 80): read-only pages over the query API and /v1/pipeline.
// No framework and no build step: the DOM is built with `h`, text is always set as text.
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const TOKEN_KEY = "dreampipe-console-token";
  const main = document.getElementById("main");
  const live = document.getElementById("live");
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    ownNamespace: null,
    timer: null,
    samples: new Map(), // counter id -> {count, at}: rates are measured between refreshes
    route: 0, // bumped on every navigation, so a late answer of the previous page is dropped
  };

  // ---- DOM ----------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") element.className = value;
      else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
      else element.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }
  const svg = (tag, attrs) => {
    const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs || {})) element.setAttribute(name, value);
    return element;
  };
  const figures = (pairs) =>
    h("dl", null, pairs.filter(Boolean).map(([label, value, figure]) => [
      h("dt", null, label),
      h("dd", { "data-figure": figure }, value ?? "–"),
    ]));
  const badge = (text, tone) => h("span", { class: `badge ${tone}` }, text);
  const number = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "–");
  const json = (value) => JSON.stringify(value);
  const enc = encodeURIComponent;

  // ---- API ----------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const response = await fetch(path, { headers });
    if (response.status === 401) {
      await askForToken();
      return api(path);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, (body && (body.detail || body.title)) || response.statusText);
    }
    return body;
  }

  let tokenAsked = null;
  function askForToken() {
    if (tokenAsked) return tokenAsked;
    const dialog = document.getElementById("token-dialog");
    const input = document.getElementById("token");
    tokenAsked = new Promise((resolve) => {
      dialog.addEventListener("close", function once() {
        dialog.removeEventListener("close", once);
        state.token = input.value.trim() || null;
        if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
        input.value = "";
        tokenAsked = null;
        resolve();
      });
    });
    dialog.showModal();
    input.focus();
    return tokenAsked;
  }

  const base = (namespace) => `/v1/namespaces/${enc(namespace)}`;
  const link = (namespace, ...path) =>
    `#/ns/${enc(namespace)}/${path.map(enc).join("/")}`;

  // ---- rates --------------------------------------------------------------------------------
  /** Per second since the last refresh that saw the same counter; null before two samples. */
  function rate(id, count, at) {
    if (typeof count !== "number") return null;
    const before = state.samples.get(id);
    state.samples.set(id, { count, at });
    if (!before || at <= before.at || count < before.count) return before ? before.rate ?? null : null;
    const perSecond = ((count - before.count) * 1000) / (at - before.at);
    state.samples.get(id).rate = perSecond;
    return perSecond;
  }
  const perSecond = (value) => (value === null ? "–" : `${value.toFixed(1)}/s`);
  function duration(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) return "–";
    if (seconds < 1) return `${seconds.toFixed(2)} s`;
    if (seconds < 120) return `${seconds.toFixed(1)} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  // ---- what a node shows --------------------------------------------------------------------
  const replicasText = (node) => {
    const ready = node.replicas.filter((r) => r.ready).length;
    return `${ready}/${node.replicas.length} ready`;
  };
  const readyBadge = (node) => (node.ready ? badge("Ready", "ok") : badge("Not ready", "bad"));

  /** The generation a projection serves (or builds, while none serves). */
  function serving(report) {
    if (!report) return null;
    const named = (name) => name && report.generations.find((g) => g.generation === name);
    return named(report.activeGeneration) || named(report.buildingGeneration) || report.generations[0] || null;
  }
  function building(report) {
    if (!report || !report.buildingGeneration) return null;
    return report.generations.find((g) => g.generation === report.buildingGeneration) || null;
  }
  const sinkOf = (spec) =>
    spec.sink.postgres
      ? { kind: "view", name: spec.sink.postgres.view, mode: spec.sink.postgres.mode || "latest" }
      : { kind: "subject", name: spec.sink.nats.subject };
  const sourceKind = (spec) => Object.keys(spec.source)[0] || "?";

  // ---- the graph ----------------------------------------------------------------------------
  async function graphPage(namespace, route) {
    const view = await api(namespace ? `${base(namespace)}/pipeline` : "/v1/pipeline");
    if (route !== state.route) return;
    state.ownNamespace = state.ownNamespace || view.namespace;
    setNamespace(view.namespace);
    const ns = view.namespace;
    const at = Date.parse(view.at);
    document.title = `${ns} · DreamPipe console`;

    const entityNames = new Set(view.entities.map((e) => e.name));
    for (const node of [...view.adapters, ...view.projections]) entityNames.add(node.spec.entity);
    const entities = [...entityNames].sort().map(
      (name) => view.entities.find((e) => e.name === name) || { name, missing: true },
    );
    const sinks = [];
    for (const p of view.projections) {
      const sink = sinkOf(p.spec);
      if (!sinks.some((s) => s.kind === sink.kind && s.name === sink.name)) sinks.push(sink);
    }
    const edges = [];
    const id = (kind, name) => `node-${kind}-${name}`;

    const adapterCards = view.adapters.map((node) => {
      const report = node.report;
      edges.push([id("adapter", node.name), id("entity", node.spec.entity)]);
      return h("a", {
        class: `node ${node.ready ? "ready" : "not-ready"}`, id: id("adapter", node.name),
        href: link(ns, "entities", node.spec.entity), "data-kind": "adapter", "data-name": node.name,
      },
      h("div", { class: "title" }, h("span", null, node.name), readyBadge(node)),
      figures([
        ["source", sourceKind(node.spec)],
        ["replicas", replicasText(node), "replicas"],
        ["records/s", perSecond(rate(`adapter/${ns}/${node.name}`, report.recordsRead, at)), "records-per-second"],
        ["read", number(report.recordsRead), "records-read"],
        ["changed", number(report.changed), "changed"],
        ["rejected", number(report.rejected), "rejected"],
        typeof report.backlog === "number" && ["backlog", number(report.backlog), "backlog"],
        report.lastError && ["last error", report.lastError, "last-error"],
      ]));
    });

    const entityCards = entities.map((node) => {
      if (node.missing) {
        return h("a", { class: "node not-ready", id: id("entity", node.name), href: link(ns, "entities", node.name),
          "data-kind": "entity", "data-name": node.name },
        h("div", { class: "title" }, h("span", null, node.name), badge("No receiver", "bad")),
        h("p", { class: "muted" }, "No receiver of this Entity reports."));
      }
      const stats = node.report;
      return h("a", {
        class: `node ${node.ready ? "ready" : "not-ready"}`, id: id("entity", node.name),
        href: link(ns, "entities", node.name), "data-kind": "entity", "data-name": node.name,
      },
      h("div", { class: "title" }, h("span", null, node.name), readyBadge(node)),
      figures([
        ["receivers", replicasText(node), "replicas"],
        ["events", number(stats && stats.events), "events"],
        ["events/s", perSecond(rate(`entity/${ns}/${node.name}`, stats && stats.events, at)), "events-per-second"],
        ["keys", number(stats && stats.keys), "keys"],
        ["partitions", node.spec.partitions],
      ]));
    });

    const projectionCards = view.projections.map((node) => {
      const report = node.report;
      const generation = serving(report);
      const build = building(report);
      const sink = sinkOf(node.spec);
      edges.push([id("entity", node.spec.entity), id("projection", node.name)]);
      edges.push([id("projection", node.name), id(sink.kind, sink.name)]);
      const phase = generation ? generation.phase : "–";
      const tone = !node.ready || phase === "Degraded" ? "not-ready" : build || phase === "Building" ? "building" : "ready";
      return h("a", {
        class: `node ${tone}`, id: id("projection", node.name), href: link(ns, "projections", node.name),
        "data-kind": "projection", "data-name": node.name,
      },
      h("div", { class: "title" }, h("span", null, node.name),
        badge(phase, phase === "Live" ? "ok" : phase === "Building" ? "warn" : "bad")),
      figures([
        ["replicas", replicasText(node), "replicas"],
        ["events/s", perSecond(generation && rate(`projection/${ns}/${node.name}/${generation.generation}`, generation.events, at)), "events-per-second"],
        ["lag", generation ? `${number(generation.lag)} events` : "–", "lag"],
        ["lag time", duration(report && report.lagSeconds), "lag-seconds"],
        ["dead letters", number(generation && generation.deadLetters), "dead-letters"],
        build && ["building", `${build.generation} ${build.progress}%`, "building"],
      ]));
    });

    const sinkCards = sinks.map((sink) =>
      sink.kind === "view"
        ? h("a", { class: "node ready", id: id("view", sink.name), href: link(ns, "views", sink.name),
            "data-kind": "view", "data-name": sink.name },
          h("div", { class: "title" }, h("span", null, sink.name), badge(sink.mode, "ok")),
          h("p", { class: "muted" }, "Postgres view"))
        : h("div", { class: "node ready", id: id("subject", sink.name), "data-kind": "subject", "data-name": sink.name },
          h("div", { class: "title mono" }, sink.name), h("p", { class: "muted" }, "NATS subject")));

    const column = (title, cards, empty) =>
      h("section", { class: "column", "aria-label": title }, h("h2", null, title),
        cards.length ? cards : h("p", { class: "muted" }, empty));
    const graph = h("div", { class: "graph" },
      column("Adapters", adapterCards, "No adapter reports."),
      column("Entities", entityCards, "No entity."),
      column("Projections", projectionCards, "No projection reports."),
      column("Views and subjects", sinkCards, "–"));
    const focused = document.activeElement && document.activeElement.id;
    replace(h("h1", null, `Pipeline of ${ns}`), graph);
    drawEdges(graph, edges);
    if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
    updated(view.at);
  }

  function drawEdges(graph, edges) {
    const layer = svg("svg", { class: "edges", "aria-hidden": "true" });
    const box = graph.getBoundingClientRect();
    for (const [from, to] of edges) {
      const a = document.getElementById(from);
      const b = document.getElementById(to);
      if (!a || !b) continue;
      const ra = a.getBoundingClientRect();
      const rb = b.getBoundingClientRect();
      const x1 = ra.right - box.left, y1 = ra.top + ra.height / 2 - box.top;
      const x2 = rb.left - box.left, y2 = rb.top + rb.height / 2 - box.top;
      const bend = Math.max(24, (x2 - x1) / 2);
      layer.append(svg("path", { d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}` }));
    }
    graph.prepend(layer);
  }

  // ---- a projection -------------------------------------------------------------------------
  async function projectionPage(ns, name, route) {
    const view = await api(`${base(ns)}/pipeline`);
    if (route !== state.route) return;
    setNamespace(ns);
    document.title = `${name} · DreamPipe console`;
    const node = view.projections.find((p) => p.name === name);
    if (!node) {
      replace(crumbs(ns), h("h1", null, name), h("p", null, `No replica of Projection ${name} reports in ${ns}.`));
      updated(view.at);
      return;
    }
    const at = Date.parse(view.at);
    const report = node.report;
    const generation = serving(report);
    const sink = sinkOf(node.spec);
    const rows = (report ? report.generations : []).map((g) => {
      const applied = rate(`projection/${ns}/${name}/${g.generation}`, g.events, at);
      const left = g.state === "building" && applied > 0 ? duration(g.lag / applied) : g.state === "building" ? "estimating…" : "–";
      return h("tr", { "data-generation": g.generation },
        h("td", { class: "mono" }, g.generation),
        h("td", { "data-field": "state" }, g.state),
        h("td", { "data-field": "phase" }, g.phase),
        h("td", { class: "num" }, number(g.events)),
        h("td", { class: "num" }, number(g.lag)),
        h("td", null, h("progress", { max: 100, value: g.progress, "aria-label": `${g.generation} progress` }), ` ${g.progress}%`),
        h("td", { "data-field": "time-left" }, left),
        h("td", { class: "num" }, number(g.deadLetters)));
    });
    const partitionGeneration = building(report) || generation;
    const partitions = partitionGeneration ? partitionGeneration.partitions : [];

    const content = [
      crumbs(ns),
      h("h1", null, `Projection ${name}`),
      h("div", { class: "cards" },
        card("phase", generation ? generation.phase : "–", "phase"),
        card("replicas", replicasText(node), "replicas"),
        card("lag", generation ? `${number(generation.lag)} events` : "–", "lag"),
        card("lag time", duration(report && report.lagSeconds), "lag-seconds"),
        card("serves", sink.kind === "view" ? h("a", { href: link(ns, "views", sink.name) }, sink.name) : sink.name, "sink"),
        card("entity", h("a", { href: link(ns, "entities", node.spec.entity) }, node.spec.entity))),
      report && report.viewConflict
        ? h("p", { class: "error" }, `View ${report.viewConflict.view} is owned by ${report.viewConflict.owner}: this Projection is refused.`)
        : null,
      h("h2", null, "Generations"),
      h("div", { class: "scroll" }, h("table", { id: "generations" },
        h("thead", null, h("tr", null, ["generation", "state", "phase", "events", "lag", "progress", "time left", "dead letters"]
          .map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", null, rows.length ? rows : h("tr", null, h("td", { colspan: 8 }, "No report yet."))))),
      h("h2", null, "Changes seen"),
      node.timeline && node.timeline.length
        ? h("ol", { id: "generation-timeline" }, node.timeline.map((c) =>
          h("li", null, h("span", { class: "mono" }, c.generation), ` ${c.state} (${c.phase}) since ${c.since}`)))
        : h("p", { class: "muted" }, "None yet."),
      h("h2", null, `Partitions${partitionGeneration ? ` of ${partitionGeneration.generation}` : ""}`),
      h("div", { class: "scroll" }, h("table", { id: "partitions" },
        h("thead", null, h("tr", null, ["partition", "sequence", "lag", "owner", "state"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", null, partitions.map((p) => h("tr", null,
          h("td", { class: "num" }, p.partition),
          h("td", { class: "num" }, number(p.sequence)),
          h("td", { class: "num" }, number(p.lag)),
          h("td", { class: "mono" }, p.owner || "unowned"),
          h("td", { class: p.failing || p.stopped ? "error" : "" }, p.stopped ? `stopped: ${p.stopped}` : p.failing ? `failing: ${p.failing}` : "running")))))),
      h("h2", null, "Filters"),
      node.spec.filters && node.spec.filters.length
        ? h("ol", { id: "filters" }, node.spec.filters.map(filterItem))
        : h("p", { class: "muted" }, "None: every event passes."),
      h("h2", null, "Dead letters"),
      await deadLetters(ns, name, generation),
    ];
    if (route !== state.route) return;
    replace(...content);
    updated(view.at);
  }

  function filterItem(filter) {
    if (filter.where) return h("li", null, "where ", h("code", null, filter.where));
    if (filter.types) return h("li", null, "types ", h("code", null, filter.types.join(", ")));
    return h("li", null, "set ", Object.entries(filter.set).map(([column, expression], i) =>
      [i ? ", " : "", h("code", null, column), " = ", h("code", null, expression)]));
  }

  async function deadLetters(ns, name, generation) {
    try {
      const page = await api(`${base(ns)}/projections/${enc(name)}/deadletters?limit=50`);
      if (!page.deadLetters.length) return h("p", { id: "dead-letters", class: "muted" }, "None.");
      return h("div", { class: "scroll" }, h("table", { id: "dead-letters" },
        h("thead", null, h("tr", null, ["id", "generation", "partition", "sequence", "key", "reason", "recorded", "handled"]
          .map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", null, page.deadLetters.map((d) => h("tr", null,
          h("td", { class: "num" }, d.id), h("td", { class: "mono" }, d.generation), h("td", { class: "num" }, d.partition),
          h("td", { class: "num" }, d.sequence), h("td", { class: "mono" }, d.key ?? "–"), h("td", null, d.reason),
          h("td", null, d.recordedAt), h("td", null, d.handledAt ? `by ${d.handledBy || "?"}` : "no"))))));
    } catch (error) {
      if (error.status === 404) {
        return h("p", { id: "dead-letters", class: "muted" },
          `${number(generation && generation.deadLetters)} recorded. This query service is not given the dead-letter database; `,
          h("code", null, "dreampipe deadletters"), " lists them.");
      }
      return h("p", { id: "dead-letters", class: "error" }, `Dead letters unavailable: ${error.message}`);
    }
  }

  // ---- an entity ----------------------------------------------------------------------------
  async function entityPage(ns, name, params, route) {
    setNamespace(ns);
    document.title = `${name} · DreamPipe console`;
    const key = params.get("key") || "";
    const asOf = params.get("asOf") || "";
    const form = h("form", { class: "row", id: "key-form", onsubmit: (event) => {
      event.preventDefault();
      const data = new FormData(event.target);
      const query = new URLSearchParams();
      if (data.get("key")) query.set("key", data.get("key"));
      if (data.get("asOf")) query.set("asOf", asOfValue(data.get("asOf")));
      location.hash = `${link(ns, "entities", name)}?${query}`;
    } },
    h("label", null, "Key", h("input", { name: "key", value: key, required: true, autocomplete: "off", spellcheck: "false" })),
    h("label", null, "As of (version or time)", h("input", { name: "asOf", value: asOf, placeholder: "3 or 2026-12-01T09:00:00Z", autocomplete: "off" })),
    h("button", { type: "submit" }, "Look up"));
    const parts = [crumbs(ns), h("h1", null, `Entity ${name}`), form];
    if (key) {
      const path = `${base(ns)}/entities/${enc(name)}/${enc(key)}`;
      parts.push(...await keySections(path, key, asOf, ns, name));
    } else {
      parts.push(h("p", { class: "muted" }, "Look up a key to see its state and its history."));
    }
    if (route !== state.route) return;
    replace(...parts);
    const focus = key ? null : document.querySelector("#key-form input[name=key]");
    if (focus) focus.focus();
    updated(null);
  }

  /** A datetime-local value (no zone) is read as local time; anything else is passed as is. */
  function asOfValue(text) {
    return /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?$/.test(text) ? new Date(text).toISOString() : text;
  }

  async function keySections(path, key, asOf, ns, name) {
    const sections = [];
    const load = async (url) => {
      try {
        return { body: await api(url) };
      } catch (error) {
        return { error };
      }
    };
    const current = await load(path);
    sections.push(h("h2", null, "Current state"));
    sections.push(current.body
      ? h("section", { id: "current" }, h("p", { class: "muted" }, `version ${current.body.version}, recorded ${current.body.recordedAt}`),
        h("pre", null, JSON.stringify(current.body.state, null, 2)))
      : h("p", { id: "current", class: "error" }, current.error.message));
    if (asOf) {
      const past = await load(`${path}?asOf=${enc(asOf)}`);
      sections.push(h("h2", null, `As of ${asOf}`));
      sections.push(past.body
        ? h("section", { id: "as-of" }, h("p", { class: "muted" }, `version ${past.body.version}, recorded ${past.body.recordedAt}`),
          h("pre", null, JSON.stringify(past.body.state, null, 2)))
        : h("p", { id: "as-of", class: "error" }, past.error.message));
    }
    sections.push(h("h2", null, "History"));
    const list = h("ol", { class: "timeline", id: "history" });
    const more = h("button", { type: "button", hidden: true }, "Older changes");
    let from = 1;
    const page = async () => {
      const answer = await load(`${path}/history?fromVersion=${from}&limit=100`);
      if (answer.error) {
        list.append(h("li", { class: "error" }, answer.error.message));
        more.hidden = true;
        return;
      }
      for (const event of answer.body.events) list.append(historyItem(event, ns, name, key));
      from = answer.body.nextFromVersion;
      more.hidden = !from;
    };
    more.addEventListener("click", page);
    await page();
    sections.push(list, more);
    return sections;
  }

  function historyItem(event, ns, name, key) {
    const changes = (event.changes || []).map((c) =>
      h("li", null, h("code", null, c.path || "/"), ": ",
        c.from === undefined ? "" : h("del", null, json(c.from)), c.from === undefined ? "" : " → ",
        c.to === undefined ? h("del", null, "removed") : h("ins", null, json(c.to))));
    return h("li", { class: event.type, "data-version": event.version },
      h("strong", null, `v${event.version} ${event.type}`), " ",
      h("span", { class: "muted" }, event.recordedAt), " ",
      h("a", { href: `${link(ns, "entities", name)}?${new URLSearchParams({ key, asOf: String(event.version) })}` }, "state then"),
      changes.length ? h("ul", { class: "changes" }, changes) : null);
  }

  // ---- a view -------------------------------------------------------------------------------
  async function viewPage(ns, viewName, params, route) {
    setNamespace(ns);
    document.title = `${viewName} · DreamPipe console`;
    const limit = params.get("limit") || "50";
    const query = new URLSearchParams(params);
    query.set("limit", limit);
    let page;
    let failure = null;
    try {
      page = await api(`${base(ns)}/views/${enc(viewName)}?${query}`);
    } catch (error) {
      failure = error;
    }
    if (route !== state.route) return;
    const filters = [...params].filter(([name]) => name !== "limit" && name !== "pageToken");
    const columns = page && page.rows.length ? Object.keys(page.rows[0]) : filters.map(([name]) => name);
    const form = h("form", { class: "row", id: "view-filters", onsubmit: (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      for (const [name, value] of new FormData(event.target)) if (value !== "") next.set(name, value);
      location.hash = `${link(ns, "views", viewName)}?${next}`;
    } },
    columns.map((column) => h("label", null, column,
      h("input", { name: column, value: params.get(column) || "", size: 12, autocomplete: "off" }))),
    h("label", null, "rows", h("select", { name: "limit" }, ["20", "50", "100", "500"].map((n) =>
      h("option", { value: n, selected: n === limit }, n)))),
    h("button", { type: "submit" }, "Filter"));
    const parts = [crumbs(ns), h("h1", null, `View ${viewName}`), form];
    if (failure) {
      parts.push(h("p", { class: "error" }, failure.message));
    } else {
      const rows = page.rows;
      parts.push(h("div", { class: "scroll" }, h("table", { id: "rows" },
        h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", null, rows.length
          ? rows.map((row) => h("tr", null, columns.map((c) =>
            h("td", { class: typeof row[c] === "number" ? "num" : "" }, row[c] === null ? "–" : typeof row[c] === "object" ? json(row[c]) : row[c]))))
          : h("tr", null, h("td", { colspan: Math.max(columns.length, 1) }, "No rows match."))))));
      const first = new URLSearchParams(params);
      first.delete("pageToken");
      const next = new URLSearchParams(params);
      if (page.nextPageToken) next.set("pageToken", page.nextPageToken);
      parts.push(h("nav", { class: "pager", "aria-label": "Pages" },
        params.get("pageToken") ? h("a", { href: `${link(ns, "views", viewName)}?${first}` }, "First page") : null,
        page.nextPageToken ? h("a", { href: `${link(ns, "views", viewName)}?${next}`, id: "next-page" }, "Next page") : h("span", { class: "muted" }, "Last page"),
        h("span", { class: "muted" }, `${rows.length} rows`)));
    }
    replace(...parts);
    updated(null);
  }

  // ---- page frame ---------------------------------------------------------------------------
  const card = (label, value, figure) =>
    h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value", "data-figure": figure }, value));
  const crumbs = (ns) => h("p", { class: "crumbs" }, h("a", { href: `#/ns/${enc(ns)}` }, `← Pipeline of ${ns}`));
  function replace(...children) {
    main.replaceChildren(...children.filter(Boolean));
  }
  function updated(at) {
    live.textContent = at ? `Live · updated ${new Date(at).toLocaleTimeString()}` : "";
  }
  function setNamespace(ns) {
    const input = document.getElementById("namespace");
    if (document.activeElement !== input) input.value = ns;
  }
  function showError(error) {
    replace(h("h1", null, "Cannot show this page"), h("p", { class: "error", role: "alert" }, error.message),
      h("p", null, h("a", { href: "#/" }, "Back to the pipeline")));
  }

  async function navigate(first) {
    clearTimeout(state.timer);
    const route = ++state.route;
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, search = ""] = hash.split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    const params = new URLSearchParams(search);
    let page;
    let refreshes = false;
    if (parts.length <= 2 && (parts.length === 0 || parts[0] === "ns")) {
      page = () => graphPage(parts[1], route);
      refreshes = true;
    } else if (parts[0] === "ns" && parts[2] === "projections") {
      page = () => projectionPage(parts[1], parts[3], route);
      refreshes = true;
    } else if (parts[0] === "ns" && parts[2] === "entities") {
      page = () => entityPage(parts[1], parts[3], params, route);
    } else if (parts[0] === "ns" && parts[2] === "views") {
      page = () => viewPage(parts[1], parts[3], params, route);
    } else {
      page = async () => showError(new Error(`No page at ${hash}`));
    }
    const run = async () => {
      try {
        await page();
      } catch (error) {
        if (route === state.route) showError(error);
      }
      if (refreshes && route === state.route) state.timer = setTimeout(run, REFRESH_MS);
    };
    await run();
    if (!first && route === state.route && !main.contains(document.activeElement)) main.focus();
  }

  document.getElementById("namespace-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const ns = document.getElementById("namespace").value.trim();
    if (ns) location.hash = `#/ns/${enc(ns)}`;
  });
  document.getElementById("token-form").addEventListener("submit", () => {});
  window.addEventListener("hashchange", () => navigate(false));
  window.addEventListener("resize", () => {
    const graph = main.querySelector(".graph");
    if (graph) {
      graph.querySelector("svg.edges")?.remove();
      navigate(true);
    }
  });
  navigate(true);
})();
