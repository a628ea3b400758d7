// mmemu's live web view. Plain JavaScript, no build step, no network
// beyond this VMM: every view comes from the VMM's JSON API (README, "Live
// web view"), updates arrive over /ws as small deltas, and big views are
// fetched on demand (when their panel is open, at checkpoints and pauses).
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
    else e.setAttribute(k, v);
  }
  for (const c of kids) if (c !== null && c !== undefined) e.append(c);
  return e;
};

// What the tests and the bench read: updates received, their bytes, and
// each update's latency from the host's checkpoint to this page.
const stats = (window.mmemu = { updates: 0, bytes: 0, sizes: [], latencies: [], seq: 0, state: null, at: null, loaded: {}, faults: [] });

let vmNames = [];
let vmValues = [];
let samples = []; // {seq, name, buddy: [[zone, [..]]], vm: [...]}
let plotted = new Set(["pgfault", "cow_copies", "pgalloc", "pgfree"]);
let rootSel = "kernel";
let selectedVa = null;

async function api(path, opts) {
  const r = await fetch(path, Object.assign({ cache: "no-store" }, opts || {}));
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function showError(e) {
  $("error").textContent = e ? String(e.message || e) : "";
}

// ---------- state and controls ----------
function setState(s) {
  stats.state = s.state;
  stats.at = s.at || null;
  const st = $("state");
  st.className = "state " + s.state;
  st.textContent = s.state === "paused" ? `paused at '${s.at}'` : s.state;
  if (s.seq !== undefined) $("seq").textContent = `update ${s.seq}`;
}

for (const [id, path] of [["pause", "/api/pause"], ["resume", "/api/resume"], ["step", "/api/step"]]) {
  $(id).addEventListener("click", () => api(path, { method: "POST" }).then((s) => { setState(s); showError(null); }, showError));
}

// Start a program: the line goes to the guest's console shell (`--shell`).
async function runCmd() {
  const cmd = $("cmd").value.trim();
  try {
    const s = await api("/api/run", { method: "POST", body: JSON.stringify({ cmd }), headers: { "Content-Type": "application/json" } });
    setState(s);
    showError(null);
    $("cmd").value = "";
    logLine(`run '${cmd}'`);
  } catch (e) {
    showError(e);
  }
  loadConsole();
}
$("run").addEventListener("click", runCmd);
$("cmd").addEventListener("keydown", (ev) => { if (ev.key === "Enter") runCmd(); });

// ---------- console ----------
let consoleAt = 0;
let consoleBusy = false;
async function loadConsole() {
  if (consoleBusy) return;
  consoleBusy = true;
  try {
    const c = await api(`/api/console?since=${consoleAt}`);
    if (c.text) {
      const out = $("console-out");
      out.textContent = (out.textContent + c.text).slice(-20000);
      out.scrollTop = out.scrollHeight;
    }
    consoleAt = c.next;
  } catch (e) {
    // The VMM is gone: the page keeps what it showed.
  }
  consoleBusy = false;
}
setInterval(() => { if ($("p-console").open && stats.state !== "ended") loadConsole(); }, 1000);

// ---------- page tables ----------
const FLAGS = [["w", "W"], ["u", "U"], ["nx", "NX"], ["g", "G"], ["a", "A"], ["d", "D"]];

function badges(e) {
  const out = el("span", { class: "flags" });
  out.append(el("span", { class: "b " + (e.w ? "w" : "ro") }, e.w ? "W" : "ro"));
  for (const [k, label] of FLAGS.slice(1)) out.append(el("span", { class: "b " + (e[k] ? k : "off") }, label));
  return out;
}

function entryRow(t, e) {
  const kind = e.kind === "leaf" && e.huge ? "huge" : e.kind;
  const expandable = e.kind === "table";
  const row = el("div", { class: "ent", data: { va: e.va, depth: String(t.depth), kind: e.kind, w: String(e.w), target: e.target } });
  const kids = el("div", { class: "kids", hidden: "" });
  const tog = el("span", { class: "tog" }, expandable ? "▸" : "");
  if (expandable) {
    tog.addEventListener("click", () => toggle(row, kids, tog, e.va, t.depth + 1));
  }
  row.append(
    tog,
    el("span", { class: "lvl" }, `${t.level}[${String(e.i).padStart(3)}] `),
    el("span", { class: "va", onclick: () => walk(e.va) }, e.va),
    " ",
    el("span", { class: "kind " + kind }, kind === "huge" ? `huge ${sizeName(e.size)}` : kind),
    " ",
    badges(e),
    " → ",
    e.kind === "swap" && e.swap ? `swap type ${e.swap.type} offset ${e.swap.offset}` : e.target,
    el("span", { class: "lvl" }, `  ${e.raw}`),
  );
  const box = el("div", {}, row, kids);
  return { box, row, kids, tog };
}

function sizeName(hex) {
  const n = Number(BigInt(hex));
  return n >= 1 << 30 ? `${n / (1 << 30)} GiB` : n >= 1 << 20 ? `${n / (1 << 20)} MiB` : `${n / 1024} KiB`;
}

async function loadTable(container, va, depth) {
  const t = await api(`/api/pt?root=${rootSel}&va=${va}&depth=${depth}`);
  container.replaceChildren();
  const rows = [];
  for (const e of t.entries) {
    if (e.empty) {
      const n = e.empty[1] - e.empty[0] + 1;
      container.append(el("div", { class: "fold" }, `[${e.empty[0]}..${e.empty[1]}] ${n} empty entr${n === 1 ? "y" : "ies"} folded`));
      continue;
    }
    const r = entryRow(t, e);
    rows.push(r);
    container.append(r.box);
  }
  return { t, rows };
}

const expanded = new Map(); // "depth:va" -> true

async function toggle(row, kids, tog, va, depth) {
  const key = `${depth}:${va}`;
  if (!kids.hidden) {
    kids.hidden = true;
    tog.textContent = "▸";
    expanded.delete(key);
    return;
  }
  try {
    await loadTable(kids, va, depth);
    kids.hidden = false;
    tog.textContent = "▾";
    expanded.set(key, true);
    showError(null);
  } catch (e) {
    showError(e);
  }
}

async function loadTree() {
  try {
    const { rows } = await loadTable($("tree"), "0", 0);
    stats.loaded.tree = (stats.loaded.tree || 0) + 1;
    // Open again what was open before, top down.
    await reopen(rows, 1);
    if (selectedVa) markSelected(selectedVa);
  } catch (e) {
    $("tree").textContent = String(e.message || e);
  }
}

async function reopen(rows, depth) {
  for (const r of rows) {
    const va = r.row.dataset.va;
    if (r.row.dataset.kind === "table" && expanded.has(`${depth}:${va}`)) {
      const { rows: sub } = await loadTable(r.kids, va, depth);
      r.kids.hidden = false;
      r.tog.textContent = "▾";
      await reopen(sub, depth + 1);
    }
  }
}

// Opens the tree along `va`'s path, down to its leaf, and selects it.
async function reveal(va) {
  const want = BigInt(va);
  let rows = [...$("tree").children].map((b) => ({ box: b, row: b.querySelector(":scope > .ent"), kids: b.querySelector(":scope > .kids"), tog: b.querySelector(":scope > .ent > .tog") })).filter((r) => r.row);
  for (let depth = 1; depth <= 4; depth++) {
    let hit = null;
    for (const r of rows) {
      const start = BigInt(r.row.dataset.va) & 0xffffffffffffn;
      const span = [1n << 39n, 1n << 30n, 1n << 21n, 1n << 12n][depth - 1];
      const w = want & 0xffffffffffffn;
      if (w >= start && w < start + span) hit = r;
    }
    if (!hit) break;
    if (hit.row.dataset.kind !== "table") {
      markSelected(hit.row.dataset.va, hit.row);
      break;
    }
    const { rows: sub } = await loadTable(hit.kids, hit.row.dataset.va, depth);
    hit.kids.hidden = false;
    hit.tog.textContent = "▾";
    expanded.set(`${depth}:${hit.row.dataset.va}`, true);
    rows = sub;
  }
}

function markSelected(va, row) {
  for (const r of document.querySelectorAll(".ent.sel")) r.classList.remove("sel");
  const r = row || document.querySelector(`.ent[data-va="${va}"]:not([data-kind="table"])`);
  if (r) {
    r.classList.add("sel");
    r.scrollIntoView({ block: "nearest" });
    stats.selected = { va: r.dataset.va, w: r.dataset.w === "true", kind: r.dataset.kind, target: r.dataset.target, text: r.textContent };
  }
}

async function walk(va) {
  selectedVa = va;
  $("va").value = va;
  try {
    const w = await api(`/api/walk?root=${rootSel}&va=${va}`);
    const box = $("walk");
    box.replaceChildren(el("div", {}, el("b", {}, `walk of ${w.va}`), ` under CR3 ${w.cr3}`));
    const tbl = el("table", {}, el("tr", {}, ...["level", "index", "entry address", "entry"].map((h) => el("th", {}, h))));
    for (const s of w.steps) tbl.append(el("tr", {}, el("td", {}, `${s.level} (${s.sdm_level})`), el("td", {}, String(s.index)), el("td", {}, s.entry_addr), el("td", {}, s.decoded)));
    box.append(tbl);
    const o = w.outcome;
    if (o.result === "mapped") {
      box.append(el("p", {}, `=> ${sizeName(o.page_size)} page at GPA ${o.frame} (leaf in the ${o.leaf_level}); address -> GPA ${o.gpa}`), el("p", { class: "eff" }, `effective: ${o.perms.writable ? "writable" : "read-only"}, ${o.perms.user ? "user" : "supervisor"}, ${o.perms.nx ? "no-exec" : "executable"}  [${o.flags}]`));
    } else {
      box.append(el("p", {}, `=> ${o.result}${o.reason ? ": " + o.reason : ""}${o.level ? " at the " + o.level : ""}${o.swapped ? ` (swapped out: type ${o.swapped.type}, offset ${o.swapped.offset})` : ""}`));
    }
    if (w.page) {
      const p = w.page;
      box.append(el("p", {}, el("b", {}, "page descriptor "), `${p.desc_va}: pfn ${p.pfn}, flags [${p.flag_names.join(" ")}], order ${p.order}, refcount ${p.refcount}, owner ${p.owner}`));
    }
    for (const n of w.notes || []) box.append(el("p", { class: "error" }, n));
    stats.walk = w;
    markSelected(va);
    showError(null);
  } catch (e) {
    showError(e);
  }
}

$("reveal").addEventListener("click", async () => {
  const va = $("va").value.trim();
  if (!va) return;
  await reveal(va);
  await walk(va);
});
$("reload-pt").addEventListener("click", loadTree);
$("root").addEventListener("change", () => {
  rootSel = $("root").value;
  expanded.clear();
  $("walk").replaceChildren();
  loadTree();
  loadVmas();
});

// ---------- processes ----------
async function loadProcs() {
  try {
    const p = await api("/api/procs");
    const sel = $("root");
    const keep = sel.value;
    sel.replaceChildren(el("option", { value: "kernel" }, `kernel (CR3 ${p.kernel_cr3})`));
    const tbl = $("ps");
    tbl.replaceChildren(el("tr", {}, ...["pid", "ppid", "state", "cr3", "rss", "faults", "name"].map((h) => el("th", {}, h))));
    for (const r of p.ps.procs) {
      if (r.cr3 !== "0x0") sel.append(el("option", { value: String(r.pid) }, `pid ${r.pid} ${r.name} (CR3 ${r.cr3})`));
      tbl.append(el("tr", { data: { pid: String(r.pid) } }, ...[r.pid, r.ppid, r.state, r.cr3, r.rss, r.faults, r.name].map((v) => el("td", {}, String(v)))));
    }
    sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "kernel";
    if (sel.value !== rootSel) {
      rootSel = sel.value;
      expanded.clear();
    }
    stats.loaded.procs = (stats.loaded.procs || 0) + 1;
  } catch (e) {
    $("ps").textContent = String(e.message || e);
  }
}

async function loadVmas() {
  const box = $("vmas");
  const rbox = $("ranges");
  if (rootSel === "kernel") {
    box.replaceChildren(el("p", { class: "hint" }, "Choose a process above to see its VMAs."));
    rbox.replaceChildren(el("p", { class: "hint" }, "Choose a process above to see its mapped ranges."));
    return;
  }
  try {
    const v = await api(`/api/vmas?root=${rootSel}`);
    const p = v.procs[0];
    const tbl = el("table", { id: "vma-table" }, el("tr", {}, ...["start", "end", "perms", "kind", "name", "size kB", "rss kB", "swap kB", "huge kB", "THP"].map((h) => el("th", {}, h))));
    for (const r of p ? p.vmas : []) {
      tbl.append(el("tr", { class: `vma ${r.kind}` }, ...[r.start, r.end, r.perms, r.kind, r.name, r.size_kb, r.rss_kb, r.swap_kb, r.huge_kb, r.thp_eligible ? "yes" : "-"].map((x) => el("td", {}, String(x)))));
    }
    const head = !v.published ? "the guest publishes no VMA table yet"
      : `pid ${rootSel}: ${p ? p.vmas.length : 0} VMAs, Rss ${p ? p.rss_kb : 0} kB, Swap ${p ? p.swap_kb : 0} kB` + (v.consistent ? "" : " (stopped while the guest rewrote its table: may be half-written)");
    box.replaceChildren(el("p", {}, head), tbl);
  } catch (e) {
    box.textContent = String(e.message || e);
  }
  try {
    const v = await api(`/api/ranges?root=${rootSel}`);
    const tbl = el("table", {}, el("tr", {}, ...["start", "end", "pages", "rights", "accessed", "dirty"].map((h) => el("th", {}, h))));
    for (const r of v.ranges) tbl.append(el("tr", {}, el("td", {}, r.start), el("td", {}, r.end), el("td", {}, String(r.pages)), el("td", {}, `${r.writable ? "rw" : "r-"}${r.nx ? "-" : "x"}${r.user ? " user" : ""}`), el("td", {}, String(r.accessed)), el("td", {}, String(r.dirty))));
    rbox.replaceChildren(el("p", {}, `pid ${rootSel}: ${v.mapped_pages} pages resident (${v.note})`), tbl);
  } catch (e) {
    rbox.textContent = String(e.message || e);
  }
}

// ---------- physical map ----------
let pm = { from: null, to: null, data: null };
// The widest zoom: 1 TiB of guest-physical address space (the API's
// PHYS_SPACE); "All RAM" is the default view, up to RAM's end.
const PHYS_SPACE = 2 ** 40;

async function loadPhysmap() {
  if (!$("p-pm").open) return;
  const cv = $("pm");
  const cells = cv.width * 8; // 8 rows of 1024 cells
  const q = pm.from === null ? `cells=${cells}` : `from=0x${pm.from.toString(16)}&to=0x${pm.to.toString(16)}&cells=${cells}`;
  try {
    const d = await api(`/api/physmap?${q}`);
    pm.data = d;
    drawPhysmap(d);
    stats.physmap = d.frames;
    stats.loaded.physmap = (stats.loaded.physmap || 0) + 1;
  } catch (e) {
    $("pm-range").textContent = String(e.message || e);
  }
}

function drawPhysmap(d) {
  const cv = $("pm");
  const ctx = cv.getContext("2d");
  const rows = 8;
  const cols = Math.ceil(d.cells / rows);
  const w = cv.width / cols;
  const h = cv.height / rows;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, cv.width, cv.height);
  for (let i = 0; i < d.map.length; i++) {
    const c = d.map[i];
    ctx.fillStyle = c === "." ? "#ffffff" : d.classes[c.charCodeAt(0) - 97].colour;
    ctx.fillRect((i % cols) * w, Math.floor(i / cols) * h, Math.ceil(w), Math.ceil(h));
  }
  const fpc = d.frames_per_cell;
  $("pm-range").textContent = `${d.from}..${d.to} — ${fpc >= 1 ? fpc.toFixed(fpc < 10 ? 1 : 0) + " frames" : "one frame"} per cell (RAM ends at ${d.ram_end})`;
  const tbl = $("pm-counts");
  tbl.replaceChildren(el("tr", {}, el("th", {}, "owner"), el("th", {}, "frames"), el("th", {}, "MiB")));
  for (const k of d.classes) {
    const n = d.frames[k.class];
    if (!n) continue;
    tbl.append(el("tr", { data: { class: k.class } }, el("td", {}, el("span", { class: "sw", style: `background:${k.colour}` }), k.label), el("td", { class: "n" }, String(n)), el("td", {}, (n / 256).toFixed(2))));
  }
}

function pmAddrAt(ev) {
  const d = pm.data;
  if (!d) return null;
  const cv = $("pm");
  const r = cv.getBoundingClientRect();
  const rows = 8;
  const cols = Math.ceil(d.cells / rows);
  const x = Math.floor(((ev.clientX - r.left) / r.width) * cols);
  const y = Math.floor(((ev.clientY - r.top) / r.height) * rows);
  const i = y * cols + x;
  const from = Number(BigInt(d.from)), to = Number(BigInt(d.to));
  return { i, addr: from + Math.floor(((to - from) * i) / d.cells) };
}

$("pm").addEventListener("mousemove", (ev) => {
  const p = pmAddrAt(ev);
  if (!p) return;
  const c = pm.data.map[p.i];
  const cls = c && c !== "." ? pm.data.classes[c.charCodeAt(0) - 97].label : "hole";
  $("pm-hover").textContent = `GPA 0x${p.addr.toString(16)} (pfn 0x${Math.floor(p.addr / 4096).toString(16)}): ${cls}`;
});
$("pm").addEventListener("click", (ev) => {
  const p = pmAddrAt(ev);
  if (!p) return;
  const d = pm.data;
  const from = Number(BigInt(d.from)), to = Number(BigInt(d.to));
  // 8x closer around the point, down to one frame per cell.
  const span = Math.max(Math.floor((to - from) / 8 / 4096) * 4096, d.cells * 4096 > to - from ? to - from : 4096 * 1024);
  let lo = Math.max(0, Math.floor((p.addr - span / 2) / 4096) * 4096);
  let hi = Math.min(PHYS_SPACE, lo + span);
  lo = Math.max(0, hi - span);
  pm.from = lo;
  pm.to = hi;
  loadPhysmap();
});
$("pm-out").addEventListener("click", () => {
  if (!pm.data) return;
  // 8x wider around the middle, past RAM's end up to the whole space.
  const from = Number(BigInt(pm.data.from)), to = Number(BigInt(pm.data.to));
  const span = Math.min(PHYS_SPACE, (to - from) * 8);
  const mid = (from + to) / 2;
  pm.from = Math.max(0, Math.floor((mid - span / 2) / 4096) * 4096);
  pm.to = Math.min(PHYS_SPACE, pm.from + span);
  pm.from = Math.max(0, pm.to - span);
  loadPhysmap();
});
$("pm-all").addEventListener("click", () => { pm.from = pm.to = null; loadPhysmap(); });
$("pm-space").addEventListener("click", () => { pm.from = 0; pm.to = PHYS_SPACE; loadPhysmap(); });

// ---------- charts ----------
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000"];

function lineChart(svg, series, labels) {
  const W = 800, H = 220, L = 50, B = 20, T = 8, R = 110;
  const n = Math.max(0, ...series.map((s) => s.length));
  const max = Math.max(1, ...series.flat());
  const ns = "http://www.w3.org/2000/svg";
  const mk = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  svg.replaceChildren();
  svg.append(mk("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }), mk("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }));
  svg.append(mk("text", { x: L - 4, y: T + 10, "text-anchor": "end", "font-size": 10 }, String(max)), mk("text", { x: L - 4, y: H - B, "text-anchor": "end", "font-size": 10 }, "0"));
  svg.append(mk("text", { x: W - R, y: H - 4, "text-anchor": "end", "font-size": 10 }, `${n} samples`));
  series.forEach((s, k) => {
    if (!s.length) return;
    const pts = s.map((v, i) => `${L + ((W - R - L) * i) / Math.max(1, n - 1)},${H - B - ((H - B - T) * v) / max}`).join(" ");
    svg.append(mk("polyline", { points: pts, fill: "none", stroke: COLOURS[k % COLOURS.length], "stroke-width": 1.5 }));
    svg.append(mk("text", { x: W - R + 6, y: T + 12 + k * 13, fill: COLOURS[k % COLOURS.length], "font-size": 11 }, `${labels[k]}: ${s[s.length - 1]}`));
  });
}

function drawBuddy() {
  if (!samples.length) return;
  const orders = samples[samples.length - 1].buddy.reduce((m, z) => Math.max(m, z[1].length), 0);
  const series = [];
  for (let o = 0; o < orders; o++) series.push(samples.map((s) => s.buddy.reduce((sum, z) => sum + (z[1][o] || 0), 0)));
  lineChart($("buddy-chart"), series, series.map((_, o) => `order ${o}`));
  const last = samples[samples.length - 1];
  $("buddy-now").textContent = last.buddy.map((z) => `${z[0]}: ${z[1].join(" ")}`).join("   |   ");
}

function drawVmstat(changed) {
  const names = [...plotted].filter((n) => vmNames.includes(n));
  const series = names.map((n) => samples.map((s) => s.vm[vmNames.indexOf(n)] || 0));
  lineChart($("vm-chart"), series, names);
  const box = $("vm-table");
  box.replaceChildren();
  vmNames.forEach((n, i) => {
    const d = el("div", { class: (plotted.has(n) ? "on " : "") + (changed && changed.has(n) ? "chg" : ""), title: "click to plot", onclick: () => { plotted.has(n) ? plotted.delete(n) : plotted.add(n); drawVmstat(); } }, `${n} ${vmValues[i] || 0}`);
    box.append(d);
  });
}

// ---------- log ----------
function logLine(text, li) {
  li = li || el("li", {}, text);
  $("log").prepend(li);
  while ($("log").children.length > 500) $("log").lastChild.remove();
}

// One fault of the guest's fault log (GET /api/faults): clicking it shows
// its address in the faulting process's page tables.
function logFault(f) {
  const access = f.fetch ? "fetch" : f.write ? "write" : "read";
  const li = el("li", { class: `fault k-${f.kind}` + (f.result === "ok" ? "" : " bad"), title: "click: walk this address in the process's tables", data: { n: f.n, addr: f.addr, pid: f.pid, kind: f.kind, result: f.result } },
    el("span", { class: "fk" }, f.kind), ` ${access} ${f.addr} pid ${f.pid}: ${f.result}`);
  li.addEventListener("click", async () => {
    const opt = document.querySelector(`#root option[value='${f.pid}']`);
    if (opt && $("root").value !== String(f.pid)) {
      $("root").value = rootSel = String(f.pid);
      expanded.clear();
      loadVmas();
      await loadTree();
    }
    $("va").value = f.addr;
    $("reveal").click();
  });
  stats.faults.push(f);
  if (stats.faults.length > 4096) stats.faults.shift();
  logLine(null, li);
}

// ---------- slab ----------
async function loadSlab() {
  if (!$("p-slab").open) return;
  try {
    const s = await api("/api/view/slabinfo");
    const tbl = $("slab");
    tbl.replaceChildren(el("tr", {}, ...["cache", "active objs", "objs", "objsize", "objs/slab", "pages/slab", "slabs", "pages"].map((h) => el("th", {}, h))));
    for (const c of s.caches) tbl.append(el("tr", {}, ...[c.name, c.active_objs, c.num_objs, c.objsize, c.objperslab, c.pagesperslab, c.num_slabs, c.pages].map((v) => el("td", {}, String(v)))));
  } catch (e) {
    $("slab").textContent = String(e.message || e);
  }
}
$("p-slab").addEventListener("toggle", loadSlab);
$("p-pm").addEventListener("toggle", loadPhysmap);

// ---------- updates ----------
let refreshing = false;
let refreshAgain = false;

// The big views, fetched again at a checkpoint or pause (not at every
// running sample: each costs the guest a short stop).
async function refreshViews() {
  if (refreshing) { refreshAgain = true; return; }
  refreshing = true;
  do {
    refreshAgain = false;
    await loadProcs();
    await Promise.all([loadTree(), loadVmas(), loadPhysmap(), loadSlab(), loadConsole()]);
  } while (refreshAgain);
  refreshing = false;
  stats.refreshed = stats.seq;
}

function onUpdate(m) {
  stats.seq = m.seq;
  $("seq").textContent = `update ${m.seq}`;
  if (m.ms && m.ev === "checkpoint") stats.latencies.push(Date.now() - m.ms);
  const changed = new Set();
  if (m.vm) {
    for (const [n, v] of Object.entries(m.vm)) {
      const i = vmNames.indexOf(n);
      if (i >= 0) {
        if (vmValues[i] !== undefined && vmValues[i] !== v) changed.add(n);
        vmValues[i] = v;
      }
    }
  }
  if (m.buddy) {
    samples.push({ seq: m.seq, name: m.name, buddy: m.buddy, vm: vmValues.slice() });
    if (samples.length > 600) samples.shift();
    drawBuddy();
    drawVmstat(changed);
  }
  for (const f of m.faults || []) logFault(f);
  if (m.ev !== "sample") {
    const faults = ["pgfault", "cow_copies", "cow_reuses", "pgmajfault", "pswpin", "pswpout", "pgsteal", "compact_success"].filter((n) => changed.has(n) || (m.vm && n in m.vm && samples.length === 1));
    logLine(`#${m.seq} ${m.ev} '${m.name}'` + (faults.length ? " — " + faults.map((n) => `${n} ${vmValues[vmNames.indexOf(n)]}`).join(", ") : ""));
    refreshViews();
  } else if (changed.size) {
    const f = ["pgfault", "cow_copies", "pswpout", "pgsteal"].filter((n) => changed.has(n));
    if (f.length) logLine(`#${m.seq} running: ` + f.map((n) => `${n} ${vmValues[vmNames.indexOf(n)]}`).join(", "));
  }
}

async function loadHistory() {
  try {
    const h = await api("/api/history");
    vmNames = h.vmstat_names;
    for (const s of h.samples) samples.push({ seq: s.seq, name: s.name, buddy: s.buddy, vm: s.vmstat });
    if (samples.length) vmValues = samples[samples.length - 1].vm.slice();
    drawBuddy();
    drawVmstat();
    const log = await api("/api/log");
    for (const e of log.events.slice(-200)) {
      if (e.fault) logFault(e.fault);
      else logLine(`${(e.ms / 1000).toFixed(3)} s ${e.kind} '${e.name}'`);
    }
  } catch (e) {
    showError(e);
  }
}

function connect() {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onmessage = (ev) => {
    stats.bytes += ev.data.length;
    const m = JSON.parse(ev.data);
    if (m.t === "hello") {
      vmNames = m.vmstat_names;
      setState(m.state);
      stats.connected = true;
      refreshViews();
    } else if (m.t === "u") {
      stats.updates++;
      stats.sizes.push(ev.data.length);
      onUpdate(m);
    } else if (m.t === "s") {
      setState(m);
      if (m.state === "paused" || m.state === "ended") logLine(`${m.state}${m.at ? " at '" + m.at + "'" : ""}`);
    }
  };
  ws.onclose = () => {
    stats.connected = false;
    if (stats.state !== "ended") setTimeout(connect, 1000);
  };
}

loadHistory().then(connect);
