// Screenshots of the shipped workflows in the real ComfyUI frontend, and the template browser's thumbnails;
// also the browser check of tests/test_browser_frontends.py (CHECK_ONLY=1: no pictures written).
//
//   NODE_PATH=<folder holding node_modules/playwright-core> node workflows/tools/screenshots.js [URL]
//
// Needs a running ComfyUI (default http://127.0.0.1:8188) with this pack, weights it can run (the tiny
// test weights do: tests/test_nodes_support.py TINY_LAYOUT, DWPose stand-ins in tests/fixtures/dwpose-tiny)
// and in its input/ folder musepose_reference.png, musepose_poses.mp4 and musepose_dance.mp4. Chromium:
// $CHROMIUM, default /usr/bin/chromium.
//
// For each example workflow, as a user would: open the template browser, pick the pack's card (no warning
// may come with the load: console warnings and errors, toasts, a missing-nodes dialog), click Run (at the
// test size below, so it takes seconds on a CPU), wait for the previews; then check that the Sampler, Decode
// and pose nodes show their messages in the pack's text box (web/musepose_messages.js) after the run and
// that saving the workflow leaves the box out (same widgets_values as before the run); put the shipped
// widget values back, check in the live graph that no two nodes overlap, print the node sizes the frontend
// ended with, and write docs/screenshots/<title as a slug>.webp and the card's thumbnail
// example_workflows/<title>.jpg (not with CHECK_ONLY=1). Also writes the template browser with the cards to
// $SHOTS_OUT/templates.png when SHOTS_OUT is set. Prints one line "RESULT <json>" at the end; exit 1 when a
// check failed, 2 when the script itself failed.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const URL = process.argv[2] || 'http://127.0.0.1:8188';
const REPO = path.resolve(__dirname, '..', '..');
const PACK = process.env.PACK_FOLDER || 'comfyui-musepose-express'; // the pack's folder name in custom_nodes/
//: what the run uses instead of the shipped values (node type -> widget -> value); put back before the shot
const TEST_VALUES = {
  MusePoseSampler: { width: 96, height: 96, steps: 3, context_frames: 8, context_overlap: 4 },
  MusePosePoseAlign: { width: 96, height: 96 },
};
const CHECK_ONLY = process.env.CHECK_ONLY === '1';
//: the check (no pictures) has Pose Align draw at a size that is not a multiple of 8, so that it warns and the
//: Sampler (given that size through its links in the dance workflow) shows three warnings besides its memory
//: line and summary: the most lines the message boxes get
const RUN_VALUES = CHECK_ONLY ? { ...TEST_VALUES, MusePosePoseAlign: { width: 100, height: 132 } } : TEST_VALUES;
//: what each pack node's message box must say after the run (besides showing every line the node sent)
const MESSAGE_MUST = {
  MusePoseSampler: 'memory:', ...(CHECK_ONLY ? { MusePosePoseAlign: 'not a multiple of 8' } : {}),
};
const MESSAGE_WIDGET = 'musepose_messages'; // web/musepose_messages.js
const VIEW = { width: 1600, height: 1000 };
const THUMB = 384;

const slug = (title) => title.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');

async function openTemplate(page, name) {
  const dialog = page.locator('[data-testid^="template-workflow-"]').first();
  if (!(await dialog.isVisible().catch(() => false))) {
    await page.evaluate(() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates'));
  }
  await page.getByText(PACK, { exact: true }).first().click();
  const card = page.locator(`[data-testid="template-workflow-${name}"]`);
  await card.waitFor();
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid^="template-workflow-"] img')]
    .every((img) => img.complete), null, { timeout: 30000 });
  await page.waitForTimeout(1000);
  if (process.env.SHOTS_OUT) await page.screenshot({ path: path.join(process.env.SHOTS_OUT, 'templates.png') });
  const cards = await page.$$eval('[data-testid^="template-workflow-"]', (els) => els.map((e) => ({
    card: e.dataset.testid, text: e.innerText.split('\n')[0],
    thumbnail: [...e.querySelectorAll('img')].map((img) => `${decodeURIComponent(img.src.split('/').pop())} ${img.naturalWidth}x${img.naturalHeight}`),
  })));
  console.log('cards:', JSON.stringify(cards));
  await card.click();
  await page.waitForFunction((n) => window.app.graph._nodes.length > 0 && document.title.includes(n), name, { timeout: 30000 })
    .catch(() => page.waitForTimeout(3000));
  await page.waitForTimeout(2000);
}

function setWidgets(page, values) {
  return page.evaluate((values) => {
    const old = {};
    for (const node of window.app.graph._nodes) {
      const wanted = values[node.type] || {};
      for (const widget of node.widgets || []) {
        // linked: asked through the graph's links (1.58 warns when a script reads input.link)
        const slot = (node.inputs || []).findIndex((i) => i.widget && i.widget.name === widget.name);
        const links = window.app.graph.links || {};
        const linked = slot >= 0 && (links instanceof Map ? [...links.values()] : Object.values(links))
          .some((l) => l && l.target_id === node.id && l.target_slot === slot);
        if (widget.name in wanted && !linked) {
          old[node.id] = old[node.id] || {};
          old[node.id][widget.name] = widget.value;
          widget.value = wanted[widget.name];
        }
      }
    }
    window.app.graph.setDirtyCanvas(true, true);
    return old;
  }, values);
}

function restoreWidgets(page, old) {
  return page.evaluate((old) => {
    for (const node of window.app.graph._nodes) {
      for (const [name, value] of Object.entries(old[node.id] || {})) node.widgets.find((w) => w.name === name).value = value;
    }
    window.app.graph.setDirtyCanvas(true, true);
  }, old);
}

async function run(page) {
  // the run's end, and what each node sent as musepose_messages (the 'executed' events' UI outputs)
  const finished = page.evaluate(() => new Promise((resolve) => {
    const api = window.comfyAPI.api.api;
    const sent = {};
    api.addEventListener('executed', (e) => {
      const lines = e.detail && e.detail.output && e.detail.output.musepose_messages;
      if (lines) sent[String(e.detail.display_node || e.detail.node)] = lines.join('\n');
    });
    for (const event of ['execution_success', 'execution_error', 'execution_interrupted']) {
      api.addEventListener(event, (e) => resolve([event, JSON.stringify(e.detail).slice(0, 2000), sent]));
    }
  }));
  await page.getByRole('button', { name: 'Run', exact: true }).first().click();
  const [event, detail, sent] = await finished;
  if (event !== 'execution_success') throw new Error(`${event}: ${detail}`);
  // previews: PreviewImage/LoadImage images decoded, every <video> with a frame
  await page.waitForFunction(() => window.app.graph._nodes.every((n) => n.type !== 'PreviewImage' || (n.imgs || []).length > 0)
    && [...document.querySelectorAll('video')].every((v) => v.readyState >= 2), null, { timeout: 60000 });
  await page.waitForTimeout(2000);
  return sent;
}

function saved(page) {
  // what saving the workflow writes for each node: its positional widgets_values
  return page.evaluate(() => Object.fromEntries(window.app.graph.serialize().nodes
    .map((n) => [n.id, { type: n.type, widgets_values: n.widgets_values || [] }])));
}

async function messageBoxes(page) {
  // each pack node's message box after the run: its text, whether it shows on screen, and whether all of
  // the text fits or the box scrolls (either is fine; cut-off text without a scroll bar is not)
  return page.evaluate((name) => window.app.graph._nodes.filter((n) => String(n.type).startsWith('MusePose')).map((n) => {
    const widget = (n.widgets || []).find((w) => w.name === name);
    const box = widget && widget.element;
    const rect = box ? box.getBoundingClientRect() : null;
    const style = box ? getComputedStyle(box) : null;
    return {
      id: String(n.id), type: n.type, widget: !!widget, value: widget ? String(widget.value) : null,
      text: box ? box.value : null, readOnly: box ? box.readOnly : null,
      serialize: widget ? widget.serialize : null,
      shown: !!rect && rect.width > 20 && rect.height > 20 && style.display !== 'none' && style.visibility !== 'hidden',
      fits: box ? box.scrollHeight <= box.clientHeight + 1 : null,
      scrolls: style ? ['auto', 'scroll'].includes(style.overflowY) : null,
      size: rect ? [Math.round(rect.width), Math.round(rect.height)] : null,
    };
  }), MESSAGE_WIDGET);
}

function checkMessages(name, boxes, sent) {
  // every node that sent messages shows all of them, readable, after the run ends
  const problems = [];
  for (const [id, text] of Object.entries(sent)) {
    const box = boxes.find((b) => b.id === id);
    if (!box || !box.widget) { problems.push(`${name}: node ${id} sent messages, no message box`); continue; }
    if (box.text !== text || box.value !== text) problems.push(`${name}: node ${id} box shows ${JSON.stringify(box.text)}, sent ${JSON.stringify(text)}`);
    if (!box.shown) problems.push(`${name}: node ${id} box not on screen`);
    if (!box.fits && !box.scrolls) problems.push(`${name}: node ${id} text clipped`);
    if (box.serialize !== false || box.readOnly !== true) problems.push(`${name}: node ${id} box saved or editable`);
  }
  for (const box of boxes) {
    const must = MESSAGE_MUST[box.type];
    if (must && !(box.text || '').includes(must)) problems.push(`${name}: ${box.type} ${box.id} box lacks "${must}": ${JSON.stringify(box.text)}`);
  }
  for (const types of [['MusePoseSampler'], ['MusePoseDecode', 'MusePoseDecodeToVideo']]) {
    if (!boxes.some((b) => types.includes(b.type) && b.text)) problems.push(`${name}: no ${types.join(' or ')} with messages`);
  }
  return problems;
}

async function loadWarnings(page, since) {
  // what the frontend said while loading: console warnings/errors (collected since ``since``), toasts,
  // a missing-nodes / missing-models dialog
  const shown = await page.evaluate(() => ({
    toasts: [...document.querySelectorAll('.p-toast-message')].map((e) => e.innerText.replace(/\s+/g, ' ').trim()),
    dialogs: [...document.querySelectorAll('.p-dialog, [role="dialog"]')].map((e) => e.innerText.replace(/\s+/g, ' ').trim())
      .filter((t) => /missing|not found|unknown|invalid|error|warn/i.test(t)),
  }));
  const usual = new Set(startup_lines.map(kind));
  const added = console_lines.slice(since).filter((l) => !usual.has(kind(l)) && !FRONTEND_NOTICES.some((n) => n.test(l)));
  const toasts = shown.toasts.filter((t) => !startup_toasts.includes(kind(t)));
  return [...added.map((l) => `console ${l}`), ...toasts.map((t) => `toast ${t}`),
    ...shown.dialogs.map((t) => `dialog ${t.slice(0, 300)}`)];
}

function liveNodes(page) {
  return page.evaluate(() => window.app.graph._nodes.map((n) => ({
    id: n.id, type: n.type, title: n.title, pos: [...n.pos], size: [...n.size].map(Math.round),
    least: [...n.computeSize()].map(Math.round), rect: Array.from(n.boundingRect).map(Math.round),
  })));
}

function overlaps(nodes) {
  const found = [];
  for (let i = 0; i < nodes.length; i++) {
    for (let j = i + 1; j < nodes.length; j++) {
      const [ax, ay, aw, ah] = nodes[i].rect;
      const [bx, by, bw, bh] = nodes[j].rect;
      if (ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah) found.push([nodes[i].id, nodes[j].id]);
    }
  }
  return found;
}

async function encode(page, png, { width, height, type, quality }) {
  // PNG screenshot -> scaled and re-encoded by the browser itself (JPEG thumbnails, WebP screenshots)
  const data = await page.evaluate(async ({ data, width, height, type, quality }) => {
    const bitmap = await createImageBitmap(await (await fetch(`data:image/png;base64,${data}`)).blob());
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext('2d');
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(bitmap, 0, 0, width, height);
    const bytes = new Uint8Array(await (await canvas.convertToBlob({ type, quality })).arrayBuffer());
    let text = '';
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(text);
  }, { data: png.toString('base64'), width, height, type, quality });
  return Buffer.from(data, 'base64');
}

async function quiet(page) {
  // the pointer off the graph (no hover highlight or tooltip); the queue's "job completed" note gone
  await page.mouse.move(VIEW.width / 2, 12);
  await page.getByText(/jobs? completed/).first().waitFor({ state: 'hidden', timeout: 30000 }).catch(() => {});
  await page.waitForTimeout(800);
}

async function thumbnail(page, file) {
  // the whole graph, full detail, in a square free of the frontend's bars; scaled down in the page to JPEG
  const side = 1400;
  const clip = { x: 75, y: 110, width: side, height: side };
  await page.setViewportSize({ width: clip.x + side + 30, height: clip.y + side + 100 });
  await page.evaluate(async (clip) => {
    const canvas = window.app.canvas;
    const nodes = window.app.graph._nodes.map((n) => n.boundingRect);
    const left = Math.min(...nodes.map((r) => r[0])), top = Math.min(...nodes.map((r) => r[1]));
    const right = Math.max(...nodes.map((r) => r[0] + r[2])), bottom = Math.max(...nodes.map((r) => r[1] + r[3]));
    const scale = 0.96 * Math.min(clip.width / (right - left), clip.height / (bottom - top));
    canvas.ds.scale = scale;
    canvas.ds.offset[0] = (clip.x + (clip.width - scale * (right - left)) / 2) / scale - left;
    canvas.ds.offset[1] = (clip.y + (clip.height - scale * (bottom - top)) / 2) / scale - top;
    canvas.setDirty(true, true);
  }, clip);
  await page.waitForTimeout(1500);
  const png = await page.screenshot({ clip });
  fs.writeFileSync(file, await encode(page, png, { width: THUMB, height: THUMB, type: 'image/jpeg', quality: 0.82 }));
  await page.setViewportSize(VIEW);
  await page.waitForTimeout(500);
}

async function settings(page, values) {
  await page.evaluate(async (values) => {
    for (const [key, value] of Object.entries(values)) await window.app.extensionManager.setting.set(key, value);
  }, values);
}

let page;
const startup_lines = [];
const startup_toasts = []; // kinds of the toasts shown on start (1.35.9 on a 0.19.3 server: "Frontend version ... is outdated") // what the frontend said on start, with its default graph
const console_lines = []; // console warnings and errors, failed requests to the server, in order
const offline = []; // failed requests to other hosts (none reachable here)
//: a line as a kind of message: what the frontend says on every start (its own deprecation notices, ...) is
//: told apart from what a workflow's load adds by this
//: notices the frontend prints about its own code, once per page, whenever that code first runs (1.58's
//: canvas reads input.link while drawing): not about the workflow, wherever they land
const FRONTEND_NOTICES = [/^warning input\.link is deprecated\./];
const kind = (line) => line.replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, '<id>').replace(/\d+/g, '<n>');
(async () => {
  const profile = fs.mkdtempSync('/tmp/musepose-shots-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, viewport: VIEW,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => { console.log('page error:', e.message); console_lines.push(`page error ${e.message}`); });
  page.on('console', (m) => {
    // "Failed to load resource" says no more than the response/requestfailed lines below, which name the URL
    if ((m.type() === 'warning' || m.type() === 'error') && !m.text().startsWith('Failed to load resource')) {
      console_lines.push(`${m.type()} ${m.text().slice(0, 400)}`);
    }
  });
  // failed requests to this server; others (the frontend's calls to the internet) fail offline: only logged
  const here = (u) => new globalThis.URL(u).origin === new globalThis.URL(URL).origin;
  page.on('response', (r) => { if (r.status() >= 400 && here(r.url())) console_lines.push(`http ${r.status()} ${r.url()}`); });
  page.on('requestfailed', (r) => {
    if (r.failure() && r.failure().errorText === 'net::ERR_ABORTED') return; // the page dropped it (media, beacons)
    const line = `request failed ${r.failure() && r.failure().errorText} ${r.url()}`;
    if (here(r.url())) console_lines.push(line); else offline.push(line);
  });
  await page.goto(URL);
  await page.waitForFunction(() => window.app && window.app.graph && window.app.extensionManager, null, { timeout: 120000 });
  await page.waitForTimeout(3000);
  // shots of the graph alone: no minimap or render statistics over it; full detail when zoomed out
  await settings(page, {
    'Comfy.Minimap.Visible': false, 'Comfy.Graph.CanvasInfo': false,
    'LiteGraph.Canvas.LowQualityRenderingZoomThreshold': 0.1, 'LiteGraph.Canvas.MinFontSizeForLOD': 1,
  });
  const names = fs.readdirSync(path.join(REPO, 'example_workflows')).filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -5)).sort();
  fs.mkdirSync(path.join(REPO, 'docs', 'screenshots'), { recursive: true });
  const frontend = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ || null);
  const startup = console_lines.slice();
  startup_lines.push(...startup);
  const toasts = await page.evaluate(() => [...document.querySelectorAll('.p-toast-message')].map((e) => e.innerText.replace(/\s+/g, ' ').trim()));
  startup_toasts.push(...toasts.map(kind));
  console.log(`toasts on start: ${JSON.stringify(toasts)}`);
  console.log(`frontend ${frontend}; console warnings/errors before any workflow: ${JSON.stringify(startup)}`);
  const result = { frontend, url: URL, startup, startup_toasts: toasts, offline, workflows: {} };
  let failed = false;
  for (const name of (process.env.ONLY ? names.filter((n) => n === process.env.ONLY) : names)) {
    const since = console_lines.length;
    await openTemplate(page, name);
    const warnings = await loadWarnings(page, since);
    const before = await saved(page);
    const shipped = await setWidgets(page, RUN_VALUES);
    const sent = await run(page);
    const boxes = await messageBoxes(page);
    const problems = checkMessages(name, boxes, sent);
    await restoreWidgets(page, shipped);
    const after = await saved(page);
    for (const [id, node] of Object.entries(before)) {
      if (JSON.stringify(after[id]) !== JSON.stringify(node)) {
        problems.push(`${name}: node ${id} saves ${JSON.stringify(after[id])} after the run, ${JSON.stringify(node)} before`);
      }
    }
    if (warnings.length) problems.push(...warnings.map((w) => `${name}: on load: ${w}`));
    for (const b of boxes) console.log(`  ${b.id} ${b.type} box ${b.size} ${b.fits ? 'fits' : 'scrolls'}: ${JSON.stringify(b.text)}`);
    for (const p of problems) console.log(`PROBLEM ${p}`);
    if (problems.length) failed = true;
    result.workflows[name] = { warnings, sent, boxes, problems };
    await page.evaluate(() => window.app.canvas.setDirty(true, true));
    await page.waitForTimeout(1000);
    const nodes = await liveNodes(page);
    console.log(`${name}: nodes after the run:`);
    for (const n of nodes) console.log(`  ${n.id} ${n.type} "${n.title}" pos ${n.pos} size ${n.size} least ${n.least}`);
    const found = overlaps(nodes);
    if (found.length) { failed = true; console.log(`${name}: OVERLAPS ${JSON.stringify(found)}`); }
    if (CHECK_ONLY) continue;
    const shot = path.join(REPO, 'docs', 'screenshots', `${slug(name)}.webp`);
    await quiet(page);
    fs.writeFileSync(shot, await encode(page, await page.screenshot(), { ...VIEW, type: 'image/webp', quality: 0.9 }));
    await thumbnail(page, path.join(REPO, 'example_workflows', `${name}.jpg`));
    console.log(`wrote ${path.relative(REPO, shot)} and example_workflows/${name}.jpg`);
  }
  await context.close();
  console.log(`RESULT ${JSON.stringify(result)}`);
  process.exit(failed ? 1 : 0);
})().catch(async (e) => {
  console.error(e);
  if (process.env.SHOTS_OUT && page) await page.screenshot({ path: path.join(process.env.SHOTS_OUT, 'failed.png') }).catch(() => {});
  process.exit(2);
});
