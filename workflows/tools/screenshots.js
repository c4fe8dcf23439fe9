// Screenshots of the shipped workflows in the real ComfyUI frontend, and the template browser's thumbnails.
//
//   NODE_PATH=<folder holding node_modules/playwright-core> node workflows/tools/screenshots.js [URL]
//
// Needs a running ComfyUI (default http://127.0.0.1:8188) with this pack, weights it can run (the tiny
// test weights do: tests/test_nodes_support.py TINY_LAYOUT, DWPose stand-ins in tests/fixtures/dwpose-tiny)
// and in its input/ folder musepose_reference.png, musepose_poses.mp4 and musepose_dance.mp4. Chromium:
// $CHROMIUM, default /usr/bin/chromium.
//
// For each example workflow, as a user would: open the template browser, pick the pack's card, click Run
// (at the test size below, so it takes seconds on a CPU), wait for the previews; then put the shipped
// widget values back, check in the live graph that no two nodes overlap (exit 1 if some do), print the
// node sizes the frontend ended with, and write docs/screenshots/<title as a slug>.webp and the card's
// thumbnail example_workflows/<title>.jpg. Also writes the template browser with the cards to
// $SHOTS_OUT/templates.png when SHOTS_OUT is set.
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
        const input = (node.inputs || []).find((i) => i.widget && i.widget.name === widget.name);
        if (widget.name in wanted && !(input && input.link != null)) {
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
  const finished = page.evaluate(() => new Promise((resolve) => {
    const api = window.comfyAPI.api.api;
    for (const event of ['execution_success', 'execution_error', 'execution_interrupted']) {
      api.addEventListener(event, (e) => resolve([event, JSON.stringify(e.detail).slice(0, 2000)]));
    }
  }));
  await page.getByRole('button', { name: 'Run', exact: true }).first().click();
  const [event, detail] = await finished;
  if (event !== 'execution_success') throw new Error(`${event}: ${detail}`);
  // previews: PreviewImage/LoadImage images decoded, every <video> with a frame
  await page.waitForFunction(() => window.app.graph._nodes.every((n) => n.type !== 'PreviewImage' || (n.imgs || []).length > 0)
    && [...document.querySelectorAll('video')].every((v) => v.readyState >= 2), null, { timeout: 60000 });
  await page.waitForTimeout(2000);
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
(async () => {
  const profile = fs.mkdtempSync('/tmp/musepose-shots-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, viewport: VIEW,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => console.log('page error:', e.message));
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
  let failed = false;
  for (const name of (process.env.ONLY ? names.filter((n) => n === process.env.ONLY) : names)) {
    await openTemplate(page, name);
    const shipped = await setWidgets(page, TEST_VALUES);
    await run(page);
    await restoreWidgets(page, shipped);
    await page.evaluate(() => window.app.canvas.setDirty(true, true));
    await page.waitForTimeout(1000);
    const nodes = await liveNodes(page);
    console.log(`${name}: nodes after the run:`);
    for (const n of nodes) console.log(`  ${n.id} ${n.type} "${n.title}" pos ${n.pos} size ${n.size} least ${n.least}`);
    const found = overlaps(nodes);
    if (found.length) { failed = true; console.log(`${name}: OVERLAPS ${JSON.stringify(found)}`); }
    const shot = path.join(REPO, 'docs', 'screenshots', `${slug(name)}.webp`);
    await quiet(page);
    fs.writeFileSync(shot, await encode(page, await page.screenshot(), { ...VIEW, type: 'image/webp', quality: 0.9 }));
    await thumbnail(page, path.join(REPO, 'example_workflows', `${name}.jpg`));
    console.log(`wrote ${path.relative(REPO, shot)} and example_workflows/${name}.jpg`);
  }
  await context.close();
  process.exit(failed ? 1 : 0);
})().catch(async (e) => {
  console.error(e);
  if (process.env.SHOTS_OUT && page) await page.screenshot({ path: path.join(process.env.SHOTS_OUT, 'failed.png') }).catch(() => {});
  process.exit(2);
});
